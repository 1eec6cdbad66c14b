"""The composition root: the parts of a vidq process, built from ``Settings`` with real types.

The CLI's commands (``vidq.cli``) parse flags, load the settings, call one builder here and
run what it returns; the tests' in-process stack calls the same builders, so a test builds
an API or a worker the way production does, without a subprocess. Only this module (and
the CLI above it) sees every adapter: the store and storage drivers, the engines' worker
loop, the remote worker's HTTP client. Nothing here parses flags or prints: what stops a
process from starting is a ``CannotStart`` whose message the CLI shows.

    open_backends(settings)      -> Backends (job store + blob storage)
    build_api(settings)          -> ApiService   (`vidq serve`: the app, in-process workers,
                                                   the retention collector)
    build_worker(settings)       -> WorkerService (`vidq worker`: local or remote, one slot
                                                   per GPU, metrics/health, the collector)
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from vidq import catalog
from vidq.blobs import load_secret, open_storage
from vidq.blobs.base import BlobStore
from vidq.catalog import DEFAULT_POOLS, MODELS, POOLS
from vidq.config import Settings
from vidq.config_doc import mask
from vidq.engines.wan_layout import missing_message, wan_weights
from vidq.errors import (
    CannotStart,
    EngineUnavailable,
    ServiceUnavailable,
    StoreUnavailable,
    TokenRefused,
)
from vidq.models_file import ModelsFileError
from vidq.ops.logs import LogSetup
from vidq.ops.metrics import WorkerMetrics, serve_worker_metrics
from vidq.ops.retention import Collector, RetentionPolicy, run_periodically
from vidq.store import open_store
from vidq.store.base import JobStore, RetentionStore
from vidq.worker import Worker, WorkerOptions
from vidq.worker.limits import RunLimits
from vidq.worker.local import LocalSource
from vidq.worker.loras import LoraOptions
from vidq.worker.ports import Reaper, Source
from vidq.worker.slots import WorkerGroup, resolve_gpus

if TYPE_CHECKING:
    from fastapi import FastAPI

    from vidq.worker.remote import RemoteSource

log = logging.getLogger(__name__)

RETRY_OPEN_S = 2.0  # how often a process waits again for a database or API not up yet


def log_setup(settings: Settings) -> LogSetup:
    """How every process of a command logs (engine children included)."""
    return LogSetup(level=settings.log_level, format=settings.log_format)


# --- backends ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Backends:
    """The job store and the blob storage of one process."""

    store: JobStore
    storage: BlobStore

    def close(self) -> None:
        self.store.close()


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def describe_database(settings: Settings) -> str:
    """The configured database as a user would look for it (a password masked)."""
    url = settings.resolved_database_url()
    path = sqlite_path(url)
    if settings.store.database_url is None:
        return f"data folder {settings.data_dir.resolve()} (database {path})"
    return f"database {path or mask(url)} (VIDQ_DATABASE_URL)"


def open_job_store(settings: Settings, *, create: bool) -> JobStore:
    """The configured job store. A SQLite database that does not exist is created only when
    ``create`` (``vidq serve``, ``--init``): run from another folder, any other command
    would make a new, empty data folder that no server reads, so it is a ``CannotStart``
    that says how to point at the right one. A PostgreSQL database is never created."""
    url = settings.resolved_database_url()
    path = sqlite_path(url)
    if path is not None and not create and not path.is_file():
        raise CannotStart(_no_database(settings, path))
    return open_store(url, fair_share=settings.store.fair_share)


def _no_database(settings: Settings, path: Path) -> str:
    """Why no SQLite database was found at ``path``, and what to do, in one line."""
    fix = "; --init creates a new, empty one"
    if settings.store.database_url is not None:
        return f"no SQLite database {path}: check VIDQ_DATABASE_URL{fix}"
    data_dir = settings.data_dir.resolve()
    where = (
        f"no vidq database {path} in the data folder {data_dir}"
        if data_dir.is_dir()
        else f"no data folder {data_dir} (looked for the database {path})"
    )
    return (
        f"{where}: run this in the folder where `vidq serve` runs, or give its data folder "
        f"with --data-dir or VIDQ_DATA_DIR{fix}"
    )


def open_blob_storage(settings: Settings) -> BlobStore:
    """The configured blob storage (the local store's signing key from the settings or
    the data folder)."""
    key = settings.storage.secret_key
    secret = load_secret(settings.data_dir, key.get_secret_value() if key else None)
    return open_storage(
        settings.resolved_storage_url(), secret=secret, bucket=settings.storage.bucket
    )


def open_backends(settings: Settings, *, create: bool = False, patient: bool = False) -> Backends:
    """The job store (``open_job_store``) and the blob storage. ``patient``: wait out a
    database that cannot be reached yet (a process started during an outage, or before
    its database) instead of failing."""
    while True:
        try:
            store = open_job_store(settings, create=create)
            break
        except StoreUnavailable as exc:
            if not patient:
                raise
            log.warning("waiting for the database: %s", exc.message)
            time.sleep(RETRY_OPEN_S)
    return Backends(store, open_blob_storage(settings))


# --- retention --------------------------------------------------------------------------------
def collector(
    settings: Settings, store: RetentionStore, storage: BlobStore, holder: str
) -> Collector:
    """The retention collector with the configured TTLs."""
    r = settings.retention
    policy = RetentionPolicy(
        input_ttl=r.input_ttl,
        output_ttl=r.output_ttl,
        job_ttl=r.job_ttl,
        upload_ttl=r.upload_ttl,
        batch=r.gc_batch,
    )
    return Collector(store, storage, policy, holder)


def start_collector(
    settings: Settings, store: RetentionStore, storage: BlobStore, holder: str
) -> threading.Event:
    """Run the collector every ``gc_interval`` in a daemon thread (one process of the fleet
    collects at a time, under the gc lease); set the returned event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_periodically,
        args=(
            collector(settings, store, storage, holder),
            settings.retention.gc_interval,
            settings.retention.gc_lease,
            stop,
        ),
        name="vidq-gc",
        daemon=True,
    )
    thread.start()
    return stop


def process_name(role: str) -> str:
    """``role@host:pid``: who holds a fleet-wide lease (the collector's), for operators."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


# --- the models file -------------------------------------------------------------------------
def load_models(settings: Settings) -> None:
    """Make the models file of these settings (VIDQ_MODELS_FILE; the shipped one when unset)
    this process's catalog, before anything is built from it. ``CannotStart`` (exit 2)
    naming the file, the entry and the field of what is wrong."""
    try:
        catalog.install(settings.models_file)
    except ModelsFileError as exc:
        raise CannotStart(f"refusing to start: the models file {exc}") from None


# --- workers ----------------------------------------------------------------------------------
def wan_problems(settings: Settings, pools: Sequence[str]) -> list[str]:
    """Why the wan engine cannot serve ``pools`` here (missing weights); empty when it can."""
    wan_pools = [p for p in pools if settings.worker.engine_for(p) == "wan"]
    if not wan_pools:
        return []
    models_dir = settings.wan.models_dir
    if models_dir is None:
        return [f"pools {', '.join(wan_pools)} use the wan engine but VIDQ_MODELS_DIR is not set"]
    problems = []
    for pool in wan_pools:
        models = [m for m in MODELS.values() if m.pool == pool]
        family = models[0].family.value if models else ""
        if family not in ("t2v", "i2v"):
            problems.append(f"pool {pool}: the wan engine does not serve {family or 'it'}")
            continue
        weights = wan_weights(models_dir, family, settings.wan.base)
        if weights.missing():
            problems.append(missing_message([m.id for m in models], weights))
    return problems


def worker_options(
    settings: Settings,
    *,
    burst: bool = False,
    name: str = "",
    pools: Sequence[str] | None = None,
) -> WorkerOptions:
    """How a worker of these settings behaves. ``CannotStart`` for an unknown pool, or for
    wan pools whose weights are missing (before anything is opened)."""
    chosen = tuple(pools or settings.worker.pools or DEFAULT_POOLS)
    unknown = sorted(set(chosen) - set(POOLS))
    if unknown:
        raise CannotStart(
            f"unknown pools: {', '.join(unknown)}; known: {', '.join(POOLS)}", option="--pools"
        )
    problems = wan_problems(settings, chosen)
    if problems:
        raise CannotStart(
            "refusing to start: " + "\n".join(problems) + "\n(see `vidq models check`)"
        )
    return WorkerOptions(
        pools=chosen,
        engines={p: settings.worker.engine_for(p) for p in chosen},
        engine_settings=settings.engine_settings(),
        lease_s=settings.worker.lease_seconds,
        poll_s=settings.worker.poll_interval,
        reaper_s=settings.store.reaper_interval,
        burst=burst,
        drain_s=settings.worker.drain_seconds,
        retry_backoff_s=settings.worker.retry_backoff_seconds,
        retry_backoff_max_s=settings.worker.retry_backoff_max_seconds,
        upload_retry_s=settings.worker.upload_retry_seconds,
        logs=log_setup(settings),
        name=name,
        warmup=settings.worker.warmup,
        preview_interval_s=settings.worker.preview_interval,
        loras=LoraOptions(
            cache_dir=settings.resolved_lora_cache_dir(),
            cache_bytes=settings.worker.lora_cache_bytes,
            max_bytes=settings.limits.max_lora_bytes,
            timeout_s=settings.worker.lora_fetch_timeout,
            allow_http=settings.limits.fetch_allow_http,
            allow_networks=settings.limits.fetch_allow_networks,
        ),
        probe_s=settings.worker.engine_probe_seconds,
        probe_max_s=settings.worker.engine_probe_max_seconds,
        load_failures=settings.worker.engine_load_failures,
    )


def remote_source(settings: Settings, *, burst: bool) -> tuple[RemoteSource, WorkerOptions]:
    """A remote worker's source of attempts and its options: the API's ``/worker/v1``
    routes, with the server's lease and the worker token's pools (default: all of them).
    Waits out an API that is not up yet, as a local worker waits for its database."""
    # The worker protocol's client (httpx): imported by the remote workers alone.
    from vidq.worker.remote import CLAIM_WAIT_S, ProtocolError, RemoteAPI, RemoteSource

    secret = settings.worker.worker_token
    if secret is None:
        raise CannotStart("a remote worker needs a worker token", option="--token")
    try:
        api = RemoteAPI(
            settings.worker.server or "",
            secret.get_secret_value(),
            insecure_http=settings.worker.insecure_http,
        )
    except ValueError as exc:
        raise CannotStart(str(exc), option="--server") from None
    while True:
        try:
            config = api.config()
            break
        except ServiceUnavailable as exc:
            log.warning("waiting for the API: %s", exc.message)
            time.sleep(RETRY_OPEN_S)
        except TokenRefused as exc:
            raise CannotStart(f"the API refused the worker token: {exc.message}") from None
        except ProtocolError as exc:
            raise CannotStart(exc.message) from None
    allowed = tuple(config.pools)
    # unnamed: the token's pools but the opt-in ones (LTX-2's), as a local worker's default
    opt_in = set(POOLS) - set(DEFAULT_POOLS)
    pools = settings.worker.pools or tuple(p for p in allowed if p not in opt_in)
    refused = sorted(set(pools) - set(allowed))
    if refused:
        raise CannotStart(
            f"this worker token may not claim from {', '.join(refused)}", option="--pools"
        )
    options = dataclasses.replace(
        worker_options(settings, burst=burst, pools=pools), lease_s=config.lease_s
    )
    source = RemoteSource(api, wait_s=0.0 if burst else CLAIM_WAIT_S, lease_s=options.lease_s)
    return source, options


@dataclasses.dataclass
class WorkerService:
    """A `vidq worker` process: one worker loop per GPU slot over a local or remote source,
    its metrics and health on ``metrics_port``, and (local, not burst) the collector."""

    group: WorkerGroup
    limits: RunLimits
    close: Callable[[], None]
    registry: CollectorRegistry | None = None
    metrics_port: int | None = None
    collect: Callable[[], threading.Event] | None = None

    @property
    def name(self) -> str:
        return self.group.name

    @property
    def engine_down(self) -> bool:
        """Whether a slot ended holding an engine down (a ``--burst`` worker exits then)."""
        return any(worker.down for worker in self.group.workers)

    def run(self) -> int:
        """Serve until stopped (``stop``) or a limit ends it; the jobs done. A worker token
        refused while running (revoked) raises ``CannotStart``."""
        if self.registry is not None and self.metrics_port is not None:
            serve_worker_metrics(self.registry, self.metrics_port, unhealthy=self.group.unhealthy)
        gc_stop = self.collect() if self.collect is not None else None
        try:
            return self.group.run()
        except TokenRefused as exc:
            raise CannotStart(f"the API refused the worker token: {exc.message}") from None
        finally:
            if gc_stop is not None:
                gc_stop.set()
            self.close()

    def stop(self, *, drain: bool = True) -> None:
        """Finish the current jobs (``drain``), or release them at once."""
        self.group.stop(drain=drain)


def build_worker(settings: Settings, *, burst: bool = False, init: bool = False) -> WorkerService:
    """The `vidq worker` of these settings: remote when ``settings.worker.server`` is set
    (the API reaps and collects), else local on the configured store and storage (waiting
    for the database; ``init`` may create a SQLite one). ``CannotStart`` for what the
    operator must fix: no GPU for ``--gpus all``, unknown pools, missing weights, a refused
    worker token, no data folder."""
    load_models(settings)
    try:
        devices = resolve_gpus(settings.worker.gpus, os.environ)
    except EngineUnavailable as exc:
        raise CannotStart(f"refusing to start: {exc.message}") from None
    source: Source
    reaper: Reaper | None = None
    collect: Callable[[], threading.Event] | None = None
    if settings.worker.server is not None:
        source, options = remote_source(settings, burst=burst)
        close: Callable[[], None] = source.close
    else:
        options = worker_options(settings, burst=burst)  # refuses missing weights first
        backends = open_backends(settings, create=init, patient=True)
        source, reaper, close = (
            LocalSource(backends.store, backends.storage),
            backends.store,
            (backends.close),
        )
        if not burst:  # a burst worker drains the queue and goes: it leaves no one to collect
            collect = functools.partial(
                start_collector, settings, backends.store, backends.storage,
                process_name("worker"),
            )  # fmt: skip
    registry = None
    metrics = None
    if settings.worker.metrics_port is not None:
        registry = CollectorRegistry(auto_describe=True)
        metrics = WorkerMetrics(registry)
    limits = RunLimits(settings.worker.max_jobs, settings.worker.max_idle_seconds)
    group = WorkerGroup.build(source, options, devices, metrics=metrics, limits=limits,
                              reaper=reaper)  # fmt: skip
    return WorkerService(
        group=group, limits=limits, close=close, registry=registry,
        metrics_port=settings.worker.metrics_port, collect=collect,
    )  # fmt: skip


# --- the API ----------------------------------------------------------------------------------
@dataclasses.dataclass
class ApiService:
    """A `vidq serve` process: the app over its backends, its in-process workers and the
    retention collector (which every API runs, with or without workers: an API-only
    deployment whose workers are remote must still collect). ``start`` before serving the
    app, ``stop`` after."""

    app: FastAPI
    backends: Backends
    workers: list[Worker]
    settings: Settings
    admin_token: str | None = None  # made for a store that had no token, shown once
    _threads: list[threading.Thread] = dataclasses.field(default_factory=list)
    _gc_stop: threading.Event | None = None

    def start(self) -> None:
        """Start the in-process workers and the collector."""
        b = self.backends
        self._gc_stop = start_collector(self.settings, b.store, b.storage, process_name("api"))
        self._threads = [
            threading.Thread(target=w.run, name=f"vidq-worker-{i}", daemon=True)
            for i, w in enumerate(self.workers)
        ]
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop the collector, let the workers finish their jobs within ``drain_seconds``
        (then release them), and close the backends."""
        if self._gc_stop is not None:
            self._gc_stop.set()
        for w in self.workers:
            w.stop(drain=True)
        for t in self._threads:
            t.join(self.settings.worker.drain_seconds)
        for w in self.workers:
            w.stop(drain=False)
        for t in self._threads:
            t.join(10)
        self.backends.close()


def build_api(settings: Settings, *, create: bool = True) -> ApiService:
    """The `vidq serve` of these settings: the store (created if it is a new SQLite one,
    waiting for an unreachable database), an admin token when the store has none, the app,
    and ``settings.server.workers`` in-process workers sharing the app's metrics."""
    from vidq.api.app import create_app  # the web framework: a worker process never loads it
    from vidq.api.auth import create_token

    load_models(settings)
    options = [worker_options(settings, name=f"serve-{i}") for i in range(settings.server.workers)]
    backends = open_backends(settings, create=create, patient=True)
    store = backends.store
    admin = None
    if not store.list_tokens():
        admin = create_token(store, "admin", max_priority=1000, admin=True)
    registry = CollectorRegistry(auto_describe=True)
    metrics = WorkerMetrics(registry) if options else None
    source = LocalSource(store, backends.storage)
    workers = [Worker(source, o, metrics, reaper=store) for o in options]
    app = create_app(settings, store, backends.storage, registry=registry)
    return ApiService(app, backends, workers, settings, admin_token=admin)
