"""Hostile HTTP peers on loopback: a server that answers one header line per interval,
forever (a slow input URL, a trickling webhook receiver). Each stops by itself after
``lifetime`` seconds, and when its ``with`` block ends."""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import socketserver
import threading
import time
from collections.abc import Iterator


@dataclasses.dataclass
class Seen:
    """What a hostile server saw: connections accepted, and the most open at once."""

    connections: int = 0
    open_now: int = 0
    most_open: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def opened(self) -> None:
        with self.lock:
            self.connections += 1
            self.open_now += 1
            self.most_open = max(self.most_open, self.open_now)

    def closed(self) -> None:
        with self.lock:
            self.open_now -= 1


def _read_request(sock: socket.socket) -> None:
    """Read the request head and its Content-Length body (a webhook's POST)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip() or 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return
        body += chunk


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the peer closes (so ``Seen`` counts it at once)."""
    readable, _, _ = select.select([sock], [], [], seconds)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:
        return True


@contextlib.contextmanager
def slow_headers(interval: float = 1.0, lifetime: float = 60.0) -> Iterator[tuple[str, Seen]]:
    """A server that reads each request, then sends ``HTTP/1.1 200 OK`` and one more header
    line every ``interval`` seconds, never ending the head. Yields its base URL and ``Seen``."""
    stop = threading.Event()
    seen = Seen()
    ends_at = time.monotonic() + lifetime

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            seen.opened()
            try:
                sock.settimeout(max(0.1, ends_at - time.monotonic()))
                _read_request(sock)
                sock.sendall(b"HTTP/1.1 200 OK\r\n")
                n = 0
                while not stop.is_set() and time.monotonic() < ends_at:
                    if _closed_within(sock, interval):
                        return
                    n += 1
                    sock.sendall(f"X-Slow-{n}: {n}\r\n".encode())
            except OSError:
                pass  # the client gave up: what a deadline should make it do
            finally:
                seen.closed()

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    server = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    timer = threading.Timer(lifetime, stop.set)
    timer.daemon = True
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        stop.set()
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)
