"""The local ``Source`` and ``Attempt`` (``ports.py``): the job store and the blob store
reached directly (a worker next to the database and the storage, or in the API process).

Besides the fenced store calls, the local attempt keeps the outputs in order, as the API
does for remote attempts (``api/worker/``): a claim of a retried job deletes the
uploads of earlier attempts that never completed, a won completion deletes the uploads of
the job's other attempts, and an attempt that ends without a won completion deletes its own
upload, unless a complete that may have committed it cannot be ruled out (then the output
is the result, or the next attempt's claim deletes it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vidq.blobs.base import WorkerBlobs
from vidq.blobs.outputs import sweep_attempts
from vidq.errors import VidqError
from vidq.jobs import (
    POSTER_TYPE,
    PREVIEW_TYPE,
    Claim,
    Ran,
    WorkerState,
    output_key,
    poster_key,
    preview_key,
)
from vidq.store.base import Lease, WorkerStore
from vidq.worker.ports import Assignment

log = logging.getLogger(__name__)

OUTPUT_TYPE = "video/mp4"


class LocalSource:
    """Claims from the job store (``Source``); its attempts use ``store`` and ``blobs``."""

    def __init__(self, store: WorkerStore, blobs: WorkerBlobs) -> None:
        self.store = store
        self.blobs = blobs

    def claim(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str], lease_s: float
    ) -> LocalAttempt | None:
        self.store.register_worker(worker, pools, engines)
        claim = self.store.claim(pools, worker, lease_s)
        if claim is None:
            return None
        job = claim.job
        if job.attempt > 1:  # uploads of earlier attempts that never completed
            sweep_attempts(self.blobs, job, lambda attempt: attempt < job.attempt)
        return LocalAttempt(self.store, self.blobs, claim, lease_s)

    def announce(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str],
        state: WorkerState,
        reason: str | None = None,
    ) -> None:
        self.store.register_worker(worker, pools, engines, state=state, reason=reason)

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        self.store.wait_for_jobs(pools, timeout)

    def queue_depths(self) -> dict[str, int]:
        return self.store.queue_depths()


class LocalAttempt:
    """One claimed attempt (``Attempt``) over the job store and the blob store."""

    def __init__(
        self, store: WorkerStore, blobs: WorkerBlobs, claim: Claim, lease_s: float
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.claim = claim
        self.lease_token = claim.lease_token
        self.lease_s = lease_s
        found = claim.job
        self.job = Assignment(
            id=found.id, model_id=found.model_id, pool=found.pool, tier=found.tier,
            attempt=found.attempt,
            inputs={k: v for k, v in found.inputs.items() if k != "_blobs"},
        )  # fmt: skip
        self._output: str | None = None  # this attempt's upload, until it won or is deleted
        self._in_doubt = False  # a complete raised: it may have committed
        self._preview: str | None = None  # this attempt's live preview, until it ends

    def download_inputs(self, folder: Path) -> dict[str, str]:
        files: dict[str, str] = {}
        for field, key in dict(self.claim.job.inputs.get("_blobs", {})).items():
            local = folder / f"input-{field}"
            self.blobs.download(str(key), local)
            files[str(field)] = str(local)
        return files

    def heartbeat(self) -> Lease:
        return self.store.heartbeat(self.job.id, self.lease_token, self.lease_s)

    def progress(self, done: int, total: int) -> bool:
        return self.store.progress(self.job.id, self.lease_token, done, total)

    def preview(self, path: Path, step: int) -> bool:
        key = preview_key(self.claim.job)
        self.blobs.put_file(key, path, PREVIEW_TYPE)
        self._preview = key
        return self.store.preview(self.job.id, self.lease_token, key, step)

    def upload(self, path: Path, name: str) -> None:
        self._output = output_key(self.job, name)
        self.blobs.put_file(self._output, path, OUTPUT_TYPE)

    def poster(self, path: Path) -> bool:
        if self._output is None:
            raise VidqError("nothing was uploaded to make a poster of")
        # Unfenced, as the upload is: the complete decides, and an attempt that does not win
        # deletes its poster with its upload.
        self.blobs.put_file(poster_key(self._output), path, POSTER_TYPE)
        return True

    def complete(self, meta: dict[str, Any], ran: Ran = Ran()) -> bool:
        key = self._output
        if key is None:
            raise VidqError("nothing was uploaded to complete with")
        retried, self._in_doubt = self._in_doubt, True
        won = self.store.complete(self.job.id, self.lease_token, key, meta, ran)
        self._delete_preview()
        if not won and retried:
            # An earlier try may have committed with its answer lost in the outage.
            now = self.store.get(self.job.id)
            won = now is not None and now.result_key == key
        self._in_doubt = False
        if not won:
            self._delete_output()
            return False
        self._output = None  # the result now
        if self.job.attempt > 1:  # only a retried job can have other attempts' uploads
            won_attempt = self.job.attempt
            sweep_attempts(self.blobs, self.claim.job, lambda other: other != won_attempt)
        return True

    def fail(
        self, error: str, error_type: str, *, retry: bool, retry_after_s: float, ran: Ran = Ran()
    ) -> bool:
        return self._end(
            lambda: self.store.fail(
                self.job.id, self.lease_token, error, error_type, retry, retry_after_s, ran
            )
        )

    def release(self, ran: Ran = Ran()) -> bool:
        return self._end(lambda: self.store.release(self.job.id, self.lease_token, ran))

    def finish_cancel(self, ran: Ran = Ran()) -> bool:
        return self._end(lambda: self.store.finish_cancel(self.job.id, self.lease_token, ran))

    def _end(self, record: Callable[[], bool]) -> bool:
        """Record an end other than a completion, then delete the upload: at once unless a
        complete may have committed it, else only when the end was recorded (which proves
        that complete did not commit)."""
        recorded = False
        try:
            recorded = record()
            return recorded
        finally:
            self._delete_preview()
            if recorded or not self._in_doubt:
                self._delete_output()

    def _delete_preview(self) -> None:
        """Delete the live preview once the attempt ended (its key is this attempt's: no
        other writes it); one left by a killed worker is retention's."""
        key, self._preview = self._preview, None
        if key is None:
            return
        try:
            self.blobs.delete(key)
        except VidqError:
            log.warning("could not delete a live preview", extra={"key": key})

    def _delete_output(self) -> None:
        key, self._output = self._output, None
        if key is None:
            return
        try:
            self.blobs.delete(key)
            self.blobs.delete(poster_key(key))
        except VidqError:
            log.warning("could not delete orphan upload", extra={"key": key})
