"""The worker loop: claim -> download inputs -> engine child -> upload -> fenced complete.

Invariants (docs/architecture.md): every update after the claim is conditional on the lease token;
a worker whose update changes no row has lost the job, stops its engine and deletes what
it uploaded. A heartbeat may answer that a cancel was requested: the worker stops the
engine the same way, keeps no output and records CANCELLED (``finish_cancel``). Outputs
are uploaded under a key unique to the attempt, so a stale worker
can never overwrite the output of the attempt that won.
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

from vidq.catalog import Model, get_model
from vidq.engines.base import EngineJob, EngineResult
from vidq.errors import EngineCrashed, LeaseLost, ServiceUnavailable, VidqError
from vidq.jobs import Job, output_key
from vidq.ops.logs import LogSetup
from vidq.ops.metrics import WorkerMetrics
from vidq.storage.base import WorkerBlobs
from vidq.storage.outputs import sweep_attempts
from vidq.store.base import Lease, WorkerStore
from vidq.worker.child import EngineFailed, EngineProcess
from vidq.worker.limits import RunLimits

log = logging.getLogger(__name__)


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

    def retry_delay(self, attempt: int) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, with jitter so that jobs
        failed by one outage (storage down) do not all come back at the same instant."""
        nominal = min(self.retry_backoff_max_s, self.retry_backoff_s * 2.0 ** max(0, attempt - 1))
        return nominal * random.uniform(0.5, 1.0)


class Worker:
    """One worker (one job at a time): serves its pools until stopped, until ``limits``
    end it (shared by the GPU slots of a process), or in burst mode until idle."""

    def __init__(
        self,
        store: WorkerStore,
        storage: WorkerBlobs,
        options: WorkerOptions,
        metrics: WorkerMetrics | None = None,
        limits: RunLimits | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
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
        self._last_reap = 0.0

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
            while not self._stopping.is_set():
                self._maybe_reap()
                if not self.limits.begin_claim():
                    break
                job, unavailable = None, False
                try:
                    self.store.register_worker(self.name, self.options.pools, self.options.engines)
                    job = self.store.claim(self.options.pools, self.name, self.options.lease_s)
                    self.last_contact = time.monotonic()
                except ServiceUnavailable as exc:
                    log.warning("store unavailable, retrying: %s", exc, extra={"worker": self.name})
                    unavailable = True
                finally:
                    self.limits.end_claim(job is not None)
                if job is None:
                    if self.limits.idle_expired():
                        break
                    if unavailable:
                        self._stopping.wait(1.0)
                        continue
                    if self.options.burst and not self._backing_off():
                        break
                    self.store.wait_for_jobs(self.options.pools, self.options.poll_s)
                    continue
                try:
                    self.execute(job)
                finally:
                    self.limits.job_done()
                done += 1
        finally:
            self.close()
        return done

    def unhealthy(self) -> str | None:
        """Why this worker is not healthy, or None: healthy once it reached its store (or
        API), and for as long as a claim or heartbeat got an answer within the last
        ``3 * lease`` seconds (at least a minute: a long-poll or a slow claim is not a
        failure). A readiness probe on ``/health`` of ``--metrics-port`` reads it."""
        if self.last_contact is None:
            return f"{self.name}: has not reached its job store yet"
        silent = time.monotonic() - self.last_contact
        if silent > max(60.0, 3 * self.options.lease_s):
            return f"{self.name}: no answer from its job store for {silent:.0f} s"
        return None

    def _backing_off(self) -> bool:
        """Whether this worker's pools still hold queued jobs it could not claim (retries
        waiting out their backoff): a burst worker waits for them instead of exiting."""
        try:
            depths = self.store.queue_depths()
        except ServiceUnavailable:
            return True
        return any(depths.get(pool) for pool in self.options.pools)

    def _maybe_reap(self) -> None:
        now = time.monotonic()
        if now - self._last_reap < self.options.reaper_s:
            return
        self._last_reap = now
        try:
            reaped = self.store.reap()
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
    def execute(self, job: Job) -> None:
        """Run one claimed job to a fenced end state (or lose it cleanly)."""
        extra = {"job_id": job.id, "worker": self.name, "attempt": job.attempt}
        log.info("job claimed", extra=extra)
        model = get_model(job.model_id)
        if model is None:
            self._fail(job, f"unknown model {job.model_id!r}", "unknown_model", retry=False)
            return
        lost = threading.Event()  # set when the store rejects a fenced update
        cancel = threading.Event()  # set when a heartbeat says a cancel was requested
        finished = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(job, lost, cancel, finished), daemon=True
        )
        beat.start()
        workdir = Path(tempfile.mkdtemp(prefix=f"vidq-job-{job.id}-"))
        outcome = "failed"
        if self.metrics is not None:
            self.metrics.busy.labels(job.pool).inc()
        try:
            self._attempt(job, model, workdir, lost, cancel)
            finished.set()  # a heartbeat answered from now on finds the job complete
            outcome = "completed"
            log.info("job completed", extra=extra)
        except LeaseLost:
            outcome = "lost"
            if cancel.is_set():
                outcome = "cancelled"
                self._finish_cancel(job)
                log.info("job cancelled while running", extra=extra)
            elif lost.is_set():
                log.warning("lease lost; abandoning the attempt", extra=extra)
            else:  # stopped without draining: hand the job back, no attempt spent
                outcome = "released"
                self._release(job)
                log.info("job released on shutdown", extra=extra)
        except EngineFailed as exc:
            self._fail(job, exc.message, exc.error_type, retry=exc.retryable)
        except EngineCrashed as exc:
            self._fail(job, exc.message, "engine_crashed", retry=True)
        except ServiceUnavailable as exc:
            # Storage or store trouble: let the attempt be retried (lease expiry if the
            # store itself is down).
            self._fail(job, f"service unavailable: {exc.message}", "unavailable", retry=True)
        except VidqError as exc:
            self._fail(job, exc.message, type(exc).__name__, retry=False)
        finally:
            finished.set()
            beat.join(5)
            shutil.rmtree(workdir, ignore_errors=True)
            if self.metrics is not None:
                self.metrics.busy.labels(job.pool).dec()
                self.metrics.attempt(job.pool, outcome)

    def _attempt(
        self,
        job: Job,
        model: Model,
        workdir: Path,
        lost: threading.Event,
        cancel: threading.Event,
    ) -> None:
        """Run the engine, upload under the attempt's key, complete fenced. An upload
        that does not end in a won completion is deleted."""
        if job.attempt > 1:  # uploads of earlier attempts that never completed
            sweep_attempts(self.storage, job, lambda attempt: attempt < job.attempt)
        engine_job = self._engine_job(job, model, workdir)
        result = self._run_engine(job, engine_job, lost, cancel)
        lease = Lease.LOST if lost.is_set() else self._still_holds(job, lost)
        if lease is not Lease.HELD:
            (cancel if lease is Lease.CANCEL else lost).set()
            raise LeaseLost()
        uploaded = output_key(job, result.name)
        try:
            self._upload(uploaded, Path(engine_job.output_path), lost)
            size = Path(engine_job.output_path).stat().st_size
            meta = {**result.meta, "engine": self._engine_name(job.pool), "file_size": size}
            if not self._complete(job, uploaded, meta, lost):
                # A cancel requested since the last heartbeat wins over the completion.
                (cancel if self._finish_cancel(job) else lost).set()
                raise LeaseLost()
        except BaseException:
            self._delete_quietly(uploaded)
            raise
        if job.attempt > 1:  # only a retried job can have other attempts' uploads
            sweep_attempts(self.storage, job, lambda attempt: attempt != job.attempt)

    def _upload(self, key: str, path: Path, lost: threading.Event) -> None:
        """Upload the finished video, retried while the storage fails (a full disk, an S3
        outage) for up to ``upload_retry_s``: the run is done and must not be lost to a
        passing storage problem. The heartbeat keeps the lease meanwhile."""
        deadline = time.monotonic() + self.options.upload_retry_s
        delay = 0.5
        while True:
            try:
                self.storage.put_file(key, path, "video/mp4")
                return
            except ServiceUnavailable as exc:
                if time.monotonic() + delay > deadline or lost.is_set() or self._abort.is_set():
                    raise
                log.warning("upload failed, retrying: %s", exc.message, extra={"key": key})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _engine_name(self, pool: str) -> str:
        return self.options.engines.get(pool, "preview")

    def _engine_job(self, job: Job, model: Model, workdir: Path) -> EngineJob:
        files: dict[str, str] = {}
        for field, key in dict(job.inputs.get("_blobs", {})).items():
            local = workdir / f"input-{field}"
            self.storage.download(str(key), local)
            files[str(field)] = str(local)
        inputs = {k: v for k, v in job.inputs.items() if k != "_blobs"}
        return EngineJob(
            request_id=job.id,
            model_id=model.id,
            family=model.family.value,
            variant=model.variant,
            inputs=inputs,
            files=files,
            output_path=str(workdir / "output.mp4"),
            steps=model.steps_for(bool(inputs.get("higher_quality_with_more_steps"))),
        )

    def _run_engine(
        self, job: Job, engine_job: EngineJob, lost: threading.Event, cancel: threading.Event
    ) -> EngineResult:
        name = self._engine_name(job.pool)
        engine = self._engines.get(name)
        if engine is None:
            pools = [p for p in self.options.pools if self._engine_name(p) == name]
            settings = self.options.engine_settings.get(name)
            engine = EngineProcess(
                name, settings, pools, logs=self.options.logs, gpu=self.options.gpu
            )
            self._engines[name] = engine
        token = job.lease_token or ""
        last = [0.0]

        def on_progress(done: int, total: int) -> None:
            now = time.monotonic()
            if done < total and now - last[0] < 0.2:
                return  # throttle writes; the final step is always recorded
            last[0] = now
            try:
                if not self.store.progress(job.id, token, done, total):
                    lost.set()
            except ServiceUnavailable:
                pass  # progress is advisory; the heartbeat decides about the lease

        def should_abort() -> bool:
            return lost.is_set() or cancel.is_set() or self._abort.is_set()

        return engine.run(engine_job, on_progress, should_abort)

    def _heartbeat(
        self,
        job: Job,
        lost: threading.Event,
        cancel: threading.Event,
        finished: threading.Event,
    ) -> None:
        interval = max(0.05, self.options.lease_s / 3)
        while not finished.wait(interval) and not lost.is_set():
            try:
                lease = self.store.heartbeat(job.id, job.lease_token or "", self.options.lease_s)
            except ServiceUnavailable:
                continue  # keep trying; the lease decides
            self.last_contact = time.monotonic()
            if lease is Lease.LOST:
                if finished.is_set():
                    break  # sent while the complete committed: not a lost lease
                log.warning("heartbeat rejected: lease lost", extra={"job_id": job.id})
                lost.set()
            elif lease is Lease.CANCEL and not cancel.is_set():
                log.info("cancel requested; stopping the engine", extra={"job_id": job.id})
                cancel.set()

    def _finish_cancel(self, job: Job) -> bool:
        """Record CANCELLED (fenced); False if the job is no longer this attempt's."""
        try:
            return self.store.finish_cancel(job.id, job.lease_token or "")
        except ServiceUnavailable:
            return False  # the lease expires and the reaper records CANCELLED

    def _fail(self, job: Job, message: str, error_type: str, *, retry: bool) -> None:
        if self._abort.is_set():
            # Shutting down without draining: hand the job back without spending an attempt.
            self._release(job)
            return
        log.warning("job attempt failed: %s", message, extra={"job_id": job.id, "retry": retry})
        delay = self.options.retry_delay(job.attempt) if retry else 0.0
        try:
            self.store.fail(job.id, job.lease_token or "", message, error_type, retry, delay)
        except ServiceUnavailable:
            pass  # the lease will expire and the reaper retries the job

    def _complete(self, job: Job, key: str, meta: dict[str, Any], lost: threading.Event) -> bool:
        """The fenced complete, retried while the store is unreachable: the output is
        already uploaded, so a short database outage must not cost the attempt. Gives up
        (the lease then expires and the job is retried) after ``complete_retry_s``."""
        deadline = time.monotonic() + self.options.complete_retry_s
        delay = 0.2
        retried = False
        while True:
            try:
                if self.store.complete(job.id, job.lease_token or "", key, meta):
                    return True
                if not retried:
                    return False
                # An earlier try may have committed with its answer lost in the outage.
                now = self.store.get(job.id)
                return now is not None and now.result_key == key
            except ServiceUnavailable as exc:
                retried = True
                if time.monotonic() > deadline or lost.is_set():
                    raise
                log.warning("complete failed, retrying: %s", exc.message, extra={"job_id": job.id})
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _still_holds(self, job: Job, lost: threading.Event) -> Lease:
        """A fenced heartbeat right before uploading, waiting out a store outage: a worker
        that was paused or cut off past its lease learns it lost the job before it
        uploads anything (an upload it cannot complete would be an orphan)."""
        deadline = time.monotonic() + self.options.complete_retry_s
        while True:
            try:
                return self.store.heartbeat(job.id, job.lease_token or "", self.options.lease_s)
            except ServiceUnavailable:
                if time.monotonic() > deadline or lost.is_set():
                    raise
                time.sleep(0.5)

    def _release(self, job: Job) -> None:
        try:
            self.store.release(job.id, job.lease_token or "")
        except ServiceUnavailable:
            pass  # the lease will expire and the reaper gives the job back

    def _delete_quietly(self, key: str) -> None:
        try:
            self.storage.delete(key)
        except VidqError:
            log.warning("could not delete orphan upload", extra={"key": key})
