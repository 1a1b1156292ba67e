"""The raw TCP reference: a child process that receives N bytes and sends them back.

Run as ``python tcp_echo.py PORT NBYTES`` by :func:`bench.throughput.tcp_round_trip`; it
connects to PORT, and for every N bytes it receives (``recv_into`` a preallocated buffer)
it sends the same N bytes back (``sendall``), until the connection closes.
"""

from __future__ import annotations

import socket
import sys

CHUNK = 64 << 20


def recv_exactly(sock: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < view.nbytes:
        n = sock.recv_into(view[got : got + CHUNK])
        if n == 0:
            return False
        got += n
    return True


def main() -> None:
    port, nbytes = int(sys.argv[1]), int(sys.argv[2])
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    sock.settimeout(None)
    view = memoryview(bytearray(nbytes))
    while recv_exactly(sock, view):
        sock.sendall(view)
    sock.close()


if __name__ == "__main__":
    main()
