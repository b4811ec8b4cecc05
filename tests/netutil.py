"""Loopback servers for network tests: an HTTP server with Range support (or without, like `python -m
http.server`) that can cut a connection once or answer a path with an error status."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FileServer:
    """Serves files from a dict {url path: bytes} or a folder; records requests; `cut_once` truncates a response."""

    def __init__(self, files: dict[str, bytes] | None = None, root: Path | None = None, *,
                 ranges: bool = True) -> None:
        self.files, self.root, self.ranges = dict(files or {}), root, ranges
        self.requests: list[tuple[str, str | None]] = []
        self.cut_once: dict[str, int] = {}  # path → bytes to send before dropping the connection (once)
        self.status: dict[str, int] = {}  # path → error status to answer with (401, 403, 500, ...)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _body(self):
                path = self.path.split("?")[0]
                if path in server.status:
                    return server.status[path]
                if path in server.files:
                    return server.files[path]
                if server.root is not None:
                    f = (server.root / path.lstrip("/")).resolve()
                    if f.is_file() and f.is_relative_to(server.root.resolve()):
                        return f.read_bytes()
                return None

            def _refuse(self, body) -> bool:
                if body is None or isinstance(body, int):
                    self.send_error(body or 404)
                    return True
                return False

            def do_HEAD(self):  # noqa: N802
                body = self._body()
                if self._refuse(body):
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):  # noqa: N802
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                server.requests.append((path, rng))
                body = self._body()
                if self._refuse(body):
                    return
                start, end = 0, len(body) - 1
                if server.ranges and rng and rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a) if a else len(body) - int(b)
                    end = int(b) if a and b else len(body) - 1
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
                else:
                    self.send_response(200)
                chunk = body[start:end + 1]
                self.send_header("Content-Length", str(len(chunk)))
                if server.ranges:
                    self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                cut = server.cut_once.pop(path, None)
                if cut is not None:
                    self.wfile.write(chunk[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
