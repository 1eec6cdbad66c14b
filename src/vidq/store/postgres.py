"""PostgreSQL adapter of JobStore: the scale-out store shared by API replicas and workers.

A psycopg 3 connection pool in autocommit mode: every statement is its own transaction,
so ``now()`` (the transaction's start) is the statement's time. ``now()`` rather than
``clock_timestamp()`` because it is stable within a statement: the claim and the reaper
compare every row against one instant, and the planner can use the partial
``ix_jobs_lease`` index for ``lease_until < now``.

The claim is one statement: a CTE picks the first queued row of the pools in
``(rank, id)`` order ``FOR UPDATE SKIP LOCKED`` and ``UPDATE ... RETURNING`` takes it, so
concurrent claimers never block on, nor share, a row. Idle workers sleep in
``wait_for_jobs`` on ``LISTEN vidq_jobs``; enqueue, retry and release ``NOTIFY`` it.

Every psycopg error becomes ``StoreUnavailable``; pooled connections are checked before
use, so the store recovers by itself once the server is back.
"""

from __future__ import annotations

import logging
import secrets
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from vidq.errors import StoreUnavailable
from vidq.jobs import Job, NewJob, queue_rank
from vidq.store.base import JobStatus, ReapResult, Token
from vidq.store.positions import QueueSnapshots, position_key
from vidq.store.rows import JOB_COLUMNS, dumps, job_from_row, job_status_from_row

log = logging.getLogger(__name__)

NOW = "extract(epoch from now())::float8"
CHANNEL = "vidq_jobs"


class SQL:
    """Named statements of the PostgreSQL dialect."""

    now = f"SELECT {NOW} AS now"
    insert_job = f"""
        WITH new AS (
            INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state, inputs,
                binary_output, max_attempts, work_units, idempotency_key, webhook_url,
                created_at)
            VALUES (%s, %s, %s, %s, %s, %s, 'PENDING', %s, %s, %s, %s, %s, %s, {NOW})
            RETURNING {JOB_COLUMNS})
        SELECT new.*, pg_notify('{CHANNEL}', new.pool) AS notified FROM new"""
    get_job = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s"
    get_job_of = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = %s AND owner = %s"
    by_idempotency = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = %s AND idempotency_key = %s"
    by_result_key = f"SELECT {JOB_COLUMNS} FROM jobs WHERE result_key = %s"
    queue_version = "SELECT version FROM queue_versions WHERE pool = %s"
    job_status = """
        SELECT id, model_id, pool, tier, priority, state, progress_done, progress_total,
            work_units,
            coalesce((inputs::jsonb ->> 'higher_quality_with_more_steps') = 'true', false),
            result_key, error,
            (SELECT version FROM queue_versions AS q WHERE q.pool = jobs.pool)
        FROM jobs WHERE id = %s AND owner = %s"""
    queue_keys = """
        SELECT rank, id FROM jobs WHERE pool = %s AND state IN ('PENDING', 'RETRY')
        ORDER BY rank, id"""
    cancel = f"""
        UPDATE jobs SET state = 'CANCELLED', finished_at = {NOW}
        WHERE id = %s AND owner = %s AND state IN ('PENDING', 'RETRY')"""
    list_jobs = f"""
        SELECT {JOB_COLUMNS} FROM jobs WHERE owner = %s AND id < %s
        ORDER BY id DESC LIMIT %s"""
    recent_durations = """
        SELECT finished_at - started_at AS d FROM jobs
        WHERE pool = %s AND state = 'COMPLETED' AND work_units BETWEEN %s AND %s
          AND started_at IS NOT NULL
        ORDER BY finished_at DESC LIMIT %s"""
    queue_depths = """
        SELECT pool, count(*) AS n FROM jobs
        WHERE state IN ('PENDING', 'RETRY') GROUP BY pool"""
    live_workers = f"SELECT pools FROM workers WHERE seen_at > {NOW} - %s"
    claim = f"""
        WITH next AS (
            SELECT id FROM jobs
            WHERE pool = ANY(%(pools)s) AND state IN ('PENDING', 'RETRY')
            ORDER BY rank, id LIMIT 1
            FOR UPDATE SKIP LOCKED)
        UPDATE jobs SET state = 'RUNNING', attempt = attempt + 1, lease_token = %(token)s,
            worker = %(worker)s, lease_until = {NOW} + %(lease)s, started_at = {NOW},
            progress_done = 0, progress_total = 0
        WHERE id = (SELECT id FROM next)
        RETURNING {JOB_COLUMNS}"""
    heartbeat = f"""
        UPDATE jobs SET lease_until = {NOW} + %s
        WHERE id = %s AND lease_token = %s AND state = 'RUNNING'"""
    progress = """
        UPDATE jobs SET progress_done = %s, progress_total = %s
        WHERE id = %s AND lease_token = %s AND state = 'RUNNING'"""
    complete = f"""
        UPDATE jobs SET state = 'COMPLETED', result_key = %s, result_meta = %s,
            finished_at = {NOW}, lease_token = NULL, lease_until = NULL,
            progress_done = progress_total
        WHERE id = %s AND lease_token = %s AND state = 'RUNNING'"""
    fail = f"""
        UPDATE jobs SET
            state = CASE WHEN %(retry)s AND attempt < max_attempts
                THEN 'RETRY' ELSE 'FAILED' END,
            error = %(error)s, error_type = %(error_type)s,
            lease_token = NULL, lease_until = NULL,
            finished_at = CASE WHEN %(retry)s AND attempt < max_attempts
                THEN NULL ELSE {NOW} END
        WHERE id = %(id)s AND lease_token = %(token)s AND state = 'RUNNING'
        RETURNING state, pool"""
    release = """
        UPDATE jobs SET state = 'RETRY', attempt = attempt - 1, lease_token = NULL,
            lease_until = NULL, worker = NULL
        WHERE id = %s AND lease_token = %s AND state = 'RUNNING'
        RETURNING pool"""
    reap = f"""
        UPDATE jobs SET
            state = CASE WHEN attempt < max_attempts THEN 'RETRY' ELSE 'FAILED' END,
            error = CASE WHEN attempt < max_attempts THEN error
                ELSE 'The job failed after ' || attempt || ' attempts: ' ||
                     'the worker stopped responding (lease expired).' END,
            error_type = CASE WHEN attempt < max_attempts THEN error_type
                ELSE 'lease_expired' END,
            finished_at = CASE WHEN attempt < max_attempts THEN NULL ELSE {NOW} END,
            lease_token = NULL, lease_until = NULL
        WHERE state = 'RUNNING' AND lease_until < {NOW}
        RETURNING id, state, pool"""
    notify = f"SELECT pg_notify('{CHANNEL}', %s)"
    register_worker = f"""
        INSERT INTO workers (name, pools, seen_at) VALUES (%s, %s, {NOW})
        ON CONFLICT (name) DO UPDATE SET pools = excluded.pools, seen_at = excluded.seen_at"""
    insert_token = f"""
        INSERT INTO tokens (owner, token_hash, max_priority, admin, created_at)
        VALUES (%s, %s, %s, %s, {NOW}) RETURNING id, owner, max_priority, admin, created_at"""
    token_by_hash = """
        SELECT id, owner, max_priority, admin, created_at, token_hash FROM tokens
        WHERE token_hash = %s AND revoked_at IS NULL"""
    revoke_token = f"""
        UPDATE tokens SET revoked_at = {NOW} WHERE id = %s AND revoked_at IS NULL"""
    list_tokens = """
        SELECT id, owner, max_priority, admin, created_at, revoked_at IS NOT NULL AS revoked
        FROM tokens ORDER BY id"""


class PostgresStore:
    """JobStore on a PostgreSQL server (see module docstring)."""

    inline_reads = False  # network round trips: the API reads from a thread

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 16,
        timeout_s: float = 3.0,
        connect_timeout_s: int = 3,
    ) -> None:
        self.conninfo = conninfo
        self._timeout_s = timeout_s
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": connect_timeout_s,
        }
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            conninfo,
            connection_class=psycopg.Connection[dict[str, Any]],
            kwargs={**self._connect_kwargs, "row_factory": dict_row},
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            # The pool's reconnect backoff doubles without bound: give up a series after
            # a few seconds so the next request starts a fresh, immediate attempt, and
            # the store is back within moments of the server.
            reconnect_timeout=5.0,
            name="vidq",
            open=False,
        )
        self._pool.open(wait=False)
        # LISTEN/NOTIFY wake-ups: one listener thread per store bumps a generation
        # counter; a thread that saw generation g at its last claim does not sleep if the
        # counter moved since (so a NOTIFY between claim and wait is never missed).
        self._woken = threading.Condition()
        self._generation = 0
        self._seen = threading.local()
        self._listener: threading.Thread | None = None
        self._closing = threading.Event()
        self._positions = QueueSnapshots()

    @classmethod
    def from_url(cls, url: str) -> PostgresStore:
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        return cls(url)

    # -- connections ---------------------------------------------------------------
    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        try:
            with self._pool.connection(timeout=self._timeout_s) as conn:
                yield conn
        except psycopg.Error as exc:
            raise StoreUnavailable(f"PostgreSQL error: {_describe(exc)}") from exc

    def _one(self, sql: str, params: Any = ()) -> dict[str, Any] | None:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchone()

    def _all_rows(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        with self._conn() as conn:
            return conn.execute(sql, params).fetchall()

    def _rowcount(self, sql: str, params: Any = ()) -> int:
        with self._conn() as conn:
            return conn.execute(sql, params).rowcount

    def close(self) -> None:
        self._closing.set()
        with self._woken:
            self._woken.notify_all()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(5)

    def now(self) -> float:
        row = self._one(SQL.now)
        assert row is not None
        return float(row["now"])

    # -- API side --------------------------------------------------------------------
    def enqueue(self, new: NewJob) -> Job:
        params = (
            new.user, new.model_id, new.pool, new.tier, new.priority,
            queue_rank(new.tier, new.priority), dumps(new.inputs), new.binary_output,
            new.max_attempts, new.work_units, new.idempotency_key, new.webhook_url,
        )  # fmt: skip
        try:
            row = self._one(SQL.insert_job, params)
        except StoreUnavailable as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation) and new.idempotency_key:
                # Same user, same Idempotency-Key, raced with another submit: that job.
                found = self.find_by_idempotency_key(new.user, new.idempotency_key)
                if found is not None:
                    return found
            raise
        assert row is not None
        return job_from_row(row)

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        if user is None:
            row = self._one(SQL.get_job, (job_id,))
        else:
            row = self._one(SQL.get_job_of, (job_id, user))
        return job_from_row(row) if row else None

    def find_by_idempotency_key(self, user: str, key: str) -> Job | None:
        row = self._one(SQL.by_idempotency, (user, key))
        return job_from_row(row) if row else None

    def find_by_result_key(self, key: str) -> Job | None:
        row = self._one(SQL.by_result_key, (key,))
        return job_from_row(row) if row else None

    def queue_position(self, job: Job) -> int:
        row = self._one(SQL.queue_version, (job.pool,))
        version = int(row["version"]) if row else 0
        key = position_key(queue_rank(job.tier, job.priority), job.id)
        return self._position(job.pool, key, version)

    def job_status(self, job_id: int, user: str) -> JobStatus | None:
        with self._conn() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            row = cur.execute(SQL.job_status, (job_id, user)).fetchone()
        if row is None:
            return None
        return job_status_from_row(row, self._position)

    def _position(self, pool: str, key: int, version: int) -> int:
        return self._positions.position(pool, key, version, self._queue_snapshot)

    def _queue_snapshot(self, pool: str) -> tuple[int, array[int]]:
        # The version first: keys read afterwards are at least that new (see positions.py).
        with self._conn() as conn:
            cur = conn.cursor(row_factory=tuple_row)
            row = cur.execute(SQL.queue_version, (pool,)).fetchone()
            rows = cur.execute(SQL.queue_keys, (pool,), binary=True).fetchall()
        keys = array("q", (position_key(r[0], r[1]) for r in rows))
        return (int(row[0]) if row else 0), keys

    def cancel(self, job_id: int, user: str) -> bool:
        return self._rowcount(SQL.cancel, (job_id, user)) == 1

    def list_jobs(self, user: str, limit: int, before_id: int | None = None) -> list[Job]:
        before = before_id if before_id is not None else 2**62
        return [job_from_row(r) for r in self._all_rows(SQL.list_jobs, (user, before, limit))]

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        rows = self._all_rows(SQL.recent_durations, (pool, work_units / 2, work_units * 2, limit))
        return [float(r["d"]) for r in rows]

    def queue_depths(self) -> dict[str, int]:
        return {r["pool"]: int(r["n"]) for r in self._all_rows(SQL.queue_depths)}

    def live_workers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._all_rows(SQL.live_workers, (60.0,)):
            for pool in row["pools"].split(","):
                counts[pool] = counts.get(pool, 0) + 1
        return counts

    # -- worker side -----------------------------------------------------------------
    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Job | None:
        self._seen.generation = self._generation
        if not pools:
            return None
        params = {
            "pools": list(pools),
            "token": secrets.token_hex(16),
            "worker": worker,
            "lease": lease_s,
        }
        row = self._one(SQL.claim, params)
        return job_from_row(row) if row else None

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> bool:
        return self._rowcount(SQL.heartbeat, (lease_s, job_id, token)) == 1

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        return self._rowcount(SQL.progress, (done, total, job_id, token)) == 1

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        return self._rowcount(SQL.complete, (result_key, dumps(meta), job_id, token)) == 1

    def fail(self, job_id: int, token: str, error: str, error_type: str, retry: bool) -> bool:
        params = {
            "retry": retry,
            "error": error,
            "error_type": error_type,
            "id": job_id,
            "token": token,
        }
        with self._conn() as conn:
            row = conn.execute(SQL.fail, params).fetchone()
            if row is not None and row["state"] == "RETRY":
                conn.execute(SQL.notify, (row["pool"],))
        return row is not None

    def release(self, job_id: int, token: str) -> bool:
        with self._conn() as conn:
            row = conn.execute(SQL.release, (job_id, token)).fetchone()
            if row is not None:
                conn.execute(SQL.notify, (row["pool"],))
        return row is not None

    def reap(self) -> ReapResult:
        with self._conn() as conn:
            rows = conn.execute(SQL.reap).fetchall()
            for pool in sorted({r["pool"] for r in rows if r["state"] == "RETRY"}):
                conn.execute(SQL.notify, (pool,))
        return ReapResult(
            retried=[int(r["id"]) for r in rows if r["state"] == "RETRY"],
            failed=[int(r["id"]) for r in rows if r["state"] == "FAILED"],
        )

    def register_worker(self, worker: str, pools: Sequence[str]) -> None:
        self._rowcount(SQL.register_worker, (worker, ",".join(pools)))

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        self._ensure_listener()
        seen = getattr(self._seen, "generation", None)
        with self._woken:
            if seen is not None and seen != self._generation:
                return  # a NOTIFY arrived since this thread's last claim
            self._woken.wait(timeout)

    def _ensure_listener(self) -> None:
        if self._listener is not None or self._closing.is_set():
            return
        with self._woken:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="vidq-pg-listen", daemon=True
                )
                self._listener.start()

    def _wake(self) -> None:
        with self._woken:
            self._generation += 1
            self._woken.notify_all()

    def _listen(self) -> None:
        """Holds one LISTEN connection; reconnects after outages (waking everyone, since
        notifications sent while disconnected are lost)."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.conninfo, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._wake()
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            self._wake()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost: %s", _describe(exc))
                self._closing.wait(1.0)

    # -- tokens ----------------------------------------------------------------------
    def create_token(self, user: str, token_hash: str, max_priority: int, admin: bool) -> Token:
        row = self._one(SQL.insert_token, (user, token_hash, max_priority, admin))
        assert row is not None
        return _token(row)

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        row = self._one(SQL.token_by_hash, (token_hash,))
        return (_token(row), row["token_hash"]) if row else None

    def revoke_token(self, token_id: int) -> bool:
        return self._rowcount(SQL.revoke_token, (token_id,)) == 1

    def list_tokens(self) -> list[Token]:
        return [_token(r) for r in self._all_rows(SQL.list_tokens)]


def _token(row: dict[str, Any]) -> Token:
    return Token(
        id=int(row["id"]),
        user=row["owner"],
        max_priority=int(row["max_priority"]),
        admin=bool(row["admin"]),
        created_at=float(row["created_at"]),
        revoked=bool(row.get("revoked", False)),
    )


def _describe(exc: BaseException) -> str:
    """A one-line reason without the connection string (it may hold a password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
