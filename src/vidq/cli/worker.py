"""``vidq worker``: a local or remote worker process, one slot per GPU."""

from __future__ import annotations

import logging
import signal
from typing import Annotated

import typer

from vidq.cli import common
from vidq.cli.common import DataDir, Init, cannot_start, configure_logging, say_database
from vidq.errors import CannotStart


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
    warmup: Annotated[
        bool | None,
        typer.Option(
            "--warmup",
            help="Also run one tiny generation on each engine before the first claim "
            "(VIDQ_WARMUP).",
        ),
    ] = None,
    init: Init = False,
) -> None:
    """Run one worker process on the configured job store and storage (it also runs the
    retention collector, one process of the fleet at a time), or with ``--server`` a
    remote worker that reaches only the API (docs/remote-workers.md)."""
    from vidq.compose import build_worker

    settings = common.load_settings(
        data_dir=data_dir,
        worker={
            "pools": pools, "metrics_port": metrics_port, "gpus": gpus, "max_jobs": max_jobs,
            "max_idle_seconds": max_idle, "server": server, "worker_token": token,
            "insecure_http": insecure_http, "warmup": warmup,
        },
    )  # fmt: skip
    configure_logging(settings)
    try:
        service = build_worker(settings, burst=burst, init=init)
    except CannotStart as exc:
        cannot_start(exc)
    if settings.worker.server is None:
        say_database(settings)
    signals = {"count": 0}

    def on_signal(signum: int, frame: object) -> None:
        signals["count"] += 1
        # First signal: finish the current job; second: release it and exit now.
        service.stop(drain=signals["count"] == 1)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        done = service.run()
    except CannotStart as exc:  # the worker token was revoked while running
        cannot_start(exc)
    reason = service.limits.reason
    # a log line, not a bare echo: with VIDQ_LOG_FORMAT=json every stderr line is JSON
    logging.getLogger("vidq.worker").info(
        "worker finished %d jobs%s", done, f" ({reason})" if reason else "",
        extra={"worker": service.name},
    )  # fmt: skip
    if burst and service.engine_down:
        raise typer.Exit(3)  # its engine is down: the queue was not drained
