"""``atlas serve``: a static HTTP server for an exported atlas folder (docs/viewer.md).

The export also opens straight from ``file://``; serving it is for sharing on a network, for
browsers that restrict ``file://`` pages, and for the browser tests. Standard library only
(``http.server``); bound to 127.0.0.1 unless the user asks for another interface.
"""

from __future__ import annotations

import errno
import http
import http.server
import logging
import threading
from functools import partial
from pathlib import Path
from typing import Any

from store.errors import AtlasError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # loopback: nothing is exposed unless --host says so
DEFAULT_PORT = 8000

#: content types of the export's files (docs/export_format.md) that mimetypes may not know or
#: may map differently per platform (.dzi is XML; .js must be JavaScript for <script> tags)
EXPORT_TYPES = {
    ".dzi": "application/xml",
    ".js": "text/javascript",
    ".json": "application/json",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".png": "image/png",
    ".css": "text/css",
    ".html": "text/html",
}


class AtlasRequestHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files of one folder with the export's content types; logs through ``logging``.

    Only what lies inside the folder is served: ``http.server`` already keeps ``..`` in the URL
    inside it, but it follows symbolic links, so a link in the folder to a file or folder elsewhere
    would hand that out (to a whole network under ``--host 0.0.0.0``). Every request's path is
    resolved (links followed) and answered 404 unless it is still under the resolved root.
    """

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, **EXPORT_TYPES}

    def send_head(self) -> Any:
        root = Path(self.directory).resolve()
        if not is_inside(Path(self.translate_path(self.path)), root):
            self.send_error(http.HTTPStatus.NOT_FOUND, "File not found")
            return None
        return super().send_head()

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symbolic link followed, lies under ``root`` (itself resolved)."""
    try:
        return path.resolve().is_relative_to(root)
    except (OSError, RuntimeError):  # a link loop, or a path the OS refuses: not servable
        return False


def check_atlas_folder(folder: str | Path) -> Path:
    """The folder as a Path if it holds an exported viewer (index.html), else a one-line error."""
    path = Path(folder)
    if not path.is_dir():
        raise AtlasError(f"{path}: no such folder; export an atlas first (atlas tiles) or pass its folder")
    if not (path / "index.html").is_file():
        raise AtlasError(
            f"{path}: no index.html, so this is not an exported atlas; run `atlas tiles` "
            "(it writes the viewer) or pass the export folder"
        )
    return path


def make_server(
    folder: str | Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT
) -> http.server.ThreadingHTTPServer:
    """A threading HTTP server rooted at ``folder`` (port 0: any free port; see ``server_address``)."""
    root = check_atlas_folder(folder)
    handler = partial(AtlasRequestHandler, directory=str(root.resolve()))
    try:
        return http.server.ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise AtlasError(f"port {port} on {host} is already in use; pick another with --port") from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EACCES):
            raise AtlasError(f"cannot listen on {host}:{port} ({exc.strerror}); check --host/--port") from None
        raise AtlasError(f"cannot listen on {host}:{port}: {exc}") from None


def serve_in_thread(
    folder: str | Path, host: str = DEFAULT_HOST, port: int = 0
) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Start serving in a daemon thread; return the server (call ``shutdown()``) and its base URL."""
    server = make_server(folder, host, port)
    threading.Thread(target=server.serve_forever, name="atlas-serve", daemon=True).start()
    return server, base_url(server)


def base_url(server: http.server.ThreadingHTTPServer) -> str:
    """The URL a browser opens for this server (``http://host:port/``)."""
    host, port = server.server_address[:2]
    host = host.decode() if isinstance(host, bytes) else host  # an AF_UNIX-style bytes address; never for TCP
    return f"http://{host}:{port}/"
