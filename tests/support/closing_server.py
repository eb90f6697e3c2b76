"""The bluntest peer: it reads each request's head, then hangs up without a byte of answer."""

from __future__ import annotations

import socket
import socketserver
import threading

from tests.support.net import LOOPBACK

READ_TIMEOUT = 5.0
STOP_TIMEOUT = 10.0


class ClosingServer:
    """Listens on 127.0.0.1 (at :attr:`url`) while used as a context manager.

    :attr:`connections` counts the connections it accepted, and hung up on.
    """

    def __init__(self) -> None:
        self.connections = 0
        self._lock = threading.Lock()
        # Bound and listening from here on: a connection made before the loop runs waits.
        self._server = socketserver.ThreadingTCPServer((LOOPBACK, 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://{LOOPBACK}:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> ClosingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()  # returns once the accept loop has stopped
        self._server.server_close()
        self._thread.join(STOP_TIMEOUT)

    def _handler(self) -> type[socketserver.BaseRequestHandler]:
        peer = self

        class HangUp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                with peer._lock:
                    peer.connections += 1
                connection: socket.socket = self.request
                connection.settimeout(READ_TIMEOUT)
                head = b""
                try:
                    while b"\r\n\r\n" not in head and (chunk := connection.recv(4096)):
                        head += chunk
                except OSError:
                    pass
                # Returning closes the connection, with nothing sent.

        return HangUp
