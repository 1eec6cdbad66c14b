"""SQLite adapter of JobStore: the embedded default.

One connection per thread, WAL journal, ``synchronous=FULL`` so that a 2xx on submit
survives a power cut. Every statement is named in ``SQL``; each write is a single
statement (SQLite serialises writers), the claim is ``UPDATE ... RETURNING`` on the first
queued row in ``(pool, rank, id)`` order.
"""

from __future__ import annotations

import secrets
import sqlite3
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidq.errors import StoreUnavailable
from vidq.jobs import Job, NewJob, queue_rank
from vidq.store.base import JobStatus, ReapResult, Token
from vidq.store.positions import QueueSnapshots, position_key
from vidq.store.rows import JOB_COLUMNS, dumps, job_from_row, job_status_from_row

NOW = "((julianday('now') - 2440587.5) * 86400.0)"


class SQL:
    """Named statements of the SQLite dialect."""

    now = f"SELECT {NOW}"
    insert_job = f"""
        INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state, inputs,
            binary_output, max_attempts, work_units, idempotency_key, webhook_url, created_at)
        VALUES (?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?, ?, ?, ?, {NOW})
        ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING {JOB_COLUMNS}"""
    get_job = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
    get_job_of = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ? AND owner = ?"
    by_idempotency = f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND idempotency_key = ?"
    by_result_key = f"SELECT {JOB_COLUMNS} FROM jobs WHERE result_key = ?"
    queue_version = "SELECT version FROM queue_versions WHERE pool = ?"
    job_status = """
        SELECT id, model_id, pool, tier, priority, state, progress_done, progress_total,
            work_units, json_extract(inputs, '$.higher_quality_with_more_steps'), result_key,
            error, (SELECT version FROM queue_versions AS q WHERE q.pool = jobs.pool)
        FROM jobs WHERE id = ? AND owner = ?"""
    queue_keys = """
        SELECT rank, id FROM jobs WHERE pool = ? AND state IN ('PENDING', 'RETRY')
        ORDER BY rank, id"""
    cancel = f"""
        UPDATE jobs SET state = 'CANCELLED', finished_at = {NOW}
        WHERE id = ? AND owner = ? AND state IN ('PENDING', 'RETRY')"""
    list_jobs = f"""
        SELECT {JOB_COLUMNS} FROM jobs WHERE owner = ? AND id < ? ORDER BY id DESC LIMIT ?"""
    recent_durations = """
        SELECT finished_at - started_at FROM jobs
        WHERE pool = ? AND state = 'COMPLETED' AND work_units BETWEEN ? AND ?
          AND started_at IS NOT NULL
        ORDER BY finished_at DESC LIMIT ?"""
    queue_depths = """
        SELECT pool, count(*) FROM jobs WHERE state IN ('PENDING', 'RETRY') GROUP BY pool"""
    live_workers = "SELECT pools FROM workers WHERE seen_at > ?"
    claim = f"""
        UPDATE jobs SET state = 'RUNNING', attempt = attempt + 1, lease_token = ?,
            worker = ?, lease_until = {NOW} + ?, started_at = {NOW},
            progress_done = 0, progress_total = 0
        WHERE id = (
            SELECT id FROM jobs
            WHERE pool IN ({{pools}}) AND state IN ('PENDING', 'RETRY')
            ORDER BY rank, id LIMIT 1)
        RETURNING {JOB_COLUMNS}"""
    heartbeat = f"""
        UPDATE jobs SET lease_until = {NOW} + ?
        WHERE id = ? AND lease_token = ? AND state = 'RUNNING'"""
    progress = """
        UPDATE jobs SET progress_done = ?, progress_total = ?
        WHERE id = ? AND lease_token = ? AND state = 'RUNNING'"""
    complete = f"""
        UPDATE jobs SET state = 'COMPLETED', result_key = ?, result_meta = ?,
            finished_at = {NOW}, lease_token = NULL, lease_until = NULL,
            progress_done = progress_total
        WHERE id = ? AND lease_token = ? AND state = 'RUNNING'"""
    fail = f"""
        UPDATE jobs SET
            state = CASE WHEN ? AND attempt < max_attempts THEN 'RETRY' ELSE 'FAILED' END,
            error = ?, error_type = ?, lease_token = NULL, lease_until = NULL,
            finished_at = CASE WHEN ? AND attempt < max_attempts THEN NULL ELSE {NOW} END
        WHERE id = ? AND lease_token = ? AND state = 'RUNNING'"""
    release = """
        UPDATE jobs SET state = 'RETRY', attempt = attempt - 1, lease_token = NULL,
            lease_until = NULL, worker = NULL
        WHERE id = ? AND lease_token = ? AND state = 'RUNNING'"""
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
        RETURNING id, state"""
    register_worker = f"""
        INSERT INTO workers (name, pools, seen_at) VALUES (?, ?, {NOW})
        ON CONFLICT (name) DO UPDATE SET pools = excluded.pools, seen_at = excluded.seen_at"""
    insert_token = f"""
        INSERT INTO tokens (owner, token_hash, max_priority, admin, created_at)
        VALUES (?, ?, ?, ?, {NOW}) RETURNING id, owner, max_priority, admin, created_at"""
    token_by_hash = """
        SELECT id, owner, max_priority, admin, created_at, token_hash FROM tokens
        WHERE token_hash = ? AND revoked_at IS NULL"""
    revoke_token = f"""
        UPDATE tokens SET revoked_at = {NOW} WHERE id = ? AND revoked_at IS NULL"""
    list_tokens = """
        SELECT id, owner, max_priority, admin, created_at, revoked_at IS NOT NULL AS revoked
        FROM tokens ORDER BY id"""


class SQLiteStore:
    """JobStore on one SQLite file (see module docstring)."""

    inline_reads = True  # WAL readers never wait for writers

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Wakes in-process workers on enqueue; workers in other processes poll.
        self._queued = threading.Condition()
        self._positions = QueueSnapshots()

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        return cls(url.removeprefix("sqlite:///"))

    # -- connections ---------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path,
                    timeout=self._busy_timeout_s,
                    isolation_level=None,  # autocommit: each statement is its own transaction
                    check_same_thread=False,
                )
                conn.row_factory = sqlite3.Row
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite database {self.path}: {exc}") from exc
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def _cursor(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._conn()
        except sqlite3.IntegrityError:
            raise
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error: {exc}") from exc

    def _one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        with self._cursor() as conn:
            row: sqlite3.Row | None = conn.execute(sql, params).fetchone()
            return row

    def _all_rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._cursor() as conn:
            return conn.execute(sql, params).fetchall()

    def _rowcount(self, sql: str, params: Sequence[Any] = ()) -> int:
        with self._cursor() as conn:
            return conn.execute(sql, params).rowcount

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()

    def now(self) -> float:
        row = self._one(SQL.now)
        assert row is not None
        return float(row[0])

    # -- API side --------------------------------------------------------------------
    def enqueue(self, new: NewJob) -> Job:
        params = (
            new.user, new.model_id, new.pool, new.tier, new.priority,
            queue_rank(new.tier, new.priority), dumps(new.inputs), new.binary_output,
            new.max_attempts, new.work_units, new.idempotency_key, new.webhook_url,
        )  # fmt: skip
        row = self._one(SQL.insert_job, params)
        if row is None:
            # The (owner, idempotency_key) index said this key was used: a retried or
            # concurrent submit. Hand back the job the first one created.
            assert new.idempotency_key is not None
            existing = self.find_by_idempotency_key(new.user, new.idempotency_key)
            if existing is None:  # pragma: no cover - the index guarantees a row
                raise StoreUnavailable("idempotency key conflict without a stored job")
            return existing
        with self._queued:
            self._queued.notify_all()
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
        version = int(row[0]) if row else 0
        key = position_key(queue_rank(job.tier, job.priority), job.id)
        return self._position(job.pool, key, version)

    def job_status(self, job_id: int, user: str) -> JobStatus | None:
        row = self._one(SQL.job_status, (job_id, user))
        if row is None:
            return None
        return job_status_from_row(row, self._position)

    def _position(self, pool: str, key: int, version: int) -> int:
        return self._positions.position(pool, key, version, self._queue_snapshot)

    def _queue_snapshot(self, pool: str) -> tuple[int, array[int]]:
        # The version first: keys read afterwards are at least that new (see positions.py).
        row = self._one(SQL.queue_version, (pool,))
        rows = self._all_rows(SQL.queue_keys, (pool,))
        return (int(row[0]) if row else 0), array("q", (position_key(r[0], r[1]) for r in rows))

    def cancel(self, job_id: int, user: str) -> bool:
        return self._rowcount(SQL.cancel, (job_id, user)) == 1

    def list_jobs(self, user: str, limit: int, before_id: int | None = None) -> list[Job]:
        before = before_id if before_id is not None else 2**62
        return [job_from_row(r) for r in self._all_rows(SQL.list_jobs, (user, before, limit))]

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        rows = self._all_rows(SQL.recent_durations, (pool, work_units / 2, work_units * 2, limit))
        return [float(r[0]) for r in rows]

    def queue_depths(self) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self._all_rows(SQL.queue_depths)}

    def live_workers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._all_rows(SQL.live_workers, (self.now() - 60.0,)):
            for pool in row[0].split(","):
                counts[pool] = counts.get(pool, 0) + 1
        return counts

    # -- worker side -----------------------------------------------------------------
    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Job | None:
        if not pools:
            return None
        sql = SQL.claim.replace("{pools}", ",".join("?" * len(pools)))
        token = secrets.token_hex(16)
        row = self._one(sql, (token, worker, lease_s, *pools))
        return job_from_row(row) if row else None

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> bool:
        return self._rowcount(SQL.heartbeat, (lease_s, job_id, token)) == 1

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        return self._rowcount(SQL.progress, (done, total, job_id, token)) == 1

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        return self._rowcount(SQL.complete, (result_key, dumps(meta), job_id, token)) == 1

    def fail(self, job_id: int, token: str, error: str, error_type: str, retry: bool) -> bool:
        params = (retry, error, error_type, retry, job_id, token)
        return self._rowcount(SQL.fail, params) == 1

    def release(self, job_id: int, token: str) -> bool:
        return self._rowcount(SQL.release, (job_id, token)) == 1

    def reap(self) -> ReapResult:
        rows = self._all_rows(SQL.reap)
        return ReapResult(
            retried=[int(r[0]) for r in rows if r[1] == "RETRY"],
            failed=[int(r[0]) for r in rows if r[1] == "FAILED"],
        )

    def register_worker(self, worker: str, pools: Sequence[str]) -> None:
        self._rowcount(SQL.register_worker, (worker, ",".join(pools)))

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        with self._queued:
            self._queued.wait(timeout)

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


def _token(row: sqlite3.Row) -> Token:
    keys = row.keys()
    return Token(
        id=int(row["id"]),
        user=row["owner"],
        max_priority=int(row["max_priority"]),
        admin=bool(row["admin"]),
        created_at=float(row["created_at"]),
        revoked=bool(row["revoked"]) if "revoked" in keys else False,
    )
