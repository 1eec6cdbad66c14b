"""A tiny HTTP server on 127.0.0.1 that records the requests reaching it."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Route = tuple[int, dict[str, str], bytes]  # status, headers, body


class Hits(list[str]):
    """Request targets received, in order; ``hosts`` holds their Host headers."""

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[str] = []


@contextlib.contextmanager
def loopback_http(routes: dict[str, Route]) -> Iterator[tuple[str, Hits]]:
    """Serve ``routes`` (by path, query ignored; unknown paths are 404). Yields the base URL
    and the list of request targets received so far (with their query strings)."""
    hits = Hits()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.hosts.append(self.headers.get("Host", ""))
            hits.append(self.path)
            status, headers, body = routes.get(self.path.split("?")[0], (404, {}, b""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url, hits


@contextlib.contextmanager
def serve_handler(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port from a thread; yields the base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@contextlib.contextmanager
def serve_app(app: Any, *, tls: tuple[Path, Path] | None = None) -> Iterator[str]:
    """Serve an ASGI ``app`` with uvicorn on a free loopback port from a thread (real HTTP,
    the app's lifespan run); yields the base URL. ``tls``: (certificate, key) PEM files to
    serve HTTPS with. Leaving the block stops the server and waits for its lifespan's end."""
    import socket
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        log_config=None,
        lifespan="on",
        server_header=False,
        ssl_certfile=str(tls[0]) if tls else None,
        ssl_keyfile=str(tls[1]) if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
