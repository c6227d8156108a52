"""An HTTP server on loopback, answering from a daemon thread while in use.

The scripted model and the tests' GitHub fake and webhook receiver are
each one of these: ``with Server(...) as server:`` serves for the block.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self


class QuietHandler(BaseHTTPRequestHandler):
    """A keep-alive request handler that logs nothing (test and demo output stay clean)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass


class LoopbackServer:
    """Base of a server that serves while in use; subclasses call :meth:`_listen` first."""

    _server: ThreadingHTTPServer

    def _listen(self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0: any free port); requests are answered once started."""
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT`` of the bound socket."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        """Serve from a daemon thread."""
        # A short poll: stop() waits for the serving loop's next one, and tests start many servers.
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
