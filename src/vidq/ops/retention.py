"""The retention collector: deletes expired inputs, outputs and job rows, in batches.

What expires (``RetentionPolicy``, from ``VIDQ_INPUT_TTL``, ``VIDQ_OUTPUT_TTL``,
``VIDQ_JOB_TTL``, ``VIDQ_UPLOAD_TTL``): a finished job's inputs ``input_ttl`` after it
ended (0: as soon as it ended), a completed job's output ``output_ttl`` after, and the
job's row ``job_ttl`` after, once its blobs are gone (a row's counters move to the metric
rollup). Only finished jobs are ever selected, so no blob of a live job is touched.
Live previews (``previews/``) are deleted by the attempt that wrote them when it ends; one
left by a worker that was killed is deleted here, as soon as its attempt is not running.
Late uploads: an attempt that lost a retried job (its worker paused or cut off past its
lease) may store its video or poster after the winner swept the other attempts' uploads,
and be killed before it deletes them; the uploads of losing attempts of every retried job
that ended in the last ``LATE_UPLOAD_WINDOW_S`` are deleted here.
A request its user deletes (``DELETE /requests/{id}``) gets the same marks at once and its
blobs deleted by ``delete_now``; whatever that could not delete, the next collection does.
Uploads (fal's upload routes) are their own: a job copies an upload into its inputs at
submit, so an upload goes at the expiry its uploader asked for, else ``upload_ttl`` after
it was made; its blob (and any multipart parts) first, then its row, so a crash between
the two leaves a row whose URL answers "expired" and is collected again.

The order makes a crash at any point safe: a job is first *marked* expired (from then on
the API answers 410 for its result and an admin retry is refused), then its blobs are
deleted, then it is marked deleted. A rerun takes the jobs marked but not deleted first,
so nothing is left behind and no job points at a missing blob without saying so.

It runs in every worker, one process at a time across the fleet (the ``gc`` lease in the
job store), and as ``vidq gc [--dry-run]``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

from vidq.blobs.base import BlobStore
from vidq.blobs.outputs import attempt_uploads
from vidq.errors import VidqError
from vidq.jobs import (
    PREVIEW_PREFIX,
    Job,
    JobState,
    input_blobs,
    output_attempt,
    output_blobs,
    preview_attempt,
)
from vidq.store.base import DueBlobs, RetentionStore, Upload

log = logging.getLogger(__name__)

LEASE = "gc"
# How long after a retried job ended its losing attempts' late uploads are looked for.
LATE_UPLOAD_WINDOW_S = 600.0


@dataclasses.dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long things are kept, in seconds."""

    input_ttl: float = 0.0
    output_ttl: float = 7 * 86400.0
    job_ttl: float = 30 * 86400.0
    upload_ttl: float = 7 * 86400.0
    batch: int = 100

    def inputs_after(self) -> float:
        # A row past its job TTL loses its blobs even if their own TTL is longer.
        return min(self.input_ttl, self.job_ttl)

    def outputs_after(self) -> float:
        return min(self.output_ttl, self.job_ttl)


@dataclasses.dataclass
class Report:
    """What one collection did (or, on a dry run, would do)."""

    inputs_expired: int = 0  # jobs whose inputs were deleted
    outputs_expired: int = 0  # jobs whose output was deleted
    blobs_deleted: int = 0
    jobs_purged: int = 0
    uploads_expired: int = 0
    previews_deleted: int = 0  # live previews of attempts no longer running
    late_uploads_deleted: int = 0  # uploads of attempts that lost a retried job
    would_delete: list[str] = dataclasses.field(default_factory=list)  # dry run: the keys

    def as_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


class Collector:
    """Deletes what the policy says has expired (see module docstring)."""

    def __init__(
        self, store: RetentionStore, storage: BlobStore, policy: RetentionPolicy, holder: str
    ) -> None:
        self.store = store
        self.storage = storage
        self.policy = policy
        self.holder = holder

    def run_once(self, *, lease_s: float = 300.0) -> Report | None:
        """One collection under the fleet-wide lease; None if another process holds it."""
        if not self.store.take_lease(LEASE, self.holder, lease_s):
            return None
        try:
            return self.collect(renew=lambda: self.store.take_lease(LEASE, self.holder, lease_s))
        finally:
            self.store.release_lease(LEASE, self.holder)

    def collect(self, renew: Callable[[], bool] | None = None) -> Report:
        """Every batch due now (the caller holds the lease; ``renew`` extends it between
        batches and returns False if it was lost)."""
        report = Report()
        policy = self.policy
        for kind in ("inputs", "outputs"):
            while True:
                if renew is not None and not renew():
                    log.warning("gc lease lost; stopping", extra={"worker": self.holder})
                    return report
                batch = self._due(kind)
                if not batch:
                    break
                self._expire(kind, batch, report)
                if len(batch) < policy.batch:
                    break
        while True:
            uploads = self.store.expired_uploads(policy.upload_ttl, policy.batch)
            self._expire_uploads(uploads, report)
            if len(uploads) < policy.batch or (renew is not None and not renew()):
                break
        self._drop_previews(report)
        self._drop_late_uploads(report)
        while True:
            purged = self.store.purge_jobs(policy.job_ttl, policy.batch)
            report.jobs_purged += purged
            if purged < policy.batch:
                break
        if report.blobs_deleted or report.jobs_purged:
            log.info(
                "gc: %d input sets, %d outputs, %d uploads, %d blobs deleted; %d job rows purged",
                report.inputs_expired, report.outputs_expired, report.uploads_expired,
                report.blobs_deleted, report.jobs_purged,
            )  # fmt: skip
        return report

    def dry_run(self) -> Report:
        """What a collection would delete now, deleting and marking nothing (job rows
        whose blobs are still there are not counted: they go after them)."""
        report = Report()
        limit = 1_000_000
        for kind in ("inputs", "outputs"):
            for due in self._due(kind, limit):
                report.would_delete.extend(due.keys)
                if kind == "inputs":
                    report.inputs_expired += 1
                else:
                    report.outputs_expired += 1
        for upload in self.store.expired_uploads(self.policy.upload_ttl, limit):
            report.would_delete.append(upload.key)
            report.uploads_expired += 1
        for key in self._orphan_previews():
            report.would_delete.append(key)
            report.previews_deleted += 1
        for key in self._late_uploads():
            report.would_delete.append(key)
            report.late_uploads_deleted += 1
        return report

    def _orphan_previews(self) -> list[str]:
        """Live previews whose attempt is not running (listed before the running attempts
        are read, so a preview written meanwhile is of a running attempt, and kept)."""
        keys = self.storage.keys(PREVIEW_PREFIX)
        if not keys:
            return []
        running = self.store.running_attempts()
        return [k for k in keys if (preview_attempt(k) or (0, 0)) not in running]

    def _drop_previews(self, report: Report) -> None:
        try:
            for key in self._orphan_previews():
                self.storage.delete(key)
                report.previews_deleted += 1
                report.blobs_deleted += 1
        except VidqError as exc:
            log.warning("gc: could not delete orphan previews: %s", exc.message)

    def _late_uploads(self) -> list[str]:
        """The uploads of attempts that lost a retried job ended in the last
        ``LATE_UPLOAD_WINDOW_S`` (the attempts up to the job's last, less the one whose
        output is the result; a job retried by an admin since has later attempts, kept)."""
        found: list[str] = []
        for job in self.store.retried_finished(LATE_UPLOAD_WINDOW_S, self.policy.batch * 10):
            won = output_attempt(job, job.result_key) if job.result_key else None

            def lost(attempt: int, last: int = job.attempt, won: int | None = won) -> bool:
                return attempt <= last and attempt != won

            found += attempt_uploads(self.storage, job, lost)
        return found

    def _drop_late_uploads(self, report: Report) -> None:
        try:
            for key in self._late_uploads():
                self.storage.delete(key)
                log.info("gc: deleted a late upload of a losing attempt", extra={"key": key})
                report.late_uploads_deleted += 1
                report.blobs_deleted += 1
        except VidqError as exc:
            log.warning("gc: could not delete late uploads: %s", exc.message)

    def _due(self, kind: str, limit: int | None = None) -> list[DueBlobs]:
        limit = limit or self.policy.batch
        if kind == "inputs":
            return self.store.inputs_due(self.policy.inputs_after(), limit)
        return self.store.outputs_due(self.policy.outputs_after(), limit)

    def _expire(self, kind: str, batch: list[DueBlobs], report: Report) -> None:
        """Mark the whole batch expired, delete its blobs, then mark it deleted."""
        mark, done = (
            (self.store.expire_inputs, self.store.inputs_deleted)
            if kind == "inputs"
            else (self.store.expire_output, self.store.output_deleted)
        )
        # Only what this collector marked (or found marked) is deleted: a job retried by an
        # admin since it was selected is no longer finished, marks no row, and keeps its blobs.
        batch = [due for due in batch if due.marked or mark(due.job_id)]
        deleted: list[int] = []
        for due in batch:
            try:
                for key in due.keys:
                    self.storage.delete(key)
                    report.blobs_deleted += 1
            except VidqError as exc:  # storage down: this job stays marked, for a rerun
                log.warning(
                    "gc: cannot delete a blob: %s", exc.message, extra={"job_id": due.job_id}
                )
                continue
            deleted.append(due.job_id)
        for job_id in deleted:
            done(job_id)
        if kind == "inputs":
            report.inputs_expired += len(deleted)
        else:
            report.outputs_expired += len(deleted)

    def _expire_uploads(self, uploads: list[Upload], report: Report) -> None:
        """Delete each upload's blob and parts, then its row."""
        for upload in uploads:
            try:
                for key in (upload.key, *self.storage.keys(f"{upload.key}.parts/")):
                    self.storage.delete(key)
                    report.blobs_deleted += 1
            except VidqError as exc:  # storage down: the row stays, for a rerun
                log.warning("gc: cannot delete an upload: %s", exc.message)
                continue
            self.store.delete_upload(upload.id)
            report.uploads_expired += 1


def delete_now(store: RetentionStore, storage: BlobStore, job: Job) -> None:
    """Delete the blobs of a job its user deleted (``SubmitStore.delete_job`` set the
    marks): the output and poster of a completed job, and the inputs, each set then
    marked deleted, as a collection does. A blob the storage fails to delete is logged and
    left marked: the next collection takes the marked jobs first and finishes it."""
    sets = [(input_blobs(job.inputs), store.inputs_deleted)]
    if job.state is JobState.COMPLETED:
        sets.append((output_blobs(job.result_key), store.output_deleted))
    for keys, done in sets:
        try:
            for key in keys:
                storage.delete(key)
        except VidqError as exc:
            log.warning(
                "cannot delete a deleted request's blob yet: %s", exc.message,
                extra={"job_id": job.id},
            )  # fmt: skip
            continue
        done(job.id)


def run_periodically(
    collector: Collector, interval_s: float, lease_s: float, stop: threading.Event
) -> None:
    """The workers' loop: a collection every ``interval_s`` until ``stop`` is set. Errors
    are logged, never raised: the collector must not take a worker down."""
    while not stop.wait(interval_s):
        started = time.monotonic()
        try:
            collector.run_once(lease_s=lease_s)
        except VidqError as exc:
            log.warning("gc failed: %s", exc.message, extra={"worker": collector.holder})
        log.debug("gc pass took %.3f s", time.monotonic() - started)
