"""Real `vidq` processes for the acceptance layer: `vidq serve` on a free loopback port,
`vidq worker` beside it, any other command with ``run_cli``, each with this checkout's
sources and its settings as ``VIDQ_*`` variables."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.stores import Database, mint_token, seed_sqlite
from tests.support.tls import client_tls

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def vidq_env(data_dir: Path, **settings: Any) -> dict[str, str]:
    """Environment for a vidq subprocess: this checkout's sources, the given settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDQ_")}
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    env["VIDQ_DATA_DIR"] = str(data_dir)
    env["VIDQ_LOG_LEVEL"] = "WARNING"
    for key, value in settings.items():
        env[f"VIDQ_{key.upper()}"] = str(value)
    return env


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
    )


def vidq_worker(env: dict[str, str], *args: str, **settings: Any) -> subprocess.Popen[bytes]:
    """`vidq worker ARGS` with ``env`` and ``settings`` (as ``VIDQ_*``) on top; its log on
    its stderr pipe."""
    env = {**env, **{f"VIDQ_{k.upper()}": str(v) for k, v in settings.items()}}
    return subprocess.Popen(
        [sys.executable, "-m", "vidq", "worker", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finished(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """Wait for a process to exit 0; its stderr (its log)."""
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    log = err.decode(errors="replace") if err else ""
    assert proc.returncode == 0, log[-3000:]
    return log


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it is still there after 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclasses.dataclass
class Server:
    """A running `vidq serve` subprocess."""

    url: str
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    admin_token: str
    ca: Path | None = None  # the self-signed certificate of a TLS server

    @property
    def database_url(self) -> str:
        """The job store's URL, as the server resolves its settings."""
        default = f"sqlite:///{self.data_dir.resolve() / 'vidq.db'}"
        return self.env.get("VIDQ_DATABASE_URL") or default

    def token(self, user: str, max_priority: int = 100, **options: Any) -> str:
        """A token minted on the server's store from this process (``stores.mint_token``):
        a `vidq token create` subprocess would cost about a second of CPU a token."""
        from vidq.store import open_store

        store = open_store(self.database_url, migrate=False)
        try:
            return mint_token(store, user, max_priority, **options)
        finally:
            store.close()

    def client(self, token: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = client_tls(self.ca)
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, verify=verify)

    def worker(self, *args: str, **settings: Any) -> subprocess.Popen[bytes]:
        return vidq_worker(self.env, *args, **settings)

    def stop(self) -> None:
        stop_process(self.proc)


@contextlib.contextmanager
def serve(
    data_dir: Path,
    *,
    workers: int = 1,
    tls: tuple[Path, Path] | None = None,
    database: Database | None = None,
    seed: bool = True,
    **settings: Any,
) -> Iterator[Server]:
    """Start `vidq serve` on a free port; yield once /health answers; stop it afterwards.
    ``tls``: (certificate, key) PEM files to serve HTTPS with (the cert must be its own CA).
    ``database`` (the ``database`` fixture) chooses the job store, and is checked against
    what the running server really uses. ``seed``: a new data folder gets a copy of an
    empty, migrated SQLite store (``seed_sqlite``); False: `vidq serve` makes its own."""
    if database is not None:
        settings = {**database.settings(), **settings}
    port = free_port()
    env = vidq_env(data_dir, **settings)
    data_dir.mkdir(parents=True, exist_ok=True)
    if seed and "database_url" not in settings:
        seed_sqlite(data_dir)
    log = (data_dir / "serve.log").open("ab")  # the server's log, for tests and post-mortems
    args = ["serve", "--port", str(port), "--workers", str(workers)]
    if tls is not None:
        args += ["--ssl-certfile", str(tls[0]), "--ssl-keyfile", str(tls[1])]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vidq", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
    )
    log.close()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    verify = client_tls(tls[0] if tls else None)
    admin = ""
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        if "admin token" in line:
            admin = line.rsplit(":", 1)[1].strip()
        if "serving on" in line:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"vidq serve exited with {proc.returncode}")
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1, verify=verify).status_code == 200:
                break
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("vidq serve did not become healthy")
    server = Server(
        url=url,
        data_dir=data_dir,
        env=env,
        proc=proc,
        admin_token=admin,
        ca=tls[0] if tls else None,
    )
    try:
        if database is not None:
            database.check(data_dir, server.database_url)
        yield server
    finally:
        server.stop()
