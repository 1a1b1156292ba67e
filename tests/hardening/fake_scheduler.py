"""A process on 127.0.0.1 that takes connections like a Dask scheduler and then never answers
(``hang``) or answers garbage (``garbage``); prints its port."""

from __future__ import annotations

import socket
import sys
import threading
import time


def serve(conn: socket.socket, mode: str) -> None:
    while mode == "garbage":
        try:
            conn.sendall(b"\xff\x00not dask" * 1000)
        except OSError:
            return
        time.sleep(0.1)
    time.sleep(3600)


def main() -> None:
    mode = sys.argv[1]
    server = socket.create_server(("127.0.0.1", 0))
    print(server.getsockname()[1], flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, mode), daemon=True).start()


if __name__ == "__main__":
    main()
