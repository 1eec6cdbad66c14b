"""The worker loop: claim -> download inputs (and fetch LoRAs: ``loras.py``) -> engine
child -> upload -> fenced complete.

The loop speaks only to its ports (``ports.py``): a ``Source`` hands it claimed
``Attempt``s, local (``local.py``: the job store and the blob store) or remote
(``remote.py``: the API's ``/worker/v1``), and an optional ``Reaper`` (local workers).

Invariants (docs/architecture.md): every call after the claim is fenced by the attempt's
lease; an attempt whose call changes nothing has lost the job: the worker stops its engine
and keeps nothing it uploaded. A heartbeat may answer that a cancel was requested: the
worker stops the engine the same way, keeps no output and records CANCELLED
(``finish_cancel``). Outputs are uploaded under a key unique to the attempt, so a stale
worker can never overwrite the output of the attempt that won.

An engine whose backend is unreachable (a ComfyUI server down: the engine's failure says
``down``) or whose child fails to start ``load_failures`` times in a row is held down: the
job that met it is given back unspent (``release``), the worker claims nothing, says so
(``Source.announce``: ``engine_down`` with the reason; ``/health`` 503; the gauge
``vidq_worker_engine_up`` 0) and probes the engine (``EngineProcess.probe``) with a backoff
from ``probe_s`` doubling to ``probe_max_s`` until it answers; then it claims again.

What an attempt cost is measured here, for local and remote workers alike: the seconds of
the engine call on the slot's device (``jobs.Ran``), handed to whichever end the attempt
reaches (complete, fail, release, cancelled), which records it in its fenced update.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from vidq.catalog import DURATION_MIN, MODELS, SIDE_MIN, Family, Model, get_model
from vidq.engines.base import EngineJob, EngineResult
from vidq.errors import EngineCrashed, LeaseLost, ServiceUnavailable, VidqError
from vidq.jobs import Ran, WorkerState
from vidq.ops.logs import LogSetup
from vidq.ops.metrics import WorkerMetrics
from vidq.store.base import Lease
from vidq.worker.child import EngineFailed, EngineLoadFailed, EngineProcess
from vidq.worker.limits import RunLimits
from vidq.worker.loras import LoraFetcher, LoraOptions
from vidq.worker.ports import Attempt, Reaper, Source

log = logging.getLogger(__name__)

# The ``warmup`` generation: the smallest text-to-video job a model takes.
WARMUP_INPUTS = {
    "prompt": "warm-up", "width": SIDE_MIN, "height": SIDE_MIN, "duration": DURATION_MIN,
    "seed": 0,
}  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker behaves."""

    pools: tuple[str, ...]
    engines: dict[str, str]  # pool -> engine name
    # engine name -> its settings group (Settings.engine_settings()); absent: defaults
    engine_settings: Mapping[str, BaseModel] = dataclasses.field(default_factory=dict)
    lease_s: float = 30.0
    poll_s: float = 0.5
    reaper_s: float = 2.0
    burst: bool = False  # drain the queue, then exit
    drain_s: float = 30.0  # on stop, how long the current job may still run
    complete_retry_s: float = 120.0  # how long to retry a complete while the store is down
    upload_retry_s: float = 120.0  # how long to retry an upload while the storage fails
    logs: LogSetup = dataclasses.field(default_factory=LogSetup)  # how engine children log
    retry_backoff_s: float = 2.0  # a retryable failure's first wait before the next attempt
    retry_backoff_max_s: float = 60.0
    name: str = ""
    gpu: str | None = None  # the GPU slot's device (CUDA_VISIBLE_DEVICES of its engines)
    warmup: bool = False  # also run one tiny text-to-video generation before the first claim
    preview_interval_s: float = 2.0  # at most one live preview per this many seconds; 0: none
    loras: LoraOptions | None = None  # how requests' LoRAs are fetched; None: refused
    probe_s: float = 1.0  # an engine held down is probed after this long, doubling ...
    probe_max_s: float = 30.0  # ... up to this
    load_failures: int = 3  # failed starts of an engine child in a row that hold it down

    def retry_delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, with jitter so that jobs
        failed by one outage (storage down) do not all come back at the same instant."""
        nominal = min(self.retry_backoff_max_s, self.retry_backoff_s * 2.0 ** max(0, attempt - 1))
        return nominal * random.uniform(0.5, 1.0)


@dataclasses.dataclass(frozen=True, slots=True)
class Down:
    """An engine this worker holds down: why, and when it is probed next."""

    reason: str
    since: float  # time.monotonic() when it went down
    delay: float  # the wait before the next probe after this one
    next_probe: float  # time.monotonic() of the next probe


class Worker:
    """One worker (one job at a time): serves its pools until stopped, until ``limits``
    end it (shared by the GPU slots of a process), or in burst mode until idle."""

    def __init__(
        self,
        source: Source,
        options: WorkerOptions,
        metrics: WorkerMetrics | None = None,
        limits: RunLimits | None = None,
        *,
        reaper: Reaper | None = None,
    ) -> None:
        self.source = source
        self.reaper = reaper  # a local worker reaps expired leases between claims
        self.options = options
        self.metrics = metrics
        self.limits = limits or RunLimits()
        slot = f"gpu{options.gpu}" if options.gpu is not None else str(id(self) % 10_000)
        self.name = options.name or f"{socket.gethostname()}:{os.getpid()}:{slot}"
        self._engines: dict[str, EngineProcess] = {}
        self._stopping = threading.Event()
        self._abort = threading.Event()
        # time.monotonic() of the last answer from the store (or the API): a claim, a wait
        # or a heartbeat. None until the first; read by the health route (``unhealthy``).
        self.last_contact: float | None = None
        # Warm-up (``_warm``): the engine being loaded, and when the worker became ready
        # (its engines loaded) to claim; read by ``unhealthy`` and the startup metric.
        self.started = time.monotonic()
        self.ready_at: float | None = None
        self._warming = "its engines"
        self._last_reap = 0.0
        self._ran = Ran()  # what the current attempt's engine used so far (one job at a time)
        self._loras = LoraFetcher(options.loras) if options.loras is not None else None
        # Engines held down (name -> Down), replaced whole so ``unhealthy`` (another
        # thread) reads a consistent dict; failed starts in a row, per engine.
        self.down: dict[str, Down] = {}
        self._said_draining = False
        self._load_failures: dict[str, int] = {}
        self._last_idle_probe = time.monotonic()  # ``_probe_idle``

    # -- lifecycle -------------------------------------------------------------------
    def stop(self, *, drain: bool = True) -> None:
        """Ask the loop to stop after the current job (``drain``) or at once (release it)."""
        self._stopping.set()
        if not drain:
            self._abort.set()
        elif self.options.drain_s >= 0:
            # Past the drain budget the current job is released, never orphaned.
            timer = threading.Timer(self.options.drain_s, self._abort.set)
            timer.daemon = True
            timer.start()

    def close(self) -> None:
        for engine in self._engines.values():
            engine.stop()
        self._engines.clear()

    def run(self) -> int:
        """Serve until stopped; returns the number of jobs this worker finished."""
        done = 0
        log.info("worker started", extra={"worker": self.name, "pools": self.options.pools})
        try:
            self._warm()
            while not self._stopping.is_set():
                self._maybe_reap()
                if self.down:  # claim nothing until every engine answers its probe
                    if self._end_while_down():
                        break
                    self._probe_down()
                    continue
                if not self.limits.begin_claim():
                    break
                attempt: Attempt | None = None
                unavailable = False
                try:
                    attempt = self.source.claim(
                        self.name, self.options.pools, self.options.engines, self.options.lease_s
                    )
                    self.last_contact = time.monotonic()
                except ServiceUnavailable as exc:
                    log.warning("store unavailable, retrying: %s", exc, extra={"worker": self.name})
                    unavailable = True
                finally:
                    self.limits.end_claim(attempt is not None)
                if attempt is None:
                    if self.limits.idle_expired():
                        break
                    if unavailable:
                        self._stopping.wait(1.0)
                        continue
                    if self.options.burst and not self._backing_off():
                        break
                    self._probe_idle()
                    if self.down:
                        continue
                    self.source.wait_for_jobs(self.options.pools, self.options.poll_s)
                    continue
                try:
                    self.execute(attempt)
                finally:
                    self.limits.job_done()
                done += 1
        finally:
            self.close()
            if self.ready_at is not None:
                self._announce(WorkerState.STOPPED)
        return done

    def unhealthy(self) -> str | None:
        """Why this worker is not healthy, or None: healthy once it reached its store (or
        API), and for as long as a claim or heartbeat got an answer within the last
        ``3 * lease`` seconds (at least a minute: a long-poll or a slow claim is not a
        failure). A readiness probe on ``/health`` of ``--metrics-port`` reads it."""
        if self.ready_at is None:
            return f"{self.name}: warming (loading {self._warming})"
        down = self.down  # one read: the loop replaces it whole
        if down:
            return f"{self.name}: {_down_reason(down)}"
        if self.last_contact is None:
            return f"{self.name}: has not reached its job store yet"
        silent = time.monotonic() - self.last_contact
        if silent > max(60.0, 3 * self.options.lease_s):
            return f"{self.name}: no answer from its job store for {silent:.0f} s"
        return None

    def _warm(self) -> None:
        """Load every engine this worker runs before its first claim, so that no user's job
        waits for a load and ``/health`` says "warming" until the worker can serve; with
        ``warmup``, also run one tiny text-to-video generation on each engine that serves a
        text-to-video pool (the first run of a pipeline is slower than the next). A burst
        worker (drain the queue, then exit) loads on its first job instead, unless
        ``warmup``. An engine that fails to load here is logged; its first job tries
        again (a start that fails counts towards holding the engine down). Each engine is
        probed too, so that a worker whose backend is down (a ComfyUI server) says
        ``engine_down`` before its first claim."""
        if not self.options.burst or self.options.warmup:
            self._announce(WorkerState.WARMING)
            for name in dict.fromkeys(self._engine_name(p) for p in self.options.pools):
                if self._stopping.is_set():
                    break
                self._warming = f"engine {name}"
                try:
                    engine = self._engine_process(name)
                    engine.ready()
                    self._started(name)
                    reason = engine.probe()
                    if reason is not None:
                        self._mark_down(name, reason)
                    elif self.options.warmup:
                        self._warm_run(name, engine)
                except EngineLoadFailed as exc:
                    self._start_failed(name, exc.message)
                except (EngineFailed, EngineCrashed, LeaseLost) as exc:
                    log.warning(
                        "engine %s did not warm up: %s", name, exc.message or type(exc).__name__,
                        extra={"worker": self.name},
                    )  # fmt: skip
        self.ready_at = time.monotonic()
        startup = self.ready_at - self.started
        if self.metrics is not None:
            self.metrics.startup.labels(self._slot()).set(startup)
        log.info("worker ready in %.2f s", startup, extra={"worker": self.name})

    def _warm_run(self, name: str, engine: EngineProcess) -> None:
        model = next(
            (m for m in MODELS.values() if m.family is Family.T2V and m.pool in self.options.pools
             and self._engine_name(m.pool) == name),
            None,
        )  # fmt: skip
        if model is None:
            log.info("engine %s serves no text-to-video pool: loaded, not run", name)
            return
        with tempfile.TemporaryDirectory(prefix="vidq-warmup-") as workdir:
            job = EngineJob(
                request_id=0, model_id=model.id, family=model.family.value,
                variant=model.variant, inputs=dict(WARMUP_INPUTS), files={},
                output_path=str(Path(workdir) / "warmup.mp4"), steps=model.steps,
                options=dict(model.options), output_name=model.output_name,
            )  # fmt: skip
            started = time.monotonic()
            engine.run(job, lambda done, total: None, self._stopping.is_set)
        log.info(
            "engine %s warm-up run (%s) took %.2f s", name, model.id, time.monotonic() - started,
            extra={"worker": self.name},
        )  # fmt: skip

    # -- engines held down ------------------------------------------------------------
    def _mark_down(self, name: str, reason: str) -> None:
        """Hold engine ``name`` down: no claims until a probe answers (module docstring)."""
        now = time.monotonic()
        if name not in self.down:
            log.warning(
                "engine %s down, not claiming until it answers: %s", name, reason,
                extra={"worker": self.name},
            )  # fmt: skip
            delay = self.options.probe_s
            self.down = {**self.down, name: Down(reason, now, delay, now + delay)}
            self._engine_up(name, False)
        self._announce(WorkerState.ENGINE_DOWN, self._down_reason())

    def _probe_down(self) -> None:
        """Wait for the next probe that is due (or a stop), then probe what is due: an
        engine that answers is up again; one that does not waits twice as long."""
        wait = min(d.next_probe for d in self.down.values()) - time.monotonic()
        if wait > 0:
            self._stopping.wait(wait)
            return
        for name, down in list(self.down.items()):
            if down.next_probe > time.monotonic():
                continue
            reason = self._engine_process(name).probe()
            now = self._last_idle_probe = time.monotonic()
            if reason is None:
                log.info(
                    "engine %s is up again after %.1f s", name, now - down.since,
                    extra={"worker": self.name},
                )  # fmt: skip
                self.down = {k: v for k, v in self.down.items() if k != name}
                self._load_failures[name] = 0
                self._engine_up(name, True)
                continue
            delay = min(self.options.probe_max_s, down.delay * 2)
            self.down = {
                **self.down, name: dataclasses.replace(
                    down, reason=reason, delay=delay, next_probe=now + delay
                ),
            }  # fmt: skip
        self._announce(
            WorkerState.ENGINE_DOWN if self.down else WorkerState.READY, self._down_reason()
        )

    def _end_while_down(self) -> bool:
        """Whether a worker holding an engine down ends: past ``--max-idle``, or a burst
        worker (it drains the queue and exits: it cannot, so it says why and ends)."""
        if self.limits.idle_expired():
            return True
        if self.options.burst:
            log.error("burst worker exits: %s", self._down_reason(), extra={"worker": self.name})
            return True
        return False

    def _probe_idle(self) -> None:
        """An idle worker probes its running engines every ``probe_max_s``, so that a
        backend that went away while no job came (ComfyUI killed) is reported before the
        next job meets it. An engine whose child is not running is left alone: starting it
        is a job's (or a probe of an engine held down)."""
        now = time.monotonic()
        if self._stopping.is_set() or now - self._last_idle_probe < self.options.probe_max_s:
            return
        self._last_idle_probe = now
        for name, engine in list(self._engines.items()):
            if engine.alive and name not in self.down:
                reason = engine.probe()
                if reason is not None:
                    self._mark_down(name, reason)

    def _down_reason(self) -> str | None:
        return _down_reason(self.down)

    def _started(self, name: str) -> None:
        """Engine ``name``'s child is running: its failed starts in a row are over."""
        self._load_failures[name] = 0
        if name not in self.down:
            self._engine_up(name, True)

    def _start_failed(self, name: str, reason: str) -> None:
        """A start of engine ``name``'s child failed; ``load_failures`` in a row hold the
        engine down, with the load's error as the reason."""
        failures = self._load_failures.get(name, 0) + 1
        self._load_failures[name] = failures
        log.warning(
            "engine %s failed to start (%d in a row): %s", name, failures, reason,
            extra={"worker": self.name},
        )  # fmt: skip
        if failures >= self.options.load_failures:
            self._mark_down(name, reason)

    def _engine_up(self, name: str, up: bool) -> None:
        if self.metrics is not None:
            self.metrics.engine_up.labels(self._slot(), name).set(1 if up else 0)

    def _announce(self, state: WorkerState, reason: str | None = None) -> None:
        """Tell the store (or the API) what this worker is doing while it is not claiming
        (a claim says ``ready`` by itself); advisory: a failure is logged, never raised."""
        try:
            self.source.announce(self.name, self.options.pools, self.options.engines, state, reason)
            self.last_contact = time.monotonic()
        except VidqError as exc:
            log.warning(
                "could not announce %s: %s", state.value, exc.message, extra={"worker": self.name}
            )

    def _slot(self) -> str:
        return f"gpu{self.options.gpu}" if self.options.gpu is not None else "cpu"

    def _backing_off(self) -> bool:
        """Whether this worker's pools still hold queued jobs it could not claim (retries
        waiting out their backoff): a burst worker waits for them instead of exiting."""
        try:
            depths = self.source.queue_depths()
        except ServiceUnavailable:
            return True
        return any(depths.get(pool) for pool in self.options.pools)

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        if self.reaper is None or now - self._last_reap < self.options.reaper_s:
            return
        self._last_reap = now
        try:
            reaped = self.reaper.reap()
        except ServiceUnavailable:
            return
        if reaped.retried or reaped.failed or reaped.cancelled:
            log.warning(
                "expired leases",
                extra={
                    "retried": reaped.retried, "failed": reaped.failed,
                    "cancelled": reaped.cancelled,
                },
            )  # fmt: skip
        if reaped.expired:
            log.warning("past their deadline", extra={"failed": reaped.expired})

    # -- one job ---------------------------------------------------------------------
    def execute(self, attempt: Attempt) -> None:
        """Run one claimed attempt to a fenced end state (or lose it cleanly)."""
        self._ran = Ran()  # before any end: none may carry an earlier attempt's time
        job = attempt.job
        extra = {"job_id": job.id, "worker": self.name, "attempt": job.attempt}
        log.info("job claimed", extra=extra)
        model = get_model(job.model_id)
        if model is None:
            self._fail(attempt, f"unknown model {job.model_id!r}", "unknown_model", retry=False)
            return
        lost = threading.Event()  # set when a fenced call says the lease is lost
        cancel = threading.Event()  # set when a heartbeat says a cancel was requested
        finished = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(attempt, lost, cancel, finished), daemon=True
        )
        beat.start()
        workdir = Path(tempfile.mkdtemp(prefix=f"vidq-job-{job.id}-"))
        outcome = "failed"
        if self.metrics is not None:
            self.metrics.busy.labels(job.pool).inc()
        try:
            self._attempt(attempt, model, workdir, lost, cancel)
            finished.set()  # a heartbeat answered from now on finds the job complete
            outcome = "completed"
            log.info("job completed", extra=extra)
        except LeaseLost:
            outcome = "lost"
            if cancel.is_set():
                outcome = "cancelled"
                self._finish_cancel(attempt)
                log.info("job cancelled while running", extra=extra)
            elif lost.is_set():
                log.warning("lease lost; abandoning the attempt", extra=extra)
            else:  # stopped without draining: hand the job back, no attempt spent
                outcome = "released"
                self._release(attempt)
                log.info("job released on shutdown", extra=extra)
        except EngineFailed as exc:
            outcome = self._engine_failed(attempt, exc)
        except EngineCrashed as exc:
            self._fail(attempt, exc.message, "engine_crashed", retry=True)
        except ServiceUnavailable as exc:
            # Storage or store trouble: let the attempt be retried (lease expiry if the
            # store itself is down).
            self._fail(attempt, f"service unavailable: {exc.message}", "unavailable", retry=True)
        except VidqError as exc:
            self._fail(attempt, exc.message, type(exc).__name__, retry=False)
        finally:
            finished.set()
            beat.join(5)
            shutil.rmtree(workdir, ignore_errors=True)
            if self.metrics is not None:
                self.metrics.busy.labels(job.pool).dec()
                self.metrics.attempt(job.pool, outcome)

    def _engine_failed(self, attempt: Attempt, exc: EngineFailed) -> str:
        """An engine's failure: the job's (a failed attempt), or the engine's (its child
        did not start, its backend is unreachable: the job is given back unspent and the
        engine counted or held down); the attempt's outcome."""
        name = self._engine_name(attempt.job.pool)
        if isinstance(exc, EngineLoadFailed):
            self._release(attempt)
            self._start_failed(name, exc.message)
            return "released"
        if exc.down:
            self._release(attempt)
            self._mark_down(name, exc.message)
            return "released"
        self._fail(attempt, exc.message, exc.error_type, retry=exc.retryable)
        return "failed"

    def _attempt(
        self,
        attempt: Attempt,
        model: Model,
        workdir: Path,
        lost: threading.Event,
        cancel: threading.Event,
    ) -> None:
        """Run the engine, upload under the attempt's key, complete fenced. An upload
        that does not end in a won completion is not kept (the attempt sees to it)."""
        engine_job = self._engine_job(attempt, model, workdir)
        result = self._run_engine(attempt, engine_job, lost, cancel)
        lease = Lease.LOST if lost.is_set() else self._still_holds(attempt, lost)
        if lease is not Lease.HELD:
            (cancel if lease is Lease.CANCEL else lost).set()
            raise LeaseLost()
        output = Path(engine_job.output_path)
        self._upload(attempt, output, result.name, lost)
        # the engine child described the video (``meta["video"]``) and made its poster
        meta = {
            **result.meta, "engine": self._engine_name(attempt.job.pool),
            "file_size": output.stat().st_size,
        }  # fmt: skip
        if self._poster(attempt, Path(engine_job.poster_path)):
            meta["poster"] = True  # the API signs a URL of it (jobs.poster_key)
        if not self._complete(attempt, meta, lost, self._ran):
            # A cancel requested since the last heartbeat wins over the completion.
            (cancel if self._finish_cancel(attempt) else lost).set()
            raise LeaseLost()

    def _upload(self, attempt: Attempt, path: Path, name: str, lost: threading.Event) -> None:
        """Upload the finished video, retried while the storage fails (a full disk, an S3
        outage) for up to ``upload_retry_s``: the run is done and must not be lost to a
        passing storage problem. The heartbeat keeps the lease meanwhile."""
        deadline = time.monotonic() + self.options.upload_retry_s
        delay = 0.5
        while True:
            try:
                attempt.upload(path, name)
                return
            except ServiceUnavailable as exc:
                if time.monotonic() + delay > deadline or lost.is_set() or self._abort.is_set():
                    raise
                log.warning(
                    "upload failed, retrying: %s", exc.message, extra={"job_id": attempt.job.id}
                )
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _poster(self, attempt: Attempt, still: Path) -> bool:
        """Store the output's poster frame (the gallery's still), if the engine child made
        one. Advisory: a store that refuses it leaves the job without one."""
        if not still.is_file():
            return False
        try:
            return attempt.poster(still)
        except VidqError as exc:
            log.warning("no poster frame: %s", exc.message, extra={"job_id": attempt.job.id})
            return False

    def _engine_name(self, pool: str) -> str:
        return self.options.engines.get(pool, "preview")

    def _engine_job(self, attempt: Attempt, model: Model, workdir: Path) -> EngineJob:
        files = attempt.download_inputs(workdir)
        inputs = dict(attempt.job.inputs)
        loras = []
        if inputs.get("loras"):
            if self._loras is None:
                raise VidqError("this worker is not set up to fetch LoRAs")
            loras = self._loras.fetch(inputs["loras"])
        return EngineJob(
            request_id=attempt.job.id,
            model_id=model.id,
            family=model.family.value,
            variant=model.variant,
            inputs=inputs,
            files=files,
            output_path=str(workdir / "output.mp4"),
            steps=model.steps_for(bool(inputs.get("higher_quality_with_more_steps"))),
            preview_path=str(workdir / "preview.webp"),
            poster_path=str(workdir / "poster.jpg"),
            preview_interval_s=self.options.preview_interval_s,
            loras=loras,
            options=dict(model.options),
            output_name=model.output_name,
        )

    def _run_engine(
        self,
        attempt: Attempt,
        engine_job: EngineJob,
        lost: threading.Event,
        cancel: threading.Event,
    ) -> EngineResult:
        name = self._engine_name(attempt.job.pool)
        engine = self._engine_process(name)
        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < 0.2:
                return  # throttle writes; the final step is always recorded
            last[0] = now
            try:
                if not attempt.progress(done, total):
                    lost.set()
            except ServiceUnavailable:
                pass  # progress is advisory; the heartbeat decides about the lease

        def on_preview(path: Path, step: int) -> None:
            try:
                if not attempt.preview(path, step):
                    lost.set()
            except VidqError as exc:  # a preview is advisory: the job goes on without it
                log.warning(
                    "preview not published: %s", exc.message, extra={"job_id": attempt.job.id}
                )

        def should_abort() -> bool:
            return lost.is_set() or cancel.is_set() or self._abort.is_set()

        engine.ready()  # a load is the engine's, not this job's: it serves every job after
        self._started(name)
        started = time.monotonic()
        try:
            return engine.run(engine_job, on_progress, should_abort, on_preview)
        finally:  # a failed or stopped run used the device too
            self._ran = Ran(time.monotonic() - started, self._device(name))

    def _engine_process(self, name: str) -> EngineProcess:
        """The child of engine ``name`` for this worker's pools (created, not started)."""
        engine = self._engines.get(name)
        if engine is None:
            pools = [p for p in self.options.pools if self._engine_name(p) == name]
            settings = self.options.engine_settings.get(name)
            engine = EngineProcess(
                name, settings, pools, logs=self.options.logs, gpu=self.options.gpu
            )
            self._engines[name] = engine
        return engine

    def _device(self, engine: str) -> str:
        """The device an attempt ran on: its GPU slot's (``cuda:N``), else the engine's
        setting (``preview`` runs on the CPU)."""
        if self.options.gpu is not None:
            return f"cuda:{self.options.gpu}"
        if engine == "preview":
            return "cpu"
        device = getattr(self.options.engine_settings.get(engine), "device", None)
        return str(device) if device else engine

    def _heartbeat(
        self,
        attempt: Attempt,
        lost: threading.Event,
        cancel: threading.Event,
        finished: threading.Event,
    ) -> None:
        interval = max(0.05, self.options.lease_s / 3)
        job_id = attempt.job.id
        while not finished.wait(interval) and not lost.is_set():
            try:
                lease = attempt.heartbeat()
            except ServiceUnavailable:
                continue  # keep trying; the lease decides
            self.last_contact = time.monotonic()
            if self._stopping.is_set() and not self._said_draining:
                self._said_draining = True  # asked to stop mid-job: say so, once
                self._announce(WorkerState.DRAINING)
            if lease is Lease.LOST:
                if finished.is_set():
                    break  # sent while the complete committed: not a lost lease
                log.warning("heartbeat rejected: lease lost", extra={"job_id": job_id})
                lost.set()
            elif lease is Lease.CANCEL and not cancel.is_set():
                log.info("cancel requested; stopping the engine", extra={"job_id": job_id})
                cancel.set()

    def _finish_cancel(self, attempt: Attempt) -> bool:
        """Record CANCELLED (fenced); False if the job is no longer this attempt's."""
        try:
            return attempt.finish_cancel(self._ran)
        except ServiceUnavailable:
            return False  # the lease expires and the reaper records CANCELLED

    def _fail(self, attempt: Attempt, message: str, error_type: str, *, retry: bool) -> None:
        if self._abort.is_set():
            # Shutting down without draining: hand the job back without spending an attempt.
            self._release(attempt)
            return
        job = attempt.job
        log.warning("job attempt failed: %s", message, extra={"job_id": job.id, "retry": retry})
        delay = self.options.retry_delay(job.attempt) if retry else 0.0
        try:
            attempt.fail(message, error_type, retry=retry, retry_after_s=delay, ran=self._ran)
        except ServiceUnavailable:
            pass  # the lease will expire and the reaper retries the job

    def _complete(
        self, attempt: Attempt, meta: dict[str, Any], lost: threading.Event, ran: Ran
    ) -> bool:
        """The fenced complete, retried while the store is unreachable: the output is
        already uploaded, so a short database outage must not cost the attempt (a try
        that committed with its answer lost makes the retry a success). Gives up (the
        lease then expires and the job is retried) after ``complete_retry_s``."""
        deadline = time.monotonic() + self.options.complete_retry_s
        delay = 0.2
        while True:
            try:
                return attempt.complete(meta, ran)
            except ServiceUnavailable as exc:
                if time.monotonic() > deadline or lost.is_set():
                    raise
                log.warning(
                    "complete failed, retrying: %s", exc.message, extra={"job_id": attempt.job.id}
                )
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _still_holds(self, attempt: Attempt, lost: threading.Event) -> Lease:
        """A fenced heartbeat right before uploading, waiting out a store outage: a worker
        that was paused or cut off past its lease learns it lost the job before it
        uploads anything (an upload it cannot complete would be an orphan)."""
        deadline = time.monotonic() + self.options.complete_retry_s
        while True:
            try:
                return attempt.heartbeat()
            except ServiceUnavailable:
                if time.monotonic() > deadline or lost.is_set():
                    raise
                time.sleep(0.5)

    def _release(self, attempt: Attempt) -> None:
        try:
            attempt.release(self._ran)
        except ServiceUnavailable:
            pass  # the lease will expire and the reaper gives the job back


def _down_reason(down: Mapping[str, Down]) -> str | None:
    """Why the engines held down are: ``engine NAME down: REASON`` each; None if none."""
    return "; ".join(f"engine {k} down: {v.reason}" for k, v in down.items()) or None
