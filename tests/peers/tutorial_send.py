"""The tutorial's UDP sender, as people copy it: bind, then sendto(text.encode(...)).

Usage: tutorial_send.py PORT PEER_IP PEER_PORT ENCODING

Binds ("", PORT) (0: a port the OS picks), prints a readiness line with the bound address,
then sends each line typed on standard input as one datagram, text.encode(ENCODING), to
(PEER_IP, PEER_PORT), until end of input.
"""

import socket
import sys


def main():
    port = int(sys.argv[1])
    dest_addr = (sys.argv[2], int(sys.argv[3]))
    encoding = sys.argv[4]

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("", port))
    print("listening on", s.getsockname(), flush=True)

    while True:
        try:
            send_data = input()
        except EOFError:
            break
        s.sendto(send_data.encode(encoding), dest_addr)
        print("sent", len(send_data.encode(encoding)), "bytes to", dest_addr, flush=True)

    s.close()


if __name__ == "__main__":
    main()
