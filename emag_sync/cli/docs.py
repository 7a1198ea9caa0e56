"""``emag-sync docs``: the Data Docs site over HTTP (standard library), for the demo and one-machine set-ups.

Browsers refuse ``file://`` links from the Prefect UI; this serves the site folder, and only it, at the
address the link artifacts are built on by default (EMAG_SYNC_DATA_DOCS_URL, ``http://127.0.0.1:8766/``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from os import PathLike
from pathlib import Path
from typing import Any


class _SiteHandler(SimpleHTTPRequestHandler):
    """Files of the site folder; no folder listings, no request log on the terminal.

    A browser that abandons a download (a closed tab, a cancelled page) resets the connection while the
    file is being written: that is the client leaving, not a failure, so it ends the request quietly
    instead of a BrokenPipeError/ConnectionResetError traceback from socketserver.
    """

    def handle(self) -> None:
        try:
            super().handle()
        except ConnectionError:
            self.close_connection = True

    def finish(self) -> None:
        with suppress(ConnectionError):
            super().finish()

    def list_directory(self, path: str | PathLike[str]) -> None:
        self.send_error(404, "No such page")
        return None

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _server(site: Path, host: str, port: int) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (OSError when it cannot bind); the folder is created if missing,
    so the server can start before the first checkpoint has written anything."""
    site.mkdir(parents=True, exist_ok=True)
    return ThreadingHTTPServer((host, port), functools.partial(_SiteHandler, directory=str(site)))


def server_url(server: ThreadingHTTPServer) -> str:
    """The base URL a server answers at, e.g. ``http://127.0.0.1:8766/``."""
    host, port = server.server_address[:2]
    return f"http://{host!s}:{port}/"


def serve_site(site: Path, host: str, port: int, announce: Callable[[str], None]) -> None:
    """Serve ``site`` until interrupted (Ctrl-C raises KeyboardInterrupt); ``announce`` gets the URL."""
    server = _server(site, host, port)
    with server:
        announce(server_url(server))
        server.serve_forever()


@contextmanager
def serving(site: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Serve ``site`` from a background thread while the block runs; yields the base URL."""
    server = _server(site, host, port)
    thread = threading.Thread(target=server.serve_forever, name="data-docs", daemon=True)
    thread.start()
    try:
        yield server_url(server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
