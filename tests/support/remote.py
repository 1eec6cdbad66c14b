"""Remote workers for tests: `vidq worker --server URL --token T` as a subprocess whose
environment and working directory hold no database URL, storage settings or data dir, and
a reverse proxy that loses one answer."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from tests.support.loopback import serve_handler
from tests.support.processes import ROOT, Server, run_cli
from tests.support.stack import Stack


def worker_token(server: Server | Stack, *args: str) -> str:
    """A worker token made by `vidq token create --worker ARGS` on the server's data folder."""
    out = run_cli(server.env, "token", "create", "--user", "gpu-box", "--worker", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def remote_worker(
    server: Server | Stack | str, token: str, cwd: Path, *args: str, log: Path | None = None,
    **settings: str,
) -> subprocess.Popen[bytes]:  # fmt: skip
    """`vidq worker --server --token` with no VIDQ_*/AWS_* variable but ``settings``, in an
    empty working directory (``server``: a Server, or a URL). Its log is on its stderr
    pipe, or in ``log`` (a long-lived worker, whose pipe nobody reads)."""
    url = server if isinstance(server, str) else server.url
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDQ_", "AWS_", "PG"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["VIDQ_LOG_LEVEL"] = "INFO"
    env.update({f"VIDQ_{k.upper()}": v for k, v in settings.items()})
    cwd.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as files:
        stderr: Any = subprocess.PIPE if log is None else files.enter_context(log.open("ab"))
        return subprocess.Popen(
            [sys.executable, "-m", "vidq", "worker", "--server", url, "--token", token, *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@contextlib.contextmanager
def dropping_proxy(upstream: str, drop_suffix: str) -> Iterator[tuple[str, list[str]]]:
    """A reverse proxy to ``upstream`` that forwards the first request whose path ends with
    ``drop_suffix`` and then closes the connection without answering (the answer is lost).
    Yields its URL and the paths it forwarded."""
    seen: list[str] = []
    dropped = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            path = self.path.split("?", 1)[0]
            seen.append(path)
            with httpx.Client(base_url=upstream, timeout=60) as http:
                r = http.request(self.command, self.path, content=body, headers=headers)
            if path.endswith(drop_suffix) and not dropped.is_set():
                dropped.set()
                self.close_connection = True
                return  # forwarded, committed, and no answer
            self.send_response(r.status_code)
            for key, value in r.headers.items():
                if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        do_GET = do_POST = do_PUT = _forward

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url, seen
