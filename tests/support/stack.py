"""The in-process stack: what `vidq serve` runs, built in the test's own process.

``stack(data_dir, workers=1, **settings)`` builds the settings (the same ``VIDQ_*`` names
the acceptance layer's ``serve()`` takes), the job store (a SQLite file in the data
folder, or the PostgreSQL database of ``database``) and the blob store (the data folder's
local blobs, or S3 by ``storage_url``), the app, ``workers`` worker loops in threads (the
``Worker`` and options `vidq serve` builds, named ``serve-N``) and the retention collector;
it serves the app with uvicorn on a free loopback port from a thread and yields a
``Stack``. Tokens are minted on the store, never by a `vidq token create` subprocess.

Real HTTP on loopback rather than ``httpx.ASGITransport``: the tests are synchronous and
hand the server's URLs to things beyond their own client: signed download URLs fetched
with plain ``httpx.get``, the SDK, fal-client (a subprocess, over TLS), schemathesis, raw
sockets (a 413 on a dropped connection); and what they check is partly uvicorn's (h11
framing, the app's lifespan starting the webhook dispatcher and the reaper). Starting
uvicorn in a thread costs milliseconds; a `vidq serve` process costs seconds of CPU.

Every vidq object is built by the composition root's builders (``vidq.compose``, which
`vidq serve` and `vidq worker` call too), in the ``_build_*`` functions below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from tests.support.loopback import serve_app
from tests.support.processes import vidq_env, vidq_worker
from tests.support.stores import Database, mint_token, seed_sqlite
from tests.support.tls import client_tls
from vidq.config import Settings

_ENV_LOCK = threading.Lock()


# --- the builders: the one place that knows how vidq is put together ------------------------


def _build_settings(data_dir: Path, workers: int, values: dict[str, Any]) -> Settings:
    """Settings from ``VIDQ_<NAME>`` variables, exactly as `vidq serve` reads them (the
    variables are set only while the settings are read)."""
    env = {f"VIDQ_{k.upper()}": str(v) for k, v in values.items()}
    with _ENV_LOCK:
        saved = {k: v for k, v in os.environ.items() if k.startswith("VIDQ_")}
        for k in saved:
            del os.environ[k]
        os.environ.update(env)
        try:
            return Settings.load(data_dir=data_dir, server={"workers": workers})
        finally:
            for k in env:
                os.environ.pop(k, None)
            os.environ.update(saved)


def _build_api(settings: Settings) -> Any:
    """What `vidq serve` builds: the backends (a new SQLite file is created), an admin token
    for an empty store, the app and its in-process workers (``compose.ApiService``)."""
    from vidq.compose import build_api

    return build_api(settings)


def _build_worker(
    settings: Settings, store: Any, storage: Any, name: str, *, burst: bool, metrics: Any = None
) -> Any:
    """A local worker loop as `vidq worker` builds one, over the stack's store and storage."""
    from vidq.compose import worker_options
    from vidq.worker import Worker
    from vidq.worker.local import LocalSource

    options = worker_options(settings, burst=burst, name=name)
    return Worker(LocalSource(store, storage), options, metrics, reaper=store)


def _start_collector(settings: Settings, store: Any, storage: Any) -> Any:
    """The periodic retention collector every API runs; returns its stop event."""
    from vidq.compose import process_name, start_collector

    return start_collector(settings, store, storage, process_name("api"))


def _collector(settings: Settings, store: Any, storage: Any, holder: str) -> Any:
    from vidq.compose import collector

    return collector(settings, store, storage, holder)


# --- the stack ---------------------------------------------------------------------------------


class WorkerThread:
    """A worker loop in a thread (``Stack.start_worker``); ``stop`` ends it."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.done: int | None = None
        self.thread = threading.Thread(target=self._run, name=f"vidq-{worker.name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.done = self.worker.run()

    def join(self, timeout: float) -> int:
        """Wait for the loop to end (a burst worker: the queue drained); jobs it finished."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker {self.worker.name} still running"
        assert self.done is not None, f"worker {self.worker.name} crashed (see its log)"
        return self.done

    def stop(self, timeout: float = 30) -> None:
        self.worker.stop(drain=False)
        self.thread.join(timeout)


@dataclasses.dataclass
class Stack:
    """A running in-process stack: what a test uses of it. Mirrors the acceptance layer's
    ``processes.Server`` (url, data_dir, admin_token, token(), client(), env)."""

    url: str
    data_dir: Path
    settings: Settings
    store: Any  # JobStore
    storage: Any  # BlobStore
    admin_token: str
    values: dict[str, Any]  # the VIDQ_* settings it was given, by name
    ca: Path | None = None  # the self-signed certificate of a TLS stack
    log: Path | None = None  # its log file, when started with ``logs=True``
    workers: list[Any] = dataclasses.field(default_factory=list)
    _threads: list[WorkerThread] = dataclasses.field(default_factory=list)
    _drains: int = 0

    @property
    def env(self) -> dict[str, str]:
        """The environment of a `vidq` command on this stack's data folder and database."""
        return vidq_env(self.data_dir, **self.values)

    def token(self, user: str, max_priority: int = 100, **options: Any) -> str:
        """A token minted on the store: ``admin``, ``worker``, ``pools`` and the quota
        (``max_queued``, ``max_running``, ``rate_per_minute``, ``daily_video_seconds``,
        ``daily_gpu_seconds``, ``weight``)."""
        return mint_token(self.store, user, max_priority, **options)

    def client(self, token: str | None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify = client_tls(self.ca)
        options: dict[str, Any] = {"timeout": 30, "verify": verify, **kwargs}
        return httpx.Client(base_url=self.url, headers=headers, **options)

    def start_worker(self, *, burst: bool = False, name: str = "", **values: Any) -> WorkerThread:
        """Another worker loop in a thread, with ``values`` on top of the stack's settings
        (``burst``: it ends once the queue is drained)."""
        settings = _build_settings(self.data_dir, 0, {**self.values, **values})
        self._drains += 1
        worker = _build_worker(
            settings, self.store, self.storage, name or f"drain-{self._drains}", burst=burst
        )
        thread = WorkerThread(worker)
        self._threads.append(thread)
        return thread

    def worker_process(self, *args: str, **values: Any) -> subprocess.Popen[bytes]:
        """`vidq worker ARGS` as a process beside the stack (same data folder, database and
        storage), with ``values`` on top; its log on its stderr pipe."""
        return vidq_worker(self.env, *args, **values)

    def drain(self, timeout: float = 120, **values: Any) -> int:
        """A burst worker (`vidq worker --burst`): runs the queue dry; the jobs it did."""
        return self.start_worker(burst=True, **values).join(timeout)

    def gc(self, *, dry_run: bool = False, **ttls: Any) -> dict[str, Any]:
        """What `vidq gc [--dry-run]` does and prints (its JSON report), with ``ttls`` (and
        other retention settings) on top of the stack's settings."""
        settings = _build_settings(self.data_dir, 0, {**self.values, **ttls})
        c = _collector(settings, self.store, self.storage, f"gc@{socket.gethostname()}")
        report = c.dry_run() if dry_run else c.run_once(lease_s=settings.retention.gc_lease)
        assert report is not None, "another collector holds the gc lease"
        return {"dry_run": dry_run, **report.as_json()}


@contextlib.contextmanager
def stack(
    data_dir: Path,
    *,
    workers: int = 1,
    database: Database | None = None,
    tls: tuple[Path, Path] | None = None,
    logs: bool = False,
    **values: Any,
) -> Iterator[Stack]:
    """Start the stack on ``data_dir`` (made if missing) with ``workers`` worker threads and
    ``values`` as ``VIDQ_*`` settings; ``database`` (the ``database`` fixture) chooses the job
    store, and is checked against what the running stack really uses. ``tls``: (certificate,
    key) to serve HTTPS. ``logs``: the process's log records (API and workers; engine
    children log to stderr) go to ``data_dir/serve.log`` in the configured format, as
    `vidq serve` writes them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if database is not None:
        values = {**database.settings(), **values}
    settings = _build_settings(data_dir, workers, values)
    if settings.resolved_database_url() == f"sqlite:///{data_dir.resolve() / 'vidq.db'}":
        seed_sqlite(data_dir)
    with contextlib.ExitStack() as cleanup:
        log = data_dir / "serve.log" if logs else None
        if log is not None:
            cleanup.enter_context(_logs_to(log, settings))
        api = _build_api(settings)
        store, storage = api.backends.store, api.backends.storage
        cleanup.callback(store.close)
        admin = api.admin_token or mint_token(store, "admin", 1000, admin=True)
        url = cleanup.enter_context(serve_app(api.app, tls=tls))
        running = Stack(
            url=url, data_dir=data_dir, settings=settings, store=store, storage=storage,
            admin_token=admin, values=dict(values), ca=tls[0] if tls else None, log=log,
            workers=list(api.workers),
        )  # fmt: skip
        cleanup.callback(_stop_workers, running)
        gc_stop = _start_collector(settings, store, storage)
        cleanup.callback(gc_stop.set)
        running._threads.extend(WorkerThread(w) for w in api.workers)
        if database is not None:
            database.check(running.data_dir, running.settings.resolved_database_url())
        yield running


def _stop_workers(running: Stack) -> None:
    """Stop every worker loop at once (its current job released, as after `vidq serve`'s
    drain budget) and wait for the threads."""
    for t in running._threads:
        t.worker.stop(drain=False)
    for t in running._threads:
        t.thread.join(30)


@contextlib.contextmanager
def _logs_to(path: Path, settings: Settings) -> Iterator[None]:
    """vidq's own ``configure_logging`` (`vidq serve`'s format, level and filters), with its
    handler writing to ``path`` instead of stderr. The handlers it replaced (pytest's) are
    kept beside it, and only its own is removed at the end."""
    from vidq.cli.common import configure_logging

    root = logging.getLogger()
    before = list(root.handlers)
    levels = (root.level, logging.getLogger("httpx").level)
    with path.open("a", encoding="utf-8") as out:
        real, sys.stderr = sys.stderr, out
        try:
            configure_logging(settings)
        finally:
            sys.stderr = real
        ours = [h for h in root.handlers if h not in before]
        for handler in before:
            root.addHandler(handler)
        try:
            yield
        finally:
            for handler in ours:
                root.removeHandler(handler)
                handler.flush()
            root.setLevel(levels[0])
            logging.getLogger("httpx").setLevel(levels[1])
