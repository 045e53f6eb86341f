"""One UDP socket driven line by line, for duet's NAT tests: send, receive, ask STUN and
NAT-PMP from the very socket whose mapping the test is about.

Usage: udp_probe.py IP:PORT [--reflect]

Prints `bound IP:PORT`, then reads commands from standard input until it ends:
  send IP:PORT TEXT        send TEXT
  stun IP:PORT             a STUN Binding request; the answer prints
                           `stun IP:PORT mapped IP:PORT`
  natpmp GATEWAY PRIVATE PUBLIC LIFETIME
                           a NAT-PMP UDP mapping request (RFC 6886) to GATEWAY:5351; the
                           answer prints `natpmp mapped PRIVATE -> PUBLIC for LIFETIME s`
                           or `natpmp error CODE`
  natpmp-address GATEWAY   prints `natpmp public address IP`
Every other datagram prints `from IP:PORT TEXT`. With --reflect it is also answered with
`seen IP:PORT`, the address it came from (a bare-bones STUN for tests).
"""

import os
import select
import socket
import struct
import sys

STUN_COOKIE = 0x2112A442
NATPMP_PORT = 5351


def endpoint(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def show(addr):
    return "%s:%d" % addr


def stun_request():
    txid = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, STUN_COOKIE) + txid


def stun_mapped(data):
    """The XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS) of a Binding success response, or None."""
    if len(data) < 20:
        return None
    kind, length, cookie = struct.unpack("!HHI", data[:8])
    if kind != 0x0101 or cookie != STUN_COOKIE:
        return None
    pos, end, plain = 20, min(len(data), 20 + length), None
    while pos + 4 <= end:
        attr, alen = struct.unpack("!HH", data[pos : pos + 4])
        value = data[pos + 4 : pos + 4 + alen]
        if alen == 8 and value[1] == 1:
            port, ip = struct.unpack("!H4s", value[2:8])
            if attr == 0x0020:
                port ^= STUN_COOKIE >> 16
                ip = bytes(a ^ b for a, b in zip(ip, struct.pack("!I", STUN_COOKIE)))
                return socket.inet_ntoa(ip), port
            if attr == 0x0001:
                plain = socket.inet_ntoa(ip), port
        pos += 4 + (alen + 3) // 4 * 4
    return plain


def natpmp_answer(data):
    if len(data) >= 16 and data[0] == 0 and data[1] == 128 + 1:
        _, _, code, _, private, public, life = struct.unpack("!BBHIHHI", data[:16])
        if code:
            return "natpmp error %d" % code
        return "natpmp mapped %d -> %d for %d s" % (private, public, life)
    if len(data) >= 12 and data[0] == 0 and data[1] == 128:
        code = struct.unpack("!H", data[2:4])[0]
        if code:
            return "natpmp error %d" % code
        return "natpmp public address %s" % socket.inet_ntoa(data[8:12])
    return None


def command(sock, line):
    words = line.split(" ", 2)
    if words[0] == "send" and len(words) >= 2:
        text = words[2] if len(words) == 3 else ""
        sock.sendto(text.encode(), endpoint(words[1]))
    elif words[0] == "stun" and len(words) == 2:
        sock.sendto(stun_request(), endpoint(words[1]))
    elif words[0] == "natpmp":
        parts = line.split()
        gateway, private, public, life = parts[1], *map(int, parts[2:5])
        # Opcode 1: map UDP.
        request = struct.pack("!BBHHHI", 0, 1, 0, private, public, life)
        sock.sendto(request, (gateway, NATPMP_PORT))
    elif words[0] == "natpmp-address" and len(words) == 2:
        sock.sendto(struct.pack("!BB", 0, 0), (words[1], NATPMP_PORT))
    else:
        print("unknown command: %s" % line, flush=True)


def main():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(endpoint(sys.argv[1]))
    reflect = "--reflect" in sys.argv[2:]
    print("bound %s" % show(sock.getsockname()), flush=True)
    stdin = sys.stdin.fileno()
    pending = b""
    while True:
        readable, _, _ = select.select([stdin, sock], [], [])
        if sock in readable:
            data, addr = sock.recvfrom(2048)
            mapped = stun_mapped(data)
            answer = natpmp_answer(data) if addr[1] == NATPMP_PORT else None
            if mapped:
                print("stun %s mapped %s" % (show(addr), show(mapped)), flush=True)
            elif answer:
                print(answer, flush=True)
            else:
                print("from %s %s" % (show(addr), data.decode("utf-8", "replace")), flush=True)
                if reflect:
                    sock.sendto(("seen " + show(addr)).encode(), addr)
        if stdin in readable:
            # Raw reads: a buffered readline would hide lines from select.
            chunk = os.read(stdin, 4096)
            if not chunk:
                return
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    command(sock, line.decode("utf-8", "replace").strip())


if __name__ == "__main__":
    main()
