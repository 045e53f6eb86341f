"""The tutorial's UDP loop, timed: sendto(text.encode()), recvfrom(1024), data.decode().

Run by the loopback benchmark (tests/benches/loopback.rs) with /usr/bin/python3:

  tutorial_loop.py recv                    bind 127.0.0.1:0, print "ready PORT", count
                                           datagrams until 0.5 s of silence after the
                                           first, print "received COUNT SECONDS" (first to
                                           last datagram)
  tutorial_loop.py send PORT SIZE SECONDS  send SIZE-byte texts to 127.0.0.1:PORT for
                                           SECONDS, print "sent COUNT"
  tutorial_loop.py echo                    bind 127.0.0.1:0, print "ready PORT", send every
                                           datagram back decoded and encoded again, until
                                           an empty one arrives
  tutorial_loop.py ping PORT SIZE SECONDS FILE
                                           send one text, wait for its echo, repeat for
                                           SECONDS; write each round trip in microseconds
                                           to FILE, one a line; print "pinged COUNT"

Each loop does what the tutorial's programs do per message and nothing more.
"""

import socket
import sys
import time


def bound():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    print("ready", s.getsockname()[1], flush=True)
    return s


def recv():
    s = bound()
    s.settimeout(10.0)
    count = 0
    first = last = None
    while True:
        try:
            data, addr = s.recvfrom(1024)
        except socket.timeout:
            break
        text = data.decode("utf-8")
        last = time.perf_counter()
        if first is None:
            first = last
            s.settimeout(0.5)
        count += 1
    elapsed = (last - first) if count > 1 else 0.0
    print("received", count, elapsed, flush=True)


def send(port, size, seconds):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dest_addr = ("127.0.0.1", port)
    send_data = "x" * size
    end = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < end:
        s.sendto(send_data.encode("utf-8"), dest_addr)
        count += 1
    print("sent", count, flush=True)


def echo():
    s = bound()
    while True:
        data, addr = s.recvfrom(1024)
        if not data:
            break
        text = data.decode("utf-8")
        s.sendto(text.encode("utf-8"), addr)


def ping(port, size, seconds, path):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1.0)
    dest_addr = ("127.0.0.1", port)
    send_data = "x" * size
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        s.sendto(send_data.encode("utf-8"), dest_addr)
        data, addr = s.recvfrom(1024)
        text = data.decode("utf-8")
        samples.append((time.perf_counter() - t0) * 1e6)
    s.sendto(b"", dest_addr)
    with open(path, "w") as f:
        f.write("\n".join(f"{x:.2f}" for x in samples))
    print("pinged", len(samples), flush=True)


def main():
    mode = sys.argv[1]
    if mode == "recv":
        recv()
    elif mode == "send":
        send(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif mode == "echo":
        echo()
    elif mode == "ping":
        ping(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
