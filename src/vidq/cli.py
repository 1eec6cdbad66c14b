"""The composition root: builds Settings, picks adapters, configures logging, runs things."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from vidq import cli_admin, cli_client
from vidq.config import Settings
from vidq.ops.logs import JsonFormatter, LogSetup
from vidq.ops.logs import configure_logging as configure
from vidq.store.base import Quota, Token, Usage

app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="vidq: self-hosted video generation."
)
token_app = typer.Typer(no_args_is_help=True, help="Manage API tokens.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
models_app = typer.Typer(no_args_is_help=True, help="Local model weights.")
app.add_typer(token_app, name="token")
app.add_typer(db_app, name="db")
app.add_typer(models_app, name="models")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Data folder (VIDQ_DATA_DIR).")]
Init = Annotated[
    bool,
    typer.Option(
        "--init",
        help="Create the data folder and its SQLite database if they do not exist "
        "(`vidq serve` does; otherwise a missing one is an error).",
    ),
]


def log_setup(settings: Settings) -> LogSetup:
    """How every process of this command logs (engine children included)."""
    return LogSetup(level=settings.log_level, format=settings.log_format)


def configure_logging(settings: Settings) -> None:
    configure(log_setup(settings))


def collector(settings: Settings, store: Any, storage: Any, holder: str) -> Any:
    """The retention collector with the configured TTLs."""
    from vidq.ops.retention import Collector, RetentionPolicy

    r = settings.retention
    policy = RetentionPolicy(
        input_ttl=r.input_ttl,
        output_ttl=r.output_ttl,
        job_ttl=r.job_ttl,
        upload_ttl=r.upload_ttl,
        batch=r.gc_batch,
    )
    return Collector(store, storage, policy, holder)


def start_collector(settings: Settings, store: Any, storage: Any, holder: str) -> threading.Event:
    """Run the collector every ``gc_interval`` in a daemon thread (one process of the fleet
    collects at a time); set the returned event to stop it."""
    from vidq.ops.retention import run_periodically

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


def open_job_store(settings: Settings, *, create: bool) -> Any:
    """The job store of a command, and a line on stderr saying which one it is.

    A SQLite database that does not exist is created only when ``create`` (``vidq serve``,
    ``--init``): run from another folder, any other command would make a new, empty data
    folder that no server reads, so it stops here with exit 2 and says how to point it at
    the right one. A PostgreSQL database is never created by vidq."""
    from vidq.store import open_store

    url = settings.resolved_database_url()
    path = _sqlite_path(url)
    if path is not None and not create and not path.is_file():
        typer.echo(f"error: {_no_database(settings, path)}", err=True)
        raise typer.Exit(2)
    _say_database(settings)
    return open_store(url)


def _say_database(settings: Settings) -> None:
    """Say on stderr which database this command uses (stdout stays the command's own);
    with ``VIDQ_LOG_FORMAT=json`` as a JSON line, as every other stderr line then is."""
    line = f"vidq: using {_database(settings)}"
    if settings.log_format == "json":
        record = logging.makeLogRecord(
            {"name": "vidq.cli", "levelno": logging.INFO, "levelname": "INFO", "msg": line}
        )
        line = JsonFormatter().format(record)
    typer.echo(line, err=True)


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def _database(settings: Settings) -> str:
    """The configured database as a user would look for it (a password masked)."""
    from vidq.config_doc import mask

    url = settings.resolved_database_url()
    path = _sqlite_path(url)
    if settings.store.database_url is None:
        return f"data folder {settings.data_dir.resolve()} (database {path})"
    return f"database {path or mask(url)} (VIDQ_DATABASE_URL)"


def _no_database(settings: Settings, path: Path) -> str:
    """Why a command found no SQLite database at ``path``, and what to do, in one line."""
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


def open_backends(settings: Settings, *, create: bool = False) -> tuple[Any, Any]:
    """The job store (``open_job_store``) and the blob storage of a command."""
    from vidq.storage import load_secret, open_storage

    store = open_job_store(settings, create=create)
    key = settings.storage.secret_key
    secret = load_secret(settings.data_dir, key.get_secret_value() if key else None)
    storage = open_storage(
        settings.resolved_storage_url(), secret=secret, bucket=settings.storage.bucket
    )
    return store, storage


def _open_backends_patiently(settings: Settings, *, create: bool) -> tuple[Any, Any]:
    """open_backends, waiting out a database that is not reachable yet (a worker started
    during an outage, or before the database) instead of exiting."""
    import time

    from vidq.errors import StoreUnavailable

    while True:
        try:
            return open_backends(settings, create=create)
        except StoreUnavailable as exc:
            logging.getLogger("vidq.worker").warning("waiting for the database: %s", exc)
            time.sleep(2.0)


def worker_options(
    settings: Settings,
    *,
    burst: bool = False,
    name: str = "",
    pools: tuple[str, ...] | None = None,
) -> Any:
    from vidq.catalog import POOLS
    from vidq.worker import WorkerOptions

    pools = pools or settings.worker.pools or POOLS
    unknown = sorted(set(pools) - set(POOLS))
    if unknown:
        raise typer.BadParameter(f"unknown pools: {', '.join(unknown)}; known: {', '.join(POOLS)}")
    require_wan_weights(settings, pools)
    return WorkerOptions(
        pools=pools,
        engines={p: settings.worker.engine_for(p) for p in pools},
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
    )


def remote_backends(settings: Settings, *, burst: bool) -> tuple[Any, Any, Any]:
    """A remote worker's store, storage and options: the API's ``/worker/v1`` routes,
    with the server's lease and the worker token's pools (default: all of them)."""
    import time

    from vidq.errors import ServiceUnavailable
    from vidq.worker.remote import CLAIM_WAIT_S, RemoteAPI, RemoteBlobs, RemoteStore, TokenRefused

    secret = settings.worker.worker_token
    if secret is None:
        raise typer.BadParameter("a remote worker needs a worker token", param_hint="--token")
    try:
        api = RemoteAPI(
            settings.worker.server or "",
            secret.get_secret_value(),
            insecure_http=settings.worker.insecure_http,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--server") from None
    log = logging.getLogger("vidq.worker")
    while True:  # wait out an API that is not up yet, as a local worker waits for its database
        try:
            answer = api.call("GET", "/config")
            break
        except ServiceUnavailable as exc:
            log.warning("waiting for the API: %s", exc.message)
            time.sleep(2.0)
        except TokenRefused as exc:
            typer.echo(f"the API refused the worker token: {exc.message}", err=True)
            raise typer.Exit(2) from None
    if answer.status_code != 200:
        typer.echo(
            f"{api.server} answered {answer.status_code} to /worker/v1/config: not a vidq API "
            "with the worker protocol, or not a worker token",
            err=True,
        )
        raise typer.Exit(2)
    config = answer.json()
    allowed = tuple(config["pools"])
    pools = settings.worker.pools or allowed
    refused = sorted(set(pools) - set(allowed))
    if refused:
        raise typer.BadParameter(
            f"this worker token may not claim from {', '.join(refused)}", param_hint="--pools"
        )
    options = worker_options(settings, burst=burst, pools=pools)
    options = dataclasses.replace(options, lease_s=float(config["lease_s"]))
    store = RemoteStore(api, wait_s=0.0 if burst else CLAIM_WAIT_S, lease_s=options.lease_s)
    return store, RemoteBlobs(store), options


def _run_worker(w: Any) -> int:
    """``w.run()``; a worker token refused while running (revoked) ends it with exit 2."""
    from vidq.worker.remote import TokenRefused

    try:
        done: int = w.run()
    except TokenRefused as exc:
        typer.echo(f"the API refused the worker token: {exc.message}", err=True)
        raise typer.Exit(2) from None
    return done


def wan_problems(settings: Settings, pools: tuple[str, ...]) -> list[str]:
    """Why the wan engine cannot serve ``pools`` here (missing weights); empty when it can."""
    from vidq.catalog import MODELS
    from vidq.engines.wan_layout import missing_message, wan_weights

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


def require_wan_weights(settings: Settings, pools: tuple[str, ...]) -> None:
    """Refuse to start workers for wan pools whose weights are missing."""
    problems = wan_problems(settings, pools)
    if problems:
        typer.echo("refusing to start: " + "\n".join(problems), err=True)
        typer.echo("(see `vidq models check`)", err=True)
        raise typer.Exit(2)


@models_app.command("check")
def models_check(
    models_dir: Annotated[
        Path | None, typer.Option("--models-dir", help="Weights folder (VIDQ_MODELS_DIR).")
    ] = None,
) -> None:
    """Report, per model id of the wan engine, which weight files are present and missing."""
    from vidq.catalog import MODELS
    from vidq.engines.wan_layout import wan_weights

    wan = Settings.load(wan={"models_dir": models_dir}).wan
    if wan.models_dir is None:
        typer.echo("VIDQ_MODELS_DIR (or --models-dir) is not set", err=True)
        raise typer.Exit(2)
    typer.echo(f"models dir: {wan.models_dir} (wan base: {wan.base})")
    incomplete = 0
    for model in MODELS.values():
        if model.family.value not in ("t2v", "i2v"):
            typer.echo(f"{model.id}: not a wan-engine model (engine of pool {model.pool})")
            continue
        weights = wan_weights(wan.models_dir, model.family.value, wan.base)
        missing = set(weights.missing())
        incomplete += bool(missing)
        note = " (fp8: also needs a GPU of compute capability 8.9+ and torchao)"
        state = "MISSING" if missing else "ok"
        typer.echo(f"{model.id}: {state}{note if model.variant == 'fp8' else ''}")
        for path in weights.required():
            typer.echo(f"  {'missing' if path in missing else 'present'}: {path}")
    if incomplete:
        raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    data_dir: DataDir = None,
    workers: Annotated[int | None, typer.Option(help="In-process workers (0: API only).")] = None,
    ssl_certfile: Annotated[
        Path | None, typer.Option(help="Serve HTTPS with this PEM certificate (chain).")
    ] = None,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="The certificate's PEM key.")] = None,
) -> None:
    """Run the API and N in-process workers on the embedded (or configured) backends."""
    import uvicorn
    from prometheus_client import CollectorRegistry

    from vidq.api import create_app
    from vidq.api.auth import create_token
    from vidq.ops.metrics import WorkerMetrics
    from vidq.worker import Worker

    settings = Settings.load(
        data_dir=data_dir, server={"host": host, "port": port, "workers": workers}
    )
    configure_logging(settings)
    store, storage = _open_backends_patiently(settings, create=True)
    if not store.list_tokens():
        token = create_token(store, "admin", max_priority=1000, admin=True)
        typer.echo(f"Created admin token (shown once, keep it): {token}")
    registry = CollectorRegistry(auto_describe=True)
    metrics = WorkerMetrics(registry) if settings.server.workers else None
    pool = [
        Worker(store, storage, worker_options(settings, name=f"serve-{i}"), metrics)
        for i in range(settings.server.workers)
    ]
    # Every API collects (one process of the fleet at a time, under the gc lease), with or
    # without in-process workers: an API-only deployment with remote workers, which do not
    # collect, would otherwise keep inputs, outputs, uploads and rows forever.
    holder = f"api@{socket.gethostname()}:{os.getpid()}"
    gc_stop = start_collector(settings, store, storage, holder)
    threads = [
        threading.Thread(target=w.run, name=f"vidq-worker-{i}", daemon=True)
        for i, w in enumerate(pool)
    ]
    for t in threads:
        t.start()
    config = uvicorn.Config(
        create_app(settings, store, storage, registry=registry),
        host=settings.server.host,
        port=settings.server.port,
        log_config=None,
        server_header=False,
        ssl_certfile=str(ssl_certfile) if ssl_certfile else None,
        ssl_keyfile=str(ssl_keyfile) if ssl_keyfile else None,
    )
    scheme = "https" if ssl_certfile else "http"
    server = settings.server
    typer.echo(f"vidq serving on {scheme}://{server.host}:{server.port} ({server.workers} workers)")
    try:
        uvicorn.Server(config).run()
    finally:
        gc_stop.set()
        for w in pool:
            w.stop(drain=True)
        for t in threads:
            t.join(settings.worker.drain_seconds)
        for w in pool:
            w.stop(drain=False)
        for t in threads:
            t.join(10)
        store.close()


@app.command()
def worker(
    data_dir: DataDir = None,
    pools: Annotated[str | None, typer.Option(help="Comma-separated pools (default: all).")] = None,
    burst: Annotated[bool, typer.Option("--burst", help="Drain the queue, then exit.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve this worker's /metrics and /health on this port (VIDQ_METRICS_PORT)."
        ),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            help="One job slot per GPU, each engine pinned by CUDA_VISIBLE_DEVICES: `all` "
            "or indices such as 0,1,3 (VIDQ_GPUS). Unset: one job at a time."
        ),
    ] = None,
    max_jobs: Annotated[
        int | None,
        typer.Option(help="Exit (code 0) after this many jobs, across all slots (VIDQ_MAX_JOBS)."),
    ] = None,
    max_idle: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="Exit (code 0) after this long with no job running (VIDQ_MAX_IDLE_SECONDS).",
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(help="Remote worker: the API's URL (VIDQ_SERVER); no database needed."),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="Remote worker: a worker token (VIDQ_WORKER_TOKEN).")
    ] = None,
    insecure_http: Annotated[
        bool | None,
        typer.Option("--insecure-http", help="Remote worker: allow http:// beyond loopback."),
    ] = None,
    init: Init = False,
) -> None:
    """Run one worker process on the configured job store and storage (it also runs the
    retention collector, one process of the fleet at a time), or with ``--server`` a
    remote worker that reaches only the API (docs/remote-workers.md)."""
    from prometheus_client import CollectorRegistry

    from vidq.errors import EngineUnavailable
    from vidq.ops.metrics import WorkerMetrics, serve_worker_metrics
    from vidq.worker.limits import RunLimits
    from vidq.worker.slots import WorkerGroup, resolve_gpus

    settings = Settings.load(
        data_dir=data_dir,
        worker={
            "pools": pools, "metrics_port": metrics_port, "gpus": gpus, "max_jobs": max_jobs,
            "max_idle_seconds": max_idle, "server": server, "worker_token": token,
            "insecure_http": insecure_http,
        },
    )  # fmt: skip
    configure_logging(settings)
    try:
        devices = resolve_gpus(settings.worker.gpus, os.environ)
    except EngineUnavailable as exc:
        typer.echo(f"refusing to start: {exc.message}", err=True)
        raise typer.Exit(2) from None
    remote = settings.worker.server is not None
    if remote:
        store, storage, options = remote_backends(settings, burst=burst)
    else:
        options = worker_options(settings, burst=burst)  # refuses missing weights first
        store, storage = _open_backends_patiently(settings, create=init)
    metrics = None
    if settings.worker.metrics_port is not None:
        registry = CollectorRegistry(auto_describe=True)
        metrics = WorkerMetrics(registry)
    limits = RunLimits(settings.worker.max_jobs, settings.worker.max_idle_seconds)
    w = WorkerGroup.build(store, storage, options, devices, metrics=metrics, limits=limits)
    if metrics is not None and settings.worker.metrics_port is not None:
        serve_worker_metrics(registry, settings.worker.metrics_port, unhealthy=w.unhealthy)
    gc_stop = None if burst or remote else start_collector(settings, store, storage, w.name)
    signals = {"count": 0}

    def on_signal(signum: int, frame: object) -> None:
        signals["count"] += 1
        # First signal: finish the current job; second: release it and exit now.
        w.stop(drain=signals["count"] == 1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        done = _run_worker(w)
    finally:
        if gc_stop is not None:
            gc_stop.set()
        store.close()
    # a log line, not a bare echo: with VIDQ_LOG_FORMAT=json every stderr line is JSON
    logging.getLogger("vidq.worker").info(
        "worker finished %d jobs%s", done, f" ({limits.reason})" if limits.reason else "",
        extra={"worker": w.name},
    )  # fmt: skip


@app.command()
def gc(
    data_dir: DataDir = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    init: Init = False,
) -> None:
    """Delete expired inputs, outputs and job rows now (VIDQ_INPUT_TTL, VIDQ_OUTPUT_TTL,
    VIDQ_JOB_TTL); prints a JSON report. Waits for no one: exits 3 if another process is
    collecting."""
    import json
    import os
    import socket

    settings = Settings.load(data_dir=data_dir)
    configure_logging(settings)
    store, storage = open_backends(settings, create=init)
    try:
        c = collector(settings, store, storage, f"gc@{socket.gethostname()}:{os.getpid()}")
        report = c.dry_run() if dry_run else c.run_once(lease_s=settings.retention.gc_lease)
    finally:
        store.close()
    if report is None:
        typer.echo("another process is collecting (the gc lease is taken)", err=True)
        raise typer.Exit(3)
    typer.echo(json.dumps({"dry_run": dry_run, **report.as_json()}, indent=2))


_LIMIT_HELP = "N, or 0 / none: unlimited"
Limit = Annotated[str | None, typer.Option(metavar="N|none", help=_LIMIT_HELP)]
_LIFT = "lift"  # parse_limit's answer for 0 / none: the limit is lifted


def parse_limit(value: str | None, option: str) -> int | str | None:
    """A limit option: None if absent, ``_LIFT`` for ``0``/``none``, else a positive
    integer; a clear error naming the option otherwise."""
    if value is None:
        return None
    text = value.strip().lower()
    if text in ("0", "none", "unlimited"):
        return _LIFT
    if not text.isdigit() or int(text) > 2**31:
        raise typer.BadParameter(
            f"{value!r} is not a whole number of at least 0 (0 or none: unlimited)",
            param_hint=f"--{option}",
        )
    return int(text)


def _quota(base: Quota, options: dict[str, str | None]) -> Quota:
    """``base`` with the limits given on the command line."""
    changes: dict[str, int | None] = {}
    for name, raw in options.items():
        parsed = parse_limit(raw, name.replace("_", "-"))
        if parsed is not None:
            changes[name] = None if parsed == _LIFT else int(parsed)
    return dataclasses.replace(base, **changes)


def _max_priority(value: int | None) -> int | None:
    if value is not None and value < 0:
        raise typer.BadParameter("must be at least 0", param_hint="--max-priority")
    return value


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Option(help="The user this token acts as.")],
    max_priority: Annotated[
        int, typer.Option(help="Highest priority this token may ask for.")
    ] = 100,
    admin: Annotated[bool, typer.Option("--admin", help="May read operators' routes.")] = False,
    max_queued: Limit = None,
    max_running: Limit = None,
    rate_per_minute: Limit = None,
    daily_video_seconds: Limit = None,
    data_dir: DataDir = None,
    worker: Annotated[
        bool,
        typer.Option(
            "--worker", help="A worker token: only the /worker/v1 routes (remote workers)."
        ),
    ] = False,
    pools: Annotated[
        str | None, typer.Option(help="With --worker: the pools it may claim from (default: all).")
    ] = None,
    init: Init = False,
) -> None:
    """Create a token; prints only the token on stdout. Limits not given come from the
    VIDQ_DEFAULT_* settings (unlimited unless set)."""
    from vidq.api.auth import create_token

    worker_pools = _worker_pools(worker, admin, pools)
    if not user.strip() or len(user) > 200:
        raise typer.BadParameter("user must be 1-200 characters")
    _max_priority(max_priority)
    settings = Settings.load(data_dir=data_dir)
    limits = settings.limits
    defaults = Quota(
        max_queued=limits.default_max_queued,
        max_running=limits.default_max_running,
        rate_per_minute=limits.default_rate_per_minute,
        daily_video_seconds=limits.default_daily_video_seconds,
    )
    quota = _quota(
        defaults,
        {
            "max_queued": max_queued, "max_running": max_running,
            "rate_per_minute": rate_per_minute, "daily_video_seconds": daily_video_seconds,
        },
    )  # fmt: skip
    store = open_job_store(settings, create=init)
    token = create_token(
        store, user.strip(), max_priority=max_priority, admin=admin, quota=quota,
        worker=worker, pools=worker_pools,
    )  # fmt: skip
    typer.echo(token)


def _worker_pools(worker: bool, admin: bool, pools: str | None) -> tuple[str, ...] | None:
    """The pools of a worker token (None: every pool); checks the role options."""
    from vidq.catalog import POOLS

    if pools is not None and not worker:
        raise typer.BadParameter("only worker tokens have pools", param_hint="--pools")
    if worker and admin:
        raise typer.BadParameter(
            "a token is either a worker's or an admin's", param_hint="--worker"
        )
    names = tuple(p.strip() for p in (pools or "").split(",") if p.strip())
    unknown = sorted(set(names) - set(POOLS))
    if unknown:
        raise typer.BadParameter(
            f"unknown pools: {', '.join(unknown)}; known: {', '.join(POOLS)}", param_hint="--pools"
        )
    return names or None


@token_app.command("update")
def token_update(
    token_id: Annotated[int, typer.Argument(help="Token id (see `token list`).")],
    max_priority: Annotated[
        int | None, typer.Option(help="Highest priority this token may ask for.")
    ] = None,
    max_queued: Limit = None,
    max_running: Limit = None,
    rate_per_minute: Limit = None,
    daily_video_seconds: Limit = None,
    data_dir: DataDir = None,
    init: Init = False,
) -> None:
    """Change a token's limits (options not given stay as they are). ``max_running``
    applies to requests submitted afterwards."""
    _max_priority(max_priority)
    options = {
        "max_queued": max_queued, "max_running": max_running,
        "rate_per_minute": rate_per_minute, "daily_video_seconds": daily_video_seconds,
    }  # fmt: skip
    for name, raw in options.items():  # bad values fail before the store is opened
        parse_limit(raw, name.replace("_", "-"))
    store = open_job_store(Settings.load(data_dir=data_dir), create=init)
    current = next((t for t in store.list_tokens() if t.id == token_id and not t.revoked), None)
    if current is None:
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    quota = _quota(current.quota, options)
    priority = current.max_priority if max_priority is None else max_priority
    updated = store.update_token(token_id, priority, quota)
    if updated is None:
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(TOKEN_HEADER)
    typer.echo(_token_line(updated, None))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="Token id (see `token list`).")],
    data_dir: DataDir = None,
    init: Init = False,
) -> None:
    """Revoke a token by id."""
    store = open_job_store(Settings.load(data_dir=data_dir), create=init)
    if not store.revoke_token(token_id):
        typer.echo(f"no live token with id {token_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked token {token_id}")


@token_app.command("list")
def token_list(data_dir: DataDir = None, init: Init = False) -> None:
    """List tokens (ids, users, limits and their users' current usage; never the tokens
    themselves)."""
    store = open_job_store(Settings.load(data_dir=data_dir), create=init)
    usage: dict[str, Usage] = {}
    typer.echo(TOKEN_HEADER)
    for t in store.list_tokens():
        if not t.revoked and t.user not in usage:
            usage[t.user] = store.usage(t.user)
        typer.echo(_token_line(t, usage.get(t.user)))


# The columns of ``token list`` (tab-separated, as its rows).
TOKEN_HEADER = "\t".join(
    ["ID", "USER", "MAX_PRIORITY", "ROLE", "STATE", "QUEUED", "RUNNING", "PER_MINUTE",
     "VIDEO_S_TODAY"]
)  # fmt: skip


def _token_line(t: Token, usage: Usage | None) -> str:
    """One token as ``token list`` shows it (``TOKEN_HEADER``): limits as used/limit, or
    the limit alone without usage (``-``: unlimited)."""
    state = "revoked" if t.revoked else "active"
    role = "admin" if t.admin else "user"
    if t.worker:
        role = f"worker(pools={','.join(t.pools) if t.pools else 'all'})"
    q = t.quota

    def shown(limit: int | None, used: float | None) -> str:
        cap = "-" if limit is None else str(limit)
        return cap if used is None else f"{used:g}/{cap}"

    u = usage
    today = None if u is None else u.video_seconds_today
    return "\t".join(
        [
            str(t.id), t.user, str(t.max_priority), role, state,
            shown(q.max_queued, None if u is None else u.queued),
            shown(q.max_running, None if u is None else u.running),
            shown(q.rate_per_minute, None if u is None else u.last_minute),
            shown(q.daily_video_seconds, today),
        ]
    )  # fmt: skip


@app.command("config")
def config_show(data_dir: DataDir = None) -> None:
    """Print the effective settings: group, name, variable, value and where it came from
    (env, flag, default). Passwords, tokens and keys are masked."""
    from vidq.config_doc import effective

    settings = Settings.load(data_dir=data_dir)
    rows = [("GROUP", "NAME", "VARIABLE", "VALUE", "SOURCE")]
    flags = frozenset({"data_dir"} if data_dir is not None else ())
    for row in effective(settings, flags):
        info = row.info
        rows.append((info.group, info.name, info.env, row.value or "(unset)", row.source))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        cells = [c.ljust(w) for c, w in zip(r[:4], widths, strict=True)]
        typer.echo("  ".join([*cells, r[4]]))


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDir = None) -> None:
    """Apply the migration history to the configured database (a SQLite database that does
    not exist yet is created)."""
    from vidq.store.migrate import upgrade

    settings = Settings.load(data_dir=data_dir)
    url = settings.resolved_database_url()
    path = _sqlite_path(url)
    if path is not None:  # the explicit migration command may create a SQLite database
        path.parent.mkdir(parents=True, exist_ok=True)
    _say_database(settings)
    upgrade(url)
    typer.echo("database is up to date")


cli_client.register(app)  # login, submit, status, cancel, result, requests
app.add_typer(cli_admin.app, name="admin")  # the admin routes, over HTTP


def main() -> None:
    from pydantic import ValidationError
    from pydantic_settings import BaseSettings

    from vidq.config import GROUPS, env_name

    classes: dict[str, type[BaseSettings]] = {cls.__name__: cls for cls in GROUPS.values()}
    classes["Settings"] = Settings
    try:
        app()
    except ValidationError as exc:
        model = classes.get(exc.title)
        if model is None:
            raise  # not a setting: a bug, keep its traceback
        # A flag or VIDQ_* value the settings refuse: name it, in one line, exit 2.
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            where = env_name(model, field) if field in model.model_fields else exc.title
            typer.echo(f"invalid setting {where} ({field}): {err['msg']}", err=True)
        raise SystemExit(2) from None
