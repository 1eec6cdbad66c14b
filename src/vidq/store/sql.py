"""The job store: every JobStore method, written once over a database driver.

The shape of procrastinate's ``JobManager(connector)`` and pgqueuer's ``Queries(driver)``:
``SQLStore`` decides what to run and how to read the answer; the statements are named in
``statements.py``; the driver (``sqlite.py``, ``postgres.py``) runs them, translates its
errors and wakes workers. Each method is one statement on one connection, except where a
comment says why not; time is always the database's clock.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import secrets
import statistics
from array import array
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from vidq.errors import RateLimited, StoreUnavailable
from vidq.jobs import Claim, Job, JobState, NewJob, WebhookState, queue_rank
from vidq.store.base import (
    Cancel,
    DueBlobs,
    DueWebhook,
    Failure,
    JobStatus,
    Lease,
    PoolStats,
    Quota,
    ReapResult,
    Samples,
    Token,
    Upload,
    Usage,
    UserStats,
    WebhookDelivery,
    WorkerInfo,
)
from vidq.store.counters import job_samples
from vidq.store.driver import Driver, Row, Session
from vidq.store.positions import Queue, QueueSnapshots, Running, position_key
from vidq.store.rows import (
    claim_from_row,
    dumps,
    job_from_row,
    job_status_from_row,
    token_from_row,
    upload_from_row,
)
from vidq.store.statements import Statement

# A cursor for the first page of list_jobs: above every id.
_NO_CURSOR = 2**62
# A worker counts as live for this long after it last claimed.
_LIVE_WINDOW_S = 60.0
# Claims rolled back over a user's max_running before a claim gives up (returns None).
_CLAIM_TRIES = 5


class _OverLimit(Exception):
    """A claim found its user over ``max_running``: its transaction is rolled back."""


class SQLStore:
    """JobStore over a ``Driver`` (see module docstring and ``base.JobStore``)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.inline_reads = driver.inline_reads
        self._dialect = driver.statements
        self._sql = driver.statements.prepared(driver.prepare)
        self._claims: dict[int, Statement] = {}  # the claim, by number of pools
        self._limited: dict[tuple[str, ...], Statement] = {}  # limited inserts, by limits
        self._positions = QueueSnapshots()

    def close(self) -> None:
        self.driver.close()

    def now(self) -> float:
        row = self._row(self._sql.now)
        assert row is not None
        return float(row["now"])

    # -- one statement, one connection ---------------------------------------------------
    def _row(self, stmt: Statement, **params: Any) -> Row | None:
        with self.driver.session() as db:
            return db.row(stmt, params)

    def _rows(self, stmt: Statement, **params: Any) -> list[Row]:
        with self.driver.session() as db:
            return db.rows(stmt, params)

    def _count(self, stmt: Statement, **params: Any) -> int:
        with self.driver.session() as db:
            return db.count(stmt, params)

    # -- jobs: API side ------------------------------------------------------------------
    def enqueue(self, new: NewJob, quota: Quota | None = None) -> Job:
        params = {
            "owner": new.user, "model_id": new.model_id, "pool": new.pool, "tier": new.tier,
            "priority": new.priority, "rank": queue_rank(new.tier, new.priority),
            "inputs": dumps(new.inputs),
            "higher_quality": bool(new.inputs.get("higher_quality_with_more_steps")),
            "binary_output": new.binary_output,
            "max_attempts": new.max_attempts, "work_units": new.work_units,
            "idempotency_key": new.idempotency_key, "webhook_url": new.webhook_url,
            "webhook_dialect": new.webhook_dialect, "webhook_base": new.webhook_base,
            # the webhook is registered by this INSERT: pending, due once the job finishes
            "webhook_state": WebhookState.PENDING.value if new.webhook_url else None,
            "webhook_next_at": 0.0 if new.webhook_url else None,
            "max_running": new.max_running, "video_seconds": new.video_seconds,
            "deadline_s": new.deadline_s, "start_s": new.start_s,
            "start_error": new.start_error,
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

    def claimed(self, job_id: int) -> Claim | None:
        row = self._row(self._sql.get_job, id=job_id)
        return claim_from_row(row) if row and row["lease_token"] is not None else None

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
        with self.driver.session() as db:
            row = db.row(self._sql.queue_version, {"pool": pool})
            rows = db.values(self._sql.queue_keys, {"pool": pool})
            if any(r[2] is not None for r in rows):
                running = self._fingerprint(db)
                counts = {r[0]: int(r[1]) for r in db.values(self._sql.running_by_owner, {})}
        free: array[int] = array("q")
        held: dict[str, array[int]] = {}
        for rank, job_id, max_running, owner in rows:
            key = position_key(rank, job_id)
            if max_running is None:
                free.append(key)
                continue
            # the claims take this user's jobs in order until running + taken reach the limit
            if counts.get(owner, 0) >= max_running:
                held.setdefault(owner, array("q")).append(key)
            else:
                free.append(key)
            counts[owner] = counts.get(owner, 0) + 1
        version = int(row["version"]) if row else 0
        return Queue(version, running, free, held)

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
            minute_first=None if first is None else float(first), now=float(row["now"]),
        )  # fmt: skip

    def list_jobs(self, user: str, limit: int, before_id: int | None = None) -> list[Job]:
        before = before_id if before_id is not None else _NO_CURSOR
        rows = self._rows(self._sql.list_jobs, owner=user, before=before, limit=limit)
        return [job_from_row(r) for r in rows]

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        low, high = work_units / 2, work_units * 2
        rows = self._rows(self._sql.recent_durations, pool=pool, low=low, high=high, limit=limit)
        return [float(r["seconds"]) for r in rows]

    def queue_depths(self) -> dict[str, int]:
        return {r["pool"]: int(r["queued"]) for r in self._rows(self._sql.queue_depths)}

    def live_workers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows(self._sql.live_workers, window_s=_LIVE_WINDOW_S):
            for pool in row["pools"].split(","):
                counts[pool] = counts.get(pool, 0) + 1
        return counts

    def pool_stats(self, window_s: float) -> dict[str, PoolStats]:
        # One read of the window's rows; the medians are taken here, alike on both databases.
        running: Counter[str] = Counter()
        completed: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        waits: dict[str, list[float]] = defaultdict(list)
        runs: dict[str, list[float]] = defaultdict(list)
        for r in self._rows(self._sql.pool_window, window_s=window_s):
            pool, state, since = r["pool"], r["state"], float(r["now"]) - window_s
            started, finished = r["started_at"], r["finished_at"]
            running[pool] += state == "RUNNING"
            if started is not None and started > since:
                waits[pool].append(float(started) - float(r["created_at"]))
            if finished is None or finished <= since:
                continue
            completed[pool] += state == "COMPLETED"
            failed[pool] += state == "FAILED"
            if state == "COMPLETED" and started is not None:
                runs[pool].append(float(finished) - float(started))
        pools = set(running) | set(completed) | set(failed) | set(waits)
        return {
            p: PoolStats(
                running=running[p],
                completed=completed[p],
                failed=failed[p],
                median_wait_s=statistics.median(waits[p]) if waits[p] else None,
                median_run_s=statistics.median(runs[p]) if runs[p] else None,
            )
            for p in sorted(pools)
        }

    def recent_failures(self, limit: int) -> list[Failure]:
        return [
            Failure(
                int(r["id"]),
                r["owner"],
                r["model_id"],
                r["pool"],
                r["error"],
                r["error_type"],
                float(r["finished_at"] or 0.0),
            )
            for r in self._rows(self._sql.recent_failures, limit=limit)
        ]

    # -- jobs: worker side ---------------------------------------------------------------
    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Claim | None:
        self.driver.wakeups.before_claim()
        if not pools:
            return None
        params: dict[str, Any] = {f"pool{i}": pool for i, pool in enumerate(pools)}
        params.update(token=secrets.token_hex(16), worker=worker, lease_s=lease_s)
        if self._sql.lock_running is None:
            row = self._row(self._claim(len(pools)), **params)
            return claim_from_row(row) if row else None
        for _ in range(_CLAIM_TRIES):
            try:
                return self._claim_checked(params, len(pools))
            except _OverLimit:
                continue  # rolled back; the next claim sees the user at their limit
        return None

    def _claim_checked(self, params: dict[str, Any], pools: int) -> Claim | None:
        """The claim in a transaction that, when the job's user has ``max_running``,
        counts their running jobs under a per-user lock and rolls itself back when over
        (see ``Statements.lock_running``). Claims of users without a limit take no lock."""
        assert self._sql.lock_running is not None
        with self.driver.transaction() as db:
            row = db.row(self._claim(pools), params)
            if row is None:
                return None
            limit = row["max_running"]
            if limit is not None:
                db.row(self._sql.lock_running, {"owner": row["owner"]})
                counted = db.row(self._sql.running_of, {"owner": row["owner"]})
                if counted is not None and int(counted["n"]) > int(limit):
                    raise _OverLimit
            return claim_from_row(row)

    def _claim(self, pools: int) -> Statement:
        stmt = self._claims.get(pools)
        if stmt is None:
            raw = self._dialect.with_pools(self._dialect.claim, pools)
            stmt = self._claims[pools] = self.driver.prepare(raw)
        return stmt

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> Lease:
        row = self._row(self._sql.heartbeat, id=job_id, token=token, lease_s=lease_s)
        if row is None:
            return Lease.LOST
        return Lease.CANCEL if row["cancel_requested"] else Lease.HELD

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        changed = self._count(self._sql.progress, id=job_id, token=token, done=done, total=total)
        return changed == 1

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        changed = self._count(
            self._sql.complete, id=job_id, token=token, result_key=result_key, meta=dumps(meta)
        )
        return changed == 1

    def finish_cancel(self, job_id: int, token: str) -> bool:
        return self._count(self._sql.finish_cancel, id=job_id, token=token) == 1

    def fail(
        self,
        job_id: int,
        token: str,
        error: str,
        error_type: str,
        retry: bool,
        retry_after_s: float = 0.0,
    ) -> bool:
        row = self._row(
            self._sql.fail, id=job_id, token=token, error=error, error_type=error_type,
            retry=retry, retry_after_s=retry_after_s,
        )  # fmt: skip
        return row is not None

    def release(self, job_id: int, token: str) -> bool:
        return self._row(self._sql.release, id=job_id, token=token) is not None

    def reap(self) -> ReapResult:
        rows = self._rows(self._sql.reap)
        expired = self._rows(self._sql.expire)
        return ReapResult(
            retried=[int(r["id"]) for r in rows if r["state"] == "RETRY"],
            failed=[int(r["id"]) for r in rows if r["state"] == "FAILED"],
            cancelled=[int(r["id"]) for r in rows if r["state"] == "CANCELLED"],
            expired=[int(r["id"]) for r in expired],
        )

    def register_worker(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str] | None = None
    ) -> None:
        engines_text = ",".join(f"{p}={e}" for p, e in (engines or {}).items())
        self._count(
            self._sql.register_worker, name=worker, pools=",".join(pools), engines=engines_text
        )

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        self.driver.wait(timeout)

    # -- webhooks ------------------------------------------------------------------------
    def due_webhooks(self, limit: int, after_id: int = 0) -> list[DueWebhook]:
        rows = self._rows(self._sql.due_webhooks, after=after_id, limit=limit)
        return [DueWebhook(int(r["id"]), r["owner"], r["webhook_url"]) for r in rows]

    def take_webhook(self, job_id: int, lease_s: float) -> WebhookDelivery | None:
        row = self._row(self._sql.take_webhook, id=job_id, lease_s=lease_s)
        return WebhookDelivery(job_from_row(row), int(row["webhook_attempts"])) if row else None

    def webhook_result(
        self, job_id: int, attempts: int, state: WebhookState, retry_after_s: float = 0.0
    ) -> bool:
        changed = self._count(
            self._sql.webhook_result, id=job_id, attempts=attempts, state=state.value,
            retry_after_s=retry_after_s,
        )  # fmt: skip
        return changed == 1

    # -- operators -----------------------------------------------------------------------
    def admin_jobs(
        self,
        *,
        user: str | None,
        states: Sequence[JobState],
        pool: str | None,
        since: float,
        limit: int,
        before_id: int | None = None,
    ) -> list[Job]:
        if len(states) > 2:
            raise ValueError("at most two states")
        names = [s.value for s in states]
        rows = self._rows(
            self._sql.admin_jobs, owner=user, pool=pool, since=since, limit=limit,
            state_a=names[0] if names else None, state_b=names[-1] if names else None,
            before=before_id if before_id is not None else _NO_CURSOR,
        )  # fmt: skip
        return [job_from_row(r) for r in rows]

    def admin_retry(self, job_id: int) -> bool:
        return self._row(self._sql.admin_retry, id=job_id) is not None

    def user_stats(self, since: float) -> list[UserStats]:
        return [
            UserStats(
                user=r["owner"],
                queued=int(r["queued"]),
                running=int(r["running"]),
                completed_today=int(r["completed"]),
                failed_today=int(r["failed"]),
                video_seconds_today=round(float(r["video_seconds"] or 0.0), 3),
            )
            for r in self._rows(self._sql.user_stats, since=since)
        ]

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                name=r["name"],
                pools=tuple(p for p in r["pools"].split(",") if p),
                engines=dict(
                    pair.split("=", 1) for pair in (r["engines"] or "").split(",") if "=" in pair
                ),
                seen_s_ago=round(max(0.0, float(r["age"])), 3),
                current_job=int(r["job"]) if r["job"] is not None else None,
                jobs_done=int(r["done"]),
            )
            for r in self._rows(self._sql.workers)
        ]

    def pause_pool(self, pool: str) -> None:
        self._count(self._sql.pause_pool, pool=pool)

    def resume_pool(self, pool: str) -> bool:
        return bool(self._rows(self._sql.resume_pool, pool=pool))

    def paused_pools(self) -> list[str]:
        return [r["pool"] for r in self._rows(self._sql.paused_pools)]

    def job_samples(self) -> Samples:
        with self.driver.session() as db:
            counts = db.values(self._sql.job_counts, {})
            durations = db.values(self._sql.job_durations, {})
            rollup = db.values(self._sql.metric_rollup, {})
        samples = job_samples(counts, durations)
        for family, label, value in rollup:
            samples[(family, label)] = samples.get((family, label), 0.0) + float(value)
        return samples

    def pool_states(self) -> dict[str, dict[JobState, int]]:
        states: dict[str, dict[JobState, int]] = {}
        for row in self._rows(self._sql.pool_states):
            states.setdefault(row["pool"], {})[JobState(row["state"])] = int(row["n"])
        return states

    # -- retention -----------------------------------------------------------------------
    def take_lease(self, name: str, holder: str, lease_s: float) -> bool:
        return (
            self._row(self._sql.take_lease, name=name, holder=holder, lease_s=lease_s) is not None
        )

    def release_lease(self, name: str, holder: str) -> None:
        self._count(self._sql.release_lease, name=name, holder=holder)

    def inputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        due = []
        for row in self._rows(self._sql.inputs_due, ttl=ttl_s, limit=limit):
            blobs = json.loads(row["inputs"]).get("_blobs", {})
            keys = tuple(str(k) for k in blobs.values())
            due.append(DueBlobs(int(row["id"]), keys, row["inputs_expired_at"] is not None))
        return due

    def expire_inputs(self, job_id: int) -> None:
        self._count(self._sql.expire_inputs, id=job_id)

    def inputs_deleted(self, job_id: int) -> None:
        self._count(self._sql.inputs_deleted, id=job_id)

    def outputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        return [
            DueBlobs(
                int(r["id"]),
                (r["result_key"],) if r["result_key"] else (),
                r["expired_at"] is not None,
            )
            for r in self._rows(self._sql.outputs_due, ttl=ttl_s, limit=limit)
        ]

    def expire_output(self, job_id: int) -> None:
        self._count(self._sql.expire_output, id=job_id)

    def output_deleted(self, job_id: int) -> None:
        self._count(self._sql.output_deleted, id=job_id)

    def purge_jobs(self, ttl_s: float, limit: int) -> int:
        bounds = self._rows(self._sql.purge_bound, ttl=ttl_s, limit=limit)
        if not bounds:
            return 0
        upto = float(bounds[-1]["finished_at"])
        with self.driver.transaction() as db:
            counts = db.values(self._sql.purge_counts, {"upto": upto})
            durations = db.values(self._sql.purge_durations, {"upto": upto})
            for (family, label), value in job_samples(counts, durations).items():
                db.count(self._sql.add_rollup, {"family": family, "labels": label, "value": value})
            return db.count(self._sql.purge_jobs, {"upto": upto})

    # -- tokens --------------------------------------------------------------------------
    def create_token(
        self,
        user: str,
        token_hash: str,
        max_priority: int,
        admin: bool,
        quota: Quota = Quota(),
        *,
        worker: bool = False,
        pools: Sequence[str] | None = None,
    ) -> Token:
        row = self._row(
            self._sql.insert_token,
            owner=user, token_hash=token_hash, max_priority=max_priority, admin=admin,
            worker=worker, pools=",".join(pools) if pools else None,
            **dataclasses.asdict(quota),
        )  # fmt: skip
        assert row is not None
        return token_from_row(row)

    def update_token(self, token_id: int, max_priority: int, quota: Quota) -> Token | None:
        params = {"id": token_id, "max_priority": max_priority, **dataclasses.asdict(quota)}
        with self.driver.session() as db:
            if db.row(self._sql.update_token, params) is None:
                return None
            row = db.row(self._sql.token_by_id, {"id": token_id})
        return token_from_row(row) if row else None

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        row = self._row(self._sql.token_by_hash, token_hash=token_hash)
        return (token_from_row(row), row["token_hash"]) if row else None

    def revoke_token(self, token_id: int) -> bool:
        return self._count(self._sql.revoke_token, id=token_id) == 1

    def list_tokens(self) -> list[Token]:
        return [token_from_row(r) for r in self._rows(self._sql.list_tokens)]

    # -- uploads -------------------------------------------------------------------------
    def create_upload(
        self,
        upload_id: str,
        user: str,
        key: str,
        content_type: str,
        file_name: str,
        expires_in_s: float | None,
    ) -> Upload:
        row = self._row(
            self._sql.insert_upload, id=upload_id, owner=user, key=key,
            content_type=content_type, file_name=file_name, expires_in=expires_in_s,
        )  # fmt: skip
        assert row is not None
        return upload_from_row(row)

    def get_upload(self, upload_id: str, user: str | None = None) -> Upload | None:
        row = self._row(self._sql.get_upload, id=upload_id)
        if row is None or (user is not None and row["owner"] != user):
            return None
        return upload_from_row(row)

    def upload_stored(self, upload_id: str, size: int) -> bool:
        return self._count(self._sql.upload_stored, id=upload_id, size=size) == 1

    def expired_uploads(self, max_age_s: float, limit: int) -> list[Upload]:
        rows = self._rows(self._sql.expired_uploads, max_age_s=max_age_s, limit=limit)
        return [upload_from_row(r) for r in rows]

    def delete_upload(self, upload_id: str) -> bool:
        return self._count(self._sql.delete_upload, id=upload_id) == 1


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
    return None
