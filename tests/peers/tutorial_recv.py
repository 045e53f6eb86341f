"""The tutorial's UDP receiver, as people copy it: bind, then recvfrom(1024) and print.

Usage: tutorial_recv.py PORT ENCODING COUNT

Binds ("", PORT) (0: a port the OS picks), prints a readiness line with the bound address,
then prints `addr text` for each of COUNT datagrams, decoded with data.decode(ENCODING).
A datagram that does not decode raises, exactly as in the tutorial.
"""

import socket
import sys


def main():
    port = int(sys.argv[1])
    encoding = sys.argv[2]
    count = int(sys.argv[3])

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    print("listening on", s.getsockname(), flush=True)

    for _ in range(count):
        data, addr = s.recvfrom(1024)
        print(addr, data.decode(encoding), flush=True)

    s.close()


if __name__ == "__main__":
    main()
