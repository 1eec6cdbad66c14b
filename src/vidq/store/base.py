"""The JobStore protocol: everything the API and the workers ask of the job database.

Adapters (``sqlite``, ``postgres``) translate their driver's errors into
``StoreUnavailable``; the layers above never see a driver exception. Time is always the
database's clock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

from vidq.jobs import Job, NewJob


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """An API token's record. The token itself is never stored, only its sha256."""

    id: int
    user: str
    max_priority: int
    admin: bool
    created_at: float
    revoked: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class ReapResult:
    """What one reaper pass did."""

    retried: list[int]
    failed: list[int]


class JobStore(Protocol):
    """The job database."""

    def close(self) -> None:
        """Release connections."""

    def now(self) -> float:
        """The database clock, seconds since the epoch."""

    # --- jobs: API side ------------------------------------------------------------
    def enqueue(self, new: NewJob) -> Job:
        """Insert a PENDING job; returns it with its id. Durable once it returns.

        If the user already has a job with this ``idempotency_key`` (even one inserted
        concurrently by another API replica), that job is returned instead."""

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        """The job, or None if it does not exist or (with ``user``) is another user's."""

    def find_by_idempotency_key(self, user: str, key: str) -> Job | None:
        """The job a user submitted with this Idempotency-Key, if any."""

    def find_by_result_key(self, key: str) -> Job | None:
        """The job whose output is stored under this key."""

    def queue_position(self, job: Job) -> int:
        """How many queued jobs are ahead of this one in its pool."""

    def cancel(self, job_id: int, user: str) -> bool:
        """PENDING/RETRY -> CANCELLED atomically; False if the job is not queued."""

    def list_jobs(self, user: str, limit: int, before_id: int | None = None) -> list[Job]:
        """The user's jobs, newest first."""

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        """Run times (s) of recent completed jobs of a pool with similar work units."""

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per pool."""

    def live_workers(self) -> dict[str, int]:
        """Workers per pool seen in the last few lease periods."""

    # --- jobs: worker side ---------------------------------------------------------
    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Job | None:
        """Atomically take the first queued job of these pools: RUNNING, attempt+1,
        a fresh lease token, ``lease_until = db_now + lease_s``."""

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> bool:
        """Extend the lease; False if the lease is lost."""

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        """Record progress; False if the lease is lost."""

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        """RUNNING -> COMPLETED fenced by the lease token; False if the lease is lost."""

    def fail(self, job_id: int, token: str, error: str, error_type: str, retry: bool) -> bool:
        """RUNNING -> RETRY (if ``retry`` and attempts remain) or FAILED; fenced."""

    def release(self, job_id: int, token: str) -> bool:
        """Give a job back without spending an attempt (graceful shutdown); fenced."""

    def reap(self) -> ReapResult:
        """Expired leases -> RETRY while attempts remain, else FAILED."""

    def register_worker(self, worker: str, pools: Sequence[str]) -> None:
        """Record that a worker is alive (for operators' live-worker counts)."""

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """Block until a job may have been queued in these pools, or ``timeout`` passes.
        Spurious wake-ups are allowed; the caller claims and waits again."""

    # --- tokens ---------------------------------------------------------------------
    def create_token(self, user: str, token_hash: str, max_priority: int, admin: bool) -> Token:
        """Store a token's hash."""

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        """The live (not revoked) token with this hash, and the stored hash."""

    def revoke_token(self, token_id: int) -> bool:
        """Revoke; False if no such live token."""

    def list_tokens(self) -> list[Token]:
        """All tokens (no secrets)."""
