"""Runs an engine in a child process, so a crash or an out-of-memory error in
native code fails one attempt, not the worker.

Parent and child speak JSON over a pipe (never pickle), in the typed messages of
``child_messages.py``: the child says ``Ready`` (or ``LoadFailed``) once, the parent sends
``RunJob``, the child answers ``Progress`` and ``PreviewReady`` (a new live preview in
the job's preview file) any number of times, then ``Finished`` or ``Failed``. The child
is started once per worker and engine and reused for every job, so
weights load once. The engine is built in the child from its settings group and pools,
sent as JSON (``vidq.engines.engine_options``).

A child of a GPU slot (``vidq worker --gpus``) is pinned to its device: it sets
``CUDA_VISIBLE_DEVICES`` to that one GPU before it builds the engine, so CUDA (and torch)
in the child see exactly that device as ``cuda:0``; the results it sends name the device
(``meta["device"]``, read back from the child's own environment).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
import traceback
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from pathlib import Path

from pydantic import BaseModel

from vidq.engines import engine_options, preload_modules
from vidq.engines.base import EngineJob, EngineResult
from vidq.errors import EngineCrashed, EngineError, LeaseLost, VidqError
from vidq.ops.logs import LogSetup, configure_logging
from vidq.worker.child_messages import (
    Failed,
    Failure,
    Finished,
    LoadFailed,
    Message,
    PreviewReady,
    Probe,
    ProbeResult,
    Progress,
    Ready,
    RunJob,
    decode,
    encode,
)

log = logging.getLogger(__name__)


def _send(conn: Connection, message: Message) -> None:
    conn.send_bytes(encode(message))


def _recv(conn: Connection) -> Message:
    return decode(conn.recv_bytes())


def _child_main(
    engine_name: str, options_json: str, conn: Connection, logs_json: str, gpu: str | None = None
) -> None:
    if gpu is not None:  # first: before anything here can initialise CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    from vidq.engines import create_engine
    from vidq.engines.previews import PreviewWriter  # PIL and numpy: the child's, not the parent's

    configure_logging(LogSetup(**json.loads(logs_json)))  # as its worker logs
    device = os.environ.get("CUDA_VISIBLE_DEVICES") if gpu is not None else None

    started = time.monotonic()
    try:
        engine = create_engine(engine_name, json.loads(options_json))
        engine.load()
    except Exception as exc:
        _send(conn, LoadFailed(describe(exc)))
        return
    log.info(
        "engine %s loaded in %.2f s%s", engine_name, time.monotonic() - started,
        f" on CUDA_VISIBLE_DEVICES={device}" if device is not None else "",
    )  # fmt: skip
    _send(conn, Ready())
    while True:
        try:
            message = _recv(conn)
        except (EOFError, OSError):
            return
        if isinstance(message, Probe):
            _send(conn, ProbeResult(_probe(engine)))
            continue
        if not isinstance(message, RunJob):
            continue  # the parent sends jobs and probes only
        job = message.job
        previews = PreviewWriter(
            job.preview_path, job.preview_interval_s,
            lambda step: _send(conn, PreviewReady(step)),
        )  # fmt: skip
        try:
            result = engine.run(
                job, lambda done, total: _send(conn, Progress(done, total)), previews
            )
            if device is not None:
                result = dataclasses.replace(result, meta={**result.meta, "device": device})
            if previews.published:  # what showing the run cost it
                result = dataclasses.replace(result, meta={
                    **result.meta, "previews": previews.published,
                    "preview_seconds": round(previews.seconds, 4),
                })  # fmt: skip
            _send(conn, Finished(_described(job, result)))
        except Exception as exc:
            _send(conn, Failed(describe(exc)))


def _described(job: EngineJob, result: EngineResult) -> EngineResult:
    """``result`` with what the answers report of its video (``meta["video"]``: size, frame
    rate and length; None when it cannot be read), and its poster frame written to the
    job's ``poster_path``: advisory, a video it cannot decode has none. The child does both
    since it holds PyAV, NumPy and Pillow already (its fork server imported them), so the
    worker process never loads them."""
    from vidq.media.poster import make_poster
    from vidq.media.video import output_facts

    output = Path(job.output_path)
    if job.poster_path:
        try:
            make_poster(output, Path(job.poster_path))
        except VidqError as exc:
            log.warning("no poster frame: %s", exc.message, extra={"job_id": job.request_id})
    return dataclasses.replace(result, meta={**result.meta, "video": output_facts(output)})


def _probe(engine: object) -> str | None:
    """The engine's own probe (``Engine.probe``); an engine without one is up."""
    probe = getattr(engine, "probe", None)
    if probe is None:
        return None
    try:
        reason = probe()
    except Exception as exc:
        return f"the probe failed: {type(exc).__name__}: {exc}"
    return None if reason is None else str(reason)


def describe(exc: BaseException) -> Failure:
    """How the child reports ``exc``: an ``EngineError`` is the user's to read and final;
    anything else is an internal error, retried, with its traceback for the log."""
    user_facing = isinstance(exc, EngineError)
    return Failure(
        type=type(exc).__name__,
        message=str(exc) if user_facing else f"{type(exc).__name__}: {exc}",
        retryable=not user_facing,
        traceback="" if user_facing else traceback.format_exc(limit=8),
        # The engine asks for a fresh process (e.g. after a GPU out-of-memory error).
        restart=bool(getattr(exc, "restart_child", False)),
        down=bool(getattr(exc, "backend_down", False)),
    )


class EngineFailed(EngineError):
    """The engine reported an error for this attempt."""

    def __init__(
        self, message: str, error_type: str, retryable: bool, *, down: bool = False
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.retryable = retryable
        self.down = down  # the engine's backend is unreachable (``Failure.down``)


class EngineLoadFailed(EngineFailed):
    """The engine child did not start: its engine failed to load, or it died first."""


class EngineProcess:
    """A long-lived engine child process (see module docstring): engine ``engine_name``
    built with ``settings`` (its settings group; None: the defaults) for ``pools``, pinned
    to GPU ``gpu`` (a ``CUDA_VISIBLE_DEVICES`` entry; None: the worker's own devices)."""

    def __init__(
        self,
        engine_name: str,
        settings: BaseModel | None = None,
        pools: Iterable[str] = (),
        *,
        logs: LogSetup | None = None,
        gpu: str | None = None,
    ) -> None:
        self.engine_name = engine_name
        self.gpu = gpu
        self.options = engine_options(settings, pools)
        self.logs = logs or LogSetup()
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def ready(self) -> None:
        """Start the child, or a fresh one after it died, unless it runs: its engine loaded
        (a worker loads it before it times a job's run: the load serves every job after)."""
        if not self.alive:
            self.stop()
            self.start()

    def start(self) -> None:
        """Start the child and wait until its engine is loaded."""
        ctx = multiprocessing.get_context("forkserver")
        # The fork server (one per worker process, started at its first child) imports this
        # module, the preview engine's (numpy, Pillow, PyAV) and the engine's own where that
        # loads no GPU library (``preload_modules``) once, then forks each child: a new
        # child skips Python's start-up and these imports (about a second of CPU each).
        # The server is a fresh process, started before any engine ran, so it holds no
        # threads, CUDA context or weights to fork.
        ctx.set_forkserver_preload([__name__, *preload_modules(self.engine_name)])
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_child_main,
            args=(
                self.engine_name,
                json.dumps(self.options),
                child,
                json.dumps(dataclasses.asdict(self.logs)),
                self.gpu,
            ),
            name=f"vidq-engine-{self.engine_name}"
            + ("" if self.gpu is None else f"-gpu{self.gpu}"),
            daemon=True,
        )
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        try:
            message = self._wait(lambda: False)
        except EngineCrashed as exc:
            raise EngineLoadFailed(
                f"engine {self.engine_name!r} died while loading: {exc.message}",
                "EngineCrashed",
                True,
            ) from exc
        if isinstance(message, LoadFailed):
            self.stop()
            raise EngineLoadFailed(
                f"engine {self.engine_name!r} failed to load: {message.failure.message}",
                message.failure.type,
                True,
            )

    def probe(self, timeout_s: float = 60.0) -> str | None:
        """Whether the engine can serve: None, or why not. Starts the child if it is not
        running (a load that fails is the reason), then asks the engine's own probe
        (``Probe``; an engine without one is up). A child that does not answer within
        ``timeout_s`` is stopped and that is the reason."""
        try:
            self.ready()
        except (EngineFailed, EngineCrashed) as exc:
            return exc.message
        assert self._conn is not None
        _send(self._conn, Probe())
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                message = self._wait(lambda: time.monotonic() > deadline)
                if isinstance(message, ProbeResult):
                    return message.reason
        except LeaseLost:
            return f"engine {self.engine_name!r} did not answer a probe in {timeout_s:g} s"
        except EngineCrashed as exc:
            return exc.message

    def stop(self) -> None:
        """Terminate the child (it is restarted on the next job)."""
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
                    self._proc.join(5)
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None

    def run(
        self,
        job: EngineJob,
        on_progress: Callable[[int, int], None],
        should_abort: Callable[[], bool],
        on_preview: Callable[[Path, int], None] | None = None,
    ) -> EngineResult:
        """Run one job in the child. Raises EngineCrashed if the child dies, LeaseLost if
        ``should_abort`` turns true (the child is then stopped), EngineFailed on an error.
        ``on_preview(path, step)``: a new live preview is at ``path`` (the job's
        ``preview_path``)."""
        self.ready()
        assert self._conn is not None
        _send(self._conn, RunJob(job))
        while True:
            message = self._wait(should_abort)
            if isinstance(message, Progress):
                on_progress(message.done, message.total)
            elif isinstance(message, PreviewReady):
                if on_preview is not None and job.preview_path:
                    on_preview(Path(job.preview_path), message.step)
            elif isinstance(message, Finished):
                return message.result
            elif isinstance(message, Failed):
                failure = message.failure
                if failure.traceback:
                    log.warning(
                        "engine error: %s", failure.traceback, extra={"job_id": job.request_id}
                    )
                if failure.restart:
                    self.stop()  # the next job starts a fresh child
                raise EngineFailed(
                    failure.message, failure.type, failure.retryable, down=failure.down
                )

    def _wait(self, should_abort: Callable[[], bool]) -> Message:
        assert self._conn is not None and self._proc is not None
        while True:
            if should_abort():
                self.stop()
                raise LeaseLost()
            try:
                if self._conn.poll(0.2):
                    return _recv(self._conn)
            except (EOFError, OSError):
                pass
            if not self._proc.is_alive():
                code = self._proc.exitcode
                self.stop()
                raise EngineCrashed(f"the engine process crashed (exit code {code})")
