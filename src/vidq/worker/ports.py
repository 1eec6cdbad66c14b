"""What the worker loop needs of the job store and the blob store: two narrow protocols.

``SQLStore`` and the blob stores satisfy them as they are (a local worker); the adapters
of ``worker/remote.py`` satisfy them over the worker protocol of the API (``/worker/v1``,
a remote worker), so both kinds of worker run the same loop (``worker/runner.py``) and
keep the same invariants.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vidq.jobs import Job
from vidq.store.base import Lease, ReapResult


class WorkerStore(Protocol):
    """The job store as a worker uses it (the methods of ``JobStore`` it calls)."""

    def register_worker(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str] | None = None
    ) -> None:
        """Record that a worker is alive, its pools and their engines (for operators)."""

    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Job | None:
        """Take the first queued job of these pools under a fresh lease; None if none."""

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """Block until a job may have been queued in these pools, or ``timeout`` passes."""

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per pool (a burst worker's "is anything left for me")."""

    def reap(self) -> ReapResult:
        """Expired leases and deadlines -> their next state (see ``JobStore.reap``)."""

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> Lease:
        """Extend the lease; LOST if lost, CANCEL if a cancel was requested."""

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        """Record progress; False if the lease is lost."""

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        """RUNNING -> COMPLETED fenced by the lease token; False if the lease is lost."""

    def finish_cancel(self, job_id: int, token: str) -> bool:
        """RUNNING with a cancel request -> CANCELLED, fenced; False otherwise."""

    def fail(
        self,
        job_id: int,
        token: str,
        error: str,
        error_type: str,
        retry: bool,
        retry_after_s: float = 0.0,
    ) -> bool:
        """Record a failed attempt (retried after ``retry_after_s`` or final), fenced."""

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        """The job (a retried complete checks whether an earlier try committed)."""

    def release(self, job_id: int, token: str) -> bool:
        """Give a job back without spending an attempt (graceful shutdown); fenced."""


class WorkerBlobs(Protocol):
    """The blob store as a worker uses it (the methods of ``BlobStore`` it calls)."""

    def download(self, key: str, path: Path) -> None:
        """Copy an input object to a local file."""

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store the output file under the attempt's key."""

    def keys(self, prefix: str) -> list[str]:
        """Keys under a prefix (sweeping other attempts' uploads)."""

    def delete(self, key: str) -> None:
        """Remove an object; no error if it is already gone."""
