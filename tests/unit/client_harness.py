"""What the SDK tests share: a loopback HTTP server that answers from a script and records
what reached it, and a way to run one test script with either client.

A script is written once for both clients: it wraps every SDK call in ``await settle(...)``,
which awaits an ``AsyncClient`` call and passes a ``Client`` call's result through.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import vidq

KINDS = ("sync", "async")
# Quick retries, so that the tests measure attempts rather than the default backoff.
FAST = vidq.RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


@dataclasses.dataclass(frozen=True)
class Answer:
    """One scripted response."""

    status: int = 200
    body: Any = dataclasses.field(default_factory=dict)  # JSON, or bytes sent as they are
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request that reached the server."""

    method: str
    target: str  # path and query
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Answers each path (query ignored) from its script, in order; the last answer repeats.
    An unscripted path is 404."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.scripts: dict[str, list[Answer]] = {}
        self.seen: list[Seen] = []

    def script(self, path: str, *answers: Answer) -> None:
        self.scripts[path] = list(answers)

    def on(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.target.split("?")[0] == path]

    def gaps(self, path: str) -> list[float]:
        """Seconds between successive requests to ``path``."""
        times = [s.at for s in self.on(path)]
        return [b - a for a, b in itertools.pairwise(times)]

    def _next(self, path: str) -> Answer:
        answers = self.scripts.get(path)
        if not answers:
            return Answer(404, {"detail": "not found"})
        return answers.pop(0) if len(answers) > 1 else answers[0]


@contextlib.contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    """A ScriptedServer on 127.0.0.1, for the duration of the block."""
    lock = threading.Lock()
    server: ScriptedServer

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with lock:
                server.seen.append(Seen(self.command, self.path, headers, body, time.monotonic()))
                answer = server._next(self.path.split("?")[0])
            raw = (
                answer.body if isinstance(answer.body, bytes) else json.dumps(answer.body).encode()
            )
            self.send_response(answer.status)
            for name, value in answer.headers.items():
                self.send_header(name, value)
            if not isinstance(answer.body, bytes):
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server = ScriptedServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


async def settle(value: Any) -> Any:
    """The result of an SDK call of either client."""
    return await value if inspect.isawaitable(value) else value


def run_with(kind: str, url: str, script: Callable[[Any], Any], **options: Any) -> Any:
    """Run ``script(client)`` with a ``vidq.Client`` (kind "sync") or a ``vidq.AsyncClient``
    (kind "async") on ``url`` with token "t"; returns what the script returns."""
    options.setdefault("retry", FAST)

    async def main() -> Any:
        if kind == "sync":
            with vidq.Client(url, "t", **options) as client:
                return await settle(script(client))
        async with vidq.AsyncClient(url, "t", **options) as client:
            return await settle(script(client))

    return asyncio.run(main())
