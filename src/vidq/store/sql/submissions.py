"""A user's jobs (``SubmitStore``): the submit, under the token's limits and an
Idempotency-Key, and the user routes' reads (one job, its status and queue position from
the cached snapshots of ``store/positions.py``, lists, cancels, usage)."""

from __future__ import annotations

import functools
from array import array
from typing import Any

from vidq.errors import RateLimited, StoreUnavailable
from vidq.jobs import Job, JobState, NewJob, WebhookState, queue_rank
from vidq.store.base import Cancel, DailyUsage, JobFilter, JobStatus, Quota, Usage
from vidq.store.driver import Driver, Row, Session
from vidq.store.positions import (
    Queue,
    Queued,
    QueueSnapshots,
    Running,
    Turn,
    position_key,
    turn_order,
)
from vidq.store.rows import daily_usage_from_row, dumps, job_from_row, job_status_from_row
from vidq.store.sql.core import NO_CURSOR, Queries
from vidq.store.statements import Statement


class SubmitQueries(Queries):
    """``SubmitStore`` (see ``base.SubmitStore``)."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(driver)
        self._limited: dict[tuple[str, ...], Statement] = {}  # limited inserts, by limits
        self._positions = QueueSnapshots()

    def enqueue(self, new: NewJob, quota: Quota | None = None) -> Job:
        params = {
            "owner": new.user, "model_id": new.model_id, "pool": new.pool, "tier": new.tier,
            "priority": new.priority, "rank": queue_rank(new.tier, new.priority),
            "inputs": dumps(new.inputs),
            "higher_quality": bool(new.inputs.get("higher_quality_with_more_steps")),
            "seed": _seed(new.inputs.get("seed")), "binary_output": new.binary_output,
            "max_attempts": new.max_attempts, "work_units": new.work_units,
            "idempotency_key": new.idempotency_key, "webhook_url": new.webhook_url,
            "webhook_dialect": new.webhook_dialect, "webhook_base": new.webhook_base,
            # the webhook is registered by this INSERT: pending, due once the job finishes
            "webhook_state": WebhookState.PENDING.value if new.webhook_url else None,
            "webhook_next_at": 0.0 if new.webhook_url else None,
            "max_running": new.max_running, "video_seconds": new.video_seconds,
            "deadline_s": new.deadline_s, "start_s": new.start_s,
            "start_error": new.start_error, "weight": new.weight,
        }  # fmt: skip
        limits = quota.submit_limits() if quota is not None else []
        if quota is not None and limits:
            return self._enqueue_limited(new, quota, limits, params)
        with self.driver.session() as db:
            row = db.row(self._sql.insert_job, params)
            if row is None:
                row = self._replay(db, new)
        if row is None:  # pragma: no cover - the index guarantees a row
            raise StoreUnavailable("idempotency key conflict without a stored job")
        return job_from_row(row)

    def _replay(self, db: Session, new: NewJob) -> Row | None:
        """The job an earlier submit with ``new``'s Idempotency-Key created (the
        (owner, idempotency_key) index refused ours: a retried or concurrent submit; on
        PostgreSQL, ON CONFLICT waited for that insert to commit)."""
        if new.idempotency_key is None:
            return None
        return db.row(self._sql.by_idempotency, {"owner": new.user, "key": new.idempotency_key})

    def _enqueue_limited(
        self, new: NewJob, quota: Quota, limits: list[str], params: dict[str, Any]
    ) -> Job:
        """The INSERT whose own condition checks the limits, serialised with the user's
        other submits (see ``Statements.lock_user``). A refused insert is either a replay
        (its key is taken) or over a limit; the usage read says which limit."""
        stmt = self._limited.get(tuple(limits))
        if stmt is None:
            raw = self._dialect.insert_limited(limits)
            stmt = self._limited[tuple(limits)] = self.driver.prepare(raw)
        params = {**params, **{name: getattr(quota, name) for name in limits}}
        for _ in range(3):  # a claim between the insert and the read may free a slot
            with self.driver.transaction() as db:
                if self._sql.lock_user is not None:
                    db.row(self._sql.lock_user, {"owner": new.user})
                row = db.row(stmt, params) or self._replay(db, new)
                if row is not None:
                    return job_from_row(row)
                refused = refusal(quota, self._usage(db, new.user), new.video_seconds)
            if refused is not None:
                raise refused
        raise RateLimited(
            "this token's limits leave no room now", limit=limits[0],
            value=int(getattr(quota, limits[0])), retry_after=1,
        )  # fmt: skip

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        if user is None:
            row = self._row(self._sql.get_job, id=job_id)
        else:
            row = self._row(self._sql.get_job_of, id=job_id, owner=user)
        return job_from_row(row) if row else None

    def find_by_idempotency_key(self, user: str, key: str) -> Job | None:
        row = self._row(self._sql.by_idempotency, owner=user, key=key)
        return job_from_row(row) if row else None

    def find_by_result_key(self, key: str) -> Job | None:
        row = self._row(self._sql.by_result_key, key=key)
        return job_from_row(row) if row else None

    def queue_position(self, job: Job) -> int:
        row = self._row(self._sql.queue_version, pool=job.pool)
        version = int(row["version"]) if row else 0
        key = position_key(queue_rank(job.tier, job.priority), job.id)
        return self._position(job.user, job.pool, key, version)[0]

    def job_status(self, job_id: int, user: str) -> JobStatus | None:
        with self.driver.session() as db:
            rows = db.values(self._sql.job_status, {"id": job_id, "owner": user})
        if not rows:
            return None
        return job_status_from_row(rows[0], functools.partial(self._position, user))

    def _position(self, user: str, pool: str, key: int, version: int) -> tuple[int, bool]:
        return self._positions.position(
            pool, user, key, version, self._queue_snapshot, self._running
        )

    def _running(self) -> Running:
        with self.driver.session() as db:
            return self._fingerprint(db)

    def _fingerprint(self, db: Session) -> Running:
        count, ids, started = db.values(self._sql.running_jobs, {})[0]
        return int(count), int(ids), float(started)

    def _queue_snapshot(self, pool: str) -> Queue:
        # The version before the keys, the running fingerprint before the running counts:
        # what is read afterwards is at least that new (see positions.py).
        running: Running | None = None
        counts: dict[str, int] = {}
        turns: dict[str, Turn] | None = None
        with self.driver.session() as db:
            row = db.row(self._sql.queue_version, {"pool": pool})
            if self.fair_share:  # the turn order before the queue: a claim moves both
                turns = {
                    r[0]: (int(r[1]), int(r[2]))
                    for r in db.values(self._sql.turns_of, {"pool": pool})
                }
                rows = db.values(self._sql.queue_turn_keys, {"pool": pool})
            else:
                rows = db.values(self._sql.queue_keys, {"pool": pool})
            if any(r[2] is not None for r in rows):
                running = self._fingerprint(db)
                counts = {r[0]: int(r[1]) for r in db.values(self._sql.running_by_owner, {})}
        free: array[int] = array("q")
        held: dict[str, array[int]] = {}
        queued: list[Queued] = []
        for rank, job_id, max_running, owner, weight in rows:
            key = position_key(rank, job_id)
            is_held = False
            if max_running is not None:
                # the claims take this user's jobs in order until running + taken reach
                # the limit
                is_held = counts.get(owner, 0) >= max_running
                counts[owner] = counts.get(owner, 0) + 1
            if is_held:
                held.setdefault(owner, array("q")).append(key)
            else:
                free.append(key)
            if turns is not None:
                queued.append((rank, job_id, owner, weight, is_held))
        version = int(row["version"]) if row else 0
        order = None if turns is None else turn_order(queued, turns)
        return Queue(version, running, free, held, order)

    def cancel(self, job_id: int, user: str) -> bool:
        return self.cancel_job(job_id, user, running=False) is Cancel.CANCELLED

    def cancel_job(self, job_id: int, user: str, *, running: bool) -> Cancel | None:
        row = self._row(self._sql.cancel, id=job_id, owner=user, running=running)
        if row is None:
            return None
        return Cancel.REQUESTED if row["state"] == JobState.RUNNING.value else Cancel.CANCELLED

    def usage(self, user: str) -> Usage:
        with self.driver.session() as db:
            return self._usage(db, user)

    def _usage(self, db: Session, user: str) -> Usage:
        row = db.row(self._sql.usage, {"owner": user})
        assert row is not None
        first = row["minute_first"]
        return Usage(
            queued=int(row["queued"]), running=int(row["running"]),
            last_minute=int(row["last_minute"]),
            video_seconds_today=float(row["video_seconds_today"]),
            gpu_seconds_today=float(row["gpu_seconds_today"]),
            minute_first=None if first is None else float(first), now=float(row["now"]),
        )  # fmt: skip

    def daily_usage(self, user: str, days: int) -> list[DailyUsage]:
        rows = self._rows(self._sql.daily_usage, owner=user, back_s=(days - 1) * 86400)
        return [daily_usage_from_row(r) for r in rows]

    def list_jobs(
        self, user: str, limit: int, before_id: int | None = None, where: JobFilter = JobFilter()
    ) -> list[Job]:
        before = before_id if before_id is not None else NO_CURSOR
        states: list[str | None] = [s.value for s in where.states] or [None]
        rows = self._rows(
            self._sql.list_jobs, owner=user, before=before, limit=limit,
            model_id=where.model_id, state1=states[0], state2=states[-1],
            pattern=None if where.prompt is None else like_pattern(where.prompt),
        )  # fmt: skip
        return [job_from_row(r) for r in rows]

    def delete_job(self, job_id: int, user: str) -> Job | None:
        row = self._row(self._sql.delete_job, id=job_id, owner=user)
        return None if row is None else job_from_row(row)


def like_pattern(text: str) -> str:
    """A LIKE pattern (escape character ``\\``) for a lower-cased substring of ``text``
    matched literally: its ``%``, ``_`` and ``\\`` are escaped."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# When a refused submit may try again: a queued job leaves the queue within moments on a
# served pool; this is a hint, not a promise.
_QUEUED_RETRY_S = 5.0


def refusal(quota: Quota, usage: Usage, video_seconds: float) -> RateLimited | None:
    """The limit a submit of ``video_seconds`` of video is over, given the user's usage;
    None if it fits them all."""
    if quota.max_queued is not None and usage.queued >= quota.max_queued:
        return RateLimited(
            f"max_queued: this token may have {quota.max_queued} requests queued at once "
            f"({usage.queued} are); retry when one has started",
            limit="max_queued", value=quota.max_queued, retry_after=_QUEUED_RETRY_S,
        )  # fmt: skip
    if quota.rate_per_minute is not None and usage.last_minute >= quota.rate_per_minute:
        first = usage.minute_first if usage.minute_first is not None else usage.now
        return RateLimited(
            f"rate_per_minute: this token may submit {quota.rate_per_minute} requests "
            "per minute",
            limit="rate_per_minute", value=quota.rate_per_minute,
            retry_after=60.0 - (usage.now - first),
        )  # fmt: skip
    limit = quota.daily_video_seconds
    if limit is not None and usage.video_seconds_today + video_seconds > limit:
        return RateLimited(
            f"daily_video_seconds: this token may request {limit} s of video per UTC day "
            f"({usage.video_seconds_today:g} s used today, this request asks for "
            f"{video_seconds:g} s)",
            limit="daily_video_seconds", value=limit,
            retry_after=86400.0 - usage.now % 86400.0,
        )  # fmt: skip
    gpu = quota.daily_gpu_seconds
    if gpu is not None and usage.gpu_seconds_today >= gpu:
        return RateLimited(
            f"daily_gpu_seconds: this token's requests may use {gpu} GPU-seconds per UTC "
            f"day ({usage.gpu_seconds_today:.1f} s used today, running requests included); "
            "running requests finish, new ones are accepted again at 00:00 UTC",
            limit="daily_gpu_seconds", value=gpu, retry_after=86400.0 - usage.now % 86400.0,
        )  # fmt: skip
    return None


def _seed(value: Any) -> int | None:
    """The ``seed`` column of a job's inputs: the seed when it is one (an int; the schema
    bounds it), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None
