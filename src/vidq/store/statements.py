"""Every SQL statement of the job store, by name, written once.

``Statements`` holds the SQL both databases run. In it ``:name`` is a parameter (each
driver converts it to its own placeholder style), ``{NOW}`` the database clock in seconds
since the epoch; each dialect subclass gives that expression and overrides the one
statement that truly differs, the claim.

A statement marked ``wakes`` may move jobs into the queue (PENDING or RETRY); it returns
the ``state`` and ``pool`` of every row it changed, and when one of them is queued the
driver wakes the waiting workers. Every such transition must be one of these statements:
a worker asleep in ``wait_for_jobs`` would otherwise wait a whole poll interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import ClassVar, Self

from vidq.store.rows import JOB_COLUMNS, TOKEN_COLUMNS, UPLOAD_COLUMNS


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """One named SQL statement."""

    sql: str
    wakes: bool = False  # may queue jobs: returns (state, pool) rows; the driver wakes workers
    writes: bool = dataclasses.field(init=False, default=False)  # not a plain SELECT

    def __post_init__(self) -> None:
        object.__setattr__(self, "writes", not self.sql.lstrip().upper().startswith("SELECT"))


# What a claim sets on the job it takes: both dialects' claims share it.
_TAKE = """
    state = 'RUNNING', attempt = attempt + 1, lease_token = :token, worker = :worker,
    lease_until = {NOW} + :lease_s, started_at = {NOW}, progress_done = 0, progress_total = 0,
    retry_at = NULL"""
# A webhook that may be due: pending, its job finished. The predicate of ix_jobs_webhooks
# (migration 0004), so the dispatchers' poll reads that small index only.
_WEBHOOK_DUE = "webhook_state = 'pending' AND state IN ('COMPLETED', 'FAILED', 'CANCELLED')"
# A retry backing off (``retry_at`` in the future) waits; the jobs behind it go first.
# A paused pool (``paused_pools``) is claimed from by nobody. A user with ``max_running``
# jobs running (the token's limit, copied on the job) has the rest of theirs held back:
# the claim passes over them to other users' jobs.
_FIRST_QUEUED = """
    SELECT id FROM jobs WHERE pool IN ({pools}) AND state IN ('PENDING', 'RETRY')
        AND (retry_at IS NULL OR retry_at <= {NOW})
        AND pool NOT IN (SELECT pool FROM paused_pools)
        AND (max_running IS NULL OR max_running > (SELECT count(*) FROM jobs AS mine
            WHERE mine.owner = jobs.owner AND mine.state = 'RUNNING'))
    ORDER BY rank, id LIMIT 1"""
_FINISHED = "state IN ('COMPLETED', 'FAILED', 'CANCELLED')"
# A finished job whose row the collector may delete: past the job TTL (``:upto``, the
# newest end time of the batch) and with every blob already deleted.
_PURGEABLE = f"""{_FINISHED} AND finished_at <= :upto AND inputs_deleted_at IS NOT NULL
    AND (state <> 'COMPLETED' OR output_deleted_at IS NOT NULL)"""
# Histogram buckets (seconds) of queue waits and run times: 1 s .. 1 h.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


def _job_counts(where: str) -> str:
    """The job counters of the rows matching ``where``, one row per (model, pool, tier,
    state): jobs, attempts (with those before admin retries), admin retries, jobs that
    ran at least once, and jobs whose running attempt was cancelled."""
    return f"""
        SELECT model_id, pool, tier, state, count(*), sum(attempt), sum(past_attempts),
            sum(admin_retries), sum(CASE WHEN attempt > 0 THEN 1 ELSE 0 END),
            sum(CASE WHEN cancel_requested THEN 1 ELSE 0 END)
        FROM jobs WHERE {where} GROUP BY model_id, pool, tier, state"""


def _job_durations(where: str) -> str:
    """Per pool: queue waits (claim - submit, of the last attempt) and run times
    (finish - start, of finished attempts): count, sum, then one cumulative count per
    bucket of ``DURATION_BUCKETS``."""
    wait, run = "started_at - created_at", "finished_at - started_at"
    ran = "state IN ('COMPLETED', 'FAILED') AND started_at IS NOT NULL"
    columns = [
        "sum(CASE WHEN started_at IS NOT NULL THEN 1 ELSE 0 END)",
        f"sum(CASE WHEN started_at IS NOT NULL THEN {wait} ELSE 0 END)",
        *(f"sum(CASE WHEN {wait} <= {b} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS),
        f"sum(CASE WHEN {ran} THEN 1 ELSE 0 END)",
        f"sum(CASE WHEN {ran} THEN {run} ELSE 0 END)",
        *(f"sum(CASE WHEN {ran} AND {run} <= {b} THEN 1 ELSE 0 END)" for b in DURATION_BUCKETS),
    ]
    return f"SELECT pool, {', '.join(columns)} FROM jobs WHERE {where} GROUP BY pool"


_JOB_FIELDS = """owner, model_id, pool, tier, priority, rank, state, inputs,
            higher_quality, binary_output, max_attempts, work_units, idempotency_key,
            webhook_url, webhook_dialect, webhook_base, webhook_state, webhook_next_at,
            max_running, video_seconds, deadline_at, start_by, start_error, seed, created_at"""
_JOB_VALUES = """:owner, :model_id, :pool, :tier, :priority, :rank, 'PENDING', :inputs,
            :higher_quality, :binary_output, :max_attempts, :work_units, :idempotency_key,
            :webhook_url, :webhook_dialect, :webhook_base, :webhook_state, :webhook_next_at,
            :max_running, :video_seconds, {NOW} + :deadline_s, {NOW} + :start_s,
            :start_error, :seed, {NOW}"""
_ON_KEY = "ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
# The conditions of a limited submit (``Statements.insert_limited``), by limit name: each
# holds while the user's jobs leave room for one more.
_LIMIT_CHECKS = {
    "max_queued": """(SELECT count(*) FROM jobs WHERE owner = :owner
            AND state IN ('PENDING', 'RETRY')) < :max_queued""",
    "rate_per_minute": """(SELECT count(*) FROM jobs WHERE owner = :owner
            AND created_at > {NOW} - 60) < :rate_per_minute""",
    "daily_video_seconds": """(SELECT coalesce(sum(video_seconds), 0) FROM jobs
            WHERE owner = :owner AND created_at >= {DAY}) + :video_seconds
            <= :daily_video_seconds""",
}


class Statements:
    """The statements both dialects share; a subclass per dialect fills in the rest."""

    NOW: ClassVar[str]  # the database clock as float seconds since the epoch
    DAY: ClassVar[str]  # the start of the current UTC day, in the same unit

    # -- jobs: API side ---------------------------------------------------------------
    now = Statement("SELECT {NOW} AS now")
    # The (owner, idempotency_key) unique index decides a race between two submits with
    # one key: the loser inserts nothing, returns no row, and reads the winner's job.
    insert_job = Statement(
        f"""
        INSERT INTO jobs ({_JOB_FIELDS})
        VALUES ({_JOB_VALUES})
        {_ON_KEY}
        RETURNING {JOB_COLUMNS}""",
        wakes=True,
    )
    # A submit under a token with limits serialises with the user's other submits: on
    # SQLite the write transaction does; on PostgreSQL this lock, taken in the same
    # transaction before the limited INSERT, whose snapshot then sees every earlier one.
    lock_user: ClassVar[Statement | None] = None
    # What a user's jobs hold of each limit, and the database clock: for ``vidq token
    # list`` and to say which limit a refused submit hit (and when to retry).
    usage = Statement("""
        SELECT
            (SELECT count(*) FROM jobs WHERE owner = :owner
                AND state IN ('PENDING', 'RETRY')) AS queued,
            (SELECT count(*) FROM jobs WHERE owner = :owner AND state = 'RUNNING') AS running,
            (SELECT count(*) FROM jobs WHERE owner = :owner
                AND created_at > {NOW} - 60) AS last_minute,
            (SELECT min(created_at) FROM jobs WHERE owner = :owner
                AND created_at > {NOW} - 60) AS minute_first,
            (SELECT coalesce(sum(video_seconds), 0) FROM jobs WHERE owner = :owner
                AND created_at >= {DAY}) AS video_seconds_today,
            {NOW} AS now""")
    get_job = Statement(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id")
    get_job_of = Statement(f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id AND owner = :owner")
    by_idempotency = Statement(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE owner = :owner AND idempotency_key = :key"
    )
    by_result_key = Statement(f"SELECT {JOB_COLUMNS} FROM jobs WHERE result_key = :key")
    queue_version = Statement("SELECT version FROM queue_versions WHERE pool = :pool")
    # The status poll: one read, positional columns (see rows.job_status_from_row), and
    # the pool's queue version so that the cached position is checked in the same read.
    # It never touches ``inputs``: that can be large, and a poll must stay cheap.
    job_status = Statement("""
        SELECT id, model_id, pool, tier, priority, state, progress_done, progress_total,
            work_units, higher_quality, result_key, error,
            (SELECT version FROM queue_versions AS q WHERE q.pool = jobs.pool), expired_at,
            (SELECT 1 FROM paused_pools AS p WHERE p.pool = jobs.pool), seed
        FROM jobs WHERE id = :id AND owner = :owner""")
    # A pool's queue for its position snapshot (positions.py): the owner only of jobs
    # with a ``max_running``, the only ones that may be held.
    queue_keys = Statement("""
        SELECT rank, id, max_running, CASE WHEN max_running IS NULL THEN NULL ELSE owner END
        FROM jobs WHERE pool = :pool AND state IN ('PENDING', 'RETRY')
        ORDER BY rank, id""")
    # The running jobs' fingerprint (positions.Running): a job that starts or stops
    # changes it, so a snapshot of held jobs knows when its users' counts moved.
    running_jobs = Statement("""
        SELECT count(*), coalesce(sum(id), 0), coalesce(sum(started_at), 0) FROM jobs
        WHERE state = 'RUNNING'""")
    running_by_owner = Statement(
        "SELECT owner, count(*) FROM jobs WHERE state = 'RUNNING' GROUP BY owner"
    )
    # A queued job is cancelled at once; with ``:running`` a running one gets a cancel
    # request, which its worker reads in its next heartbeat. Returns the new state
    # (CANCELLED, or RUNNING: requested); no row when the job is neither.
    cancel = Statement("""
        UPDATE jobs SET
            state = CASE WHEN state = 'RUNNING' THEN state ELSE 'CANCELLED' END,
            finished_at = CASE WHEN state = 'RUNNING' THEN finished_at ELSE {NOW} END,
            cancel_requested = (state = 'RUNNING')
        WHERE id = :id AND owner = :owner
            AND (state IN ('PENDING', 'RETRY') OR (:running AND state = 'RUNNING'))
        RETURNING state""")
    list_jobs = Statement(f"""
        SELECT {JOB_COLUMNS} FROM jobs WHERE owner = :owner AND id < :before
        ORDER BY id DESC LIMIT :limit""")
    recent_durations = Statement("""
        SELECT finished_at - started_at AS seconds FROM jobs
        WHERE pool = :pool AND state = 'COMPLETED' AND work_units BETWEEN :low AND :high
          AND started_at IS NOT NULL
        ORDER BY finished_at DESC LIMIT :limit""")
    queue_depths = Statement("""
        SELECT pool, count(*) AS queued FROM jobs
        WHERE state IN ('PENDING', 'RETRY') GROUP BY pool""")
    live_workers = Statement("SELECT pools FROM workers WHERE seen_at > {NOW} - :window_s")
    # The dashboard's window: jobs started or finished in it, and those running now.
    pool_window = Statement("""
        SELECT pool, state, created_at, started_at, finished_at, {NOW} AS now FROM jobs
        WHERE state = 'RUNNING' OR finished_at > {NOW} - :window_s
           OR started_at > {NOW} - :window_s""")
    recent_failures = Statement("""
        SELECT id, owner, model_id, pool, error, error_type, finished_at FROM jobs
        WHERE state = 'FAILED' ORDER BY finished_at DESC, id DESC LIMIT :limit""")

    # -- jobs: worker side --------------------------------------------------------------
    claim: ClassVar[Statement]  # per dialect; ``{pools}`` becomes one parameter per pool
    # A claim of a job whose user has a ``max_running`` limit is checked again under this
    # per-user lock, in the claim's transaction: PostgreSQL's claim counts the user's
    # running jobs under its own snapshot, so two simultaneous claims could both see room
    # for one more. The lock's holder counts every committed claim (``running_of``) and
    # rolls back its own when over. SQLite has one writer: its claim is exact already.
    lock_running: ClassVar[Statement | None] = None
    running_of = Statement(
        "SELECT count(*) AS n FROM jobs WHERE owner = :owner AND state = 'RUNNING'"
    )
    # The answer carries the cancel request: a worker learns of it in the same round trip.
    heartbeat = Statement("""
        UPDATE jobs SET lease_until = {NOW} + :lease_s
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
        RETURNING cancel_requested""")
    progress = Statement("""
        UPDATE jobs SET progress_done = :done, progress_total = :total
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'""")
    complete = Statement("""
        UPDATE jobs SET state = 'COMPLETED', result_key = :result_key, result_meta = :meta,
            finished_at = {NOW}, lease_token = NULL, lease_until = NULL,
            progress_done = progress_total
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
            AND NOT cancel_requested""")
    # The worker's end of a cancel request: fenced like ``complete``, so of a cancel and
    # a completion racing for one job exactly one is recorded (the request sets the flag
    # that ``complete`` refuses; a job completed first has no RUNNING row to flag).
    finish_cancel = Statement("""
        UPDATE jobs SET state = 'CANCELLED', finished_at = {NOW}, lease_token = NULL,
            lease_until = NULL
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING' AND cancel_requested""")
    fail = Statement(
        """
        UPDATE jobs SET
            state = CASE WHEN cancel_requested THEN 'CANCELLED'
                WHEN :retry AND attempt < max_attempts THEN 'RETRY' ELSE 'FAILED' END,
            error = :error, error_type = :error_type, lease_token = NULL, lease_until = NULL,
            finished_at = CASE WHEN :retry AND attempt < max_attempts AND NOT cancel_requested
                THEN NULL ELSE {NOW} END,
            retry_at = CASE WHEN :retry AND attempt < max_attempts AND NOT cancel_requested
                THEN {NOW} + :retry_after_s ELSE NULL END
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
        RETURNING state, pool""",
        wakes=True,
    )
    # Graceful shutdown: the attempt was not the job's fault, so it is not spent.
    release = Statement(
        """
        UPDATE jobs SET
            state = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'RETRY' END,
            finished_at = CASE WHEN cancel_requested THEN {NOW} ELSE NULL END,
            attempt = attempt - 1, lease_token = NULL, lease_until = NULL, worker = NULL
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
        RETURNING state, pool""",
        wakes=True,
    )
    # One statement, so reapers in many processes never handle a lease twice. A job
    # whose cancel was requested ends CANCELLED.
    reap = Statement(
        """
        UPDATE jobs SET
            state = CASE WHEN cancel_requested THEN 'CANCELLED'
                WHEN attempt < max_attempts THEN 'RETRY' ELSE 'FAILED' END,
            error = CASE WHEN attempt < max_attempts THEN error
                ELSE 'The job failed after ' || attempt || ' attempts: ' ||
                     'the worker stopped responding (lease expired).' END,
            error_type = CASE WHEN attempt < max_attempts THEN error_type
                ELSE 'lease_expired' END,
            finished_at = CASE WHEN attempt < max_attempts AND NOT cancel_requested
                THEN NULL ELSE {NOW} END,
            lease_token = NULL, lease_until = NULL
        WHERE state = 'RUNNING' AND lease_until < {NOW}
        RETURNING id, state, pool""",
        wakes=True,
    )
    # Deadlines: a job unfinished at ``deadline_at`` or not started at ``start_by`` ends
    # FAILED; a running one's worker finds its lease gone at its next heartbeat and stops
    # the engine. Reads only the small ``ix_jobs_expiry_*`` indexes (migration 0007).
    expire = Statement("""
        UPDATE jobs SET state = 'FAILED',
            error = CASE WHEN deadline_at <= {NOW} THEN 'deadline exceeded'
                ELSE start_error END,
            error_type = 'deadline_exceeded', finished_at = {NOW}, lease_token = NULL,
            lease_until = NULL, retry_at = NULL
        WHERE (deadline_at <= {NOW} AND state IN ('PENDING', 'RETRY', 'RUNNING'))
            OR (start_by <= {NOW} AND state = 'PENDING')
        RETURNING id""")
    register_worker = Statement("""
        INSERT INTO workers (name, pools, engines, seen_at) VALUES (:name, :pools, :engines, {NOW})
        ON CONFLICT (name) DO UPDATE SET pools = excluded.pools, engines = excluded.engines,
            seen_at = excluded.seen_at""")

    # -- operators: admin routes, paused pools, metrics ---------------------------------
    # Optional filters: a NULL parameter matches every row (CAST: PostgreSQL must know
    # the type of a parameter that is only compared with NULL).
    admin_jobs = Statement(f"""
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE (CAST(:owner AS TEXT) IS NULL OR owner = :owner)
          AND (CAST(:state_a AS TEXT) IS NULL OR state IN (:state_a, :state_b))
          AND (CAST(:pool AS TEXT) IS NULL OR pool = :pool)
          AND created_at >= :since AND id < :before
        ORDER BY id DESC LIMIT :limit""")
    # FAILED -> PENDING with a fresh set of attempts; what the failed run spent is kept
    # (``past_attempts``, ``admin_retries``) so counters never go back. Refused once the
    # collector has expired the inputs. The webhook, if any, is due again at the end.
    admin_retry = Statement(
        """
        UPDATE jobs SET state = 'PENDING', past_attempts = past_attempts + attempt,
            admin_retries = admin_retries + 1, attempt = 0, error = NULL, error_type = NULL,
            finished_at = NULL, retry_at = NULL, worker = NULL, lease_token = NULL,
            lease_until = NULL, progress_done = 0, progress_total = 0,
            webhook_state = CASE WHEN webhook_url IS NULL THEN NULL ELSE 'pending' END,
            webhook_attempts = 0, webhook_next_at = CASE WHEN webhook_url IS NULL
                THEN NULL ELSE 0 END
        WHERE id = :id AND state = 'FAILED' AND inputs_expired_at IS NULL
        RETURNING state, pool""",
        wakes=True,
    )
    # Per user: queued and running now, finished since ``:since`` (the day's start).
    user_stats = Statement("""
        SELECT owner,
            sum(CASE WHEN state IN ('PENDING', 'RETRY') THEN 1 ELSE 0 END) AS queued,
            sum(CASE WHEN state = 'RUNNING' THEN 1 ELSE 0 END) AS running,
            sum(CASE WHEN state = 'COMPLETED' AND finished_at >= :since THEN 1 ELSE 0 END)
                AS completed,
            sum(CASE WHEN state = 'FAILED' AND finished_at >= :since THEN 1 ELSE 0 END)
                AS failed,
            sum(CASE WHEN created_at >= :since THEN video_seconds ELSE 0 END) AS video_seconds
        FROM jobs WHERE state IN ('PENDING', 'RETRY', 'RUNNING') OR finished_at >= :since
            OR created_at >= :since
        GROUP BY owner ORDER BY owner""")
    workers = Statement("""
        SELECT name, pools, engines, {NOW} - seen_at AS age,
            (SELECT min(id) FROM jobs WHERE state = 'RUNNING' AND worker = w.name) AS job,
            (SELECT count(*) FROM jobs WHERE state = 'COMPLETED' AND worker = w.name) AS done
        FROM workers AS w ORDER BY name""")
    pause_pool = Statement("""
        INSERT INTO paused_pools (pool, paused_at) VALUES (:pool, {NOW})
        ON CONFLICT (pool) DO NOTHING""")
    # Returns the pool as queued, so that its waiting workers wake up and claim.
    resume_pool = Statement(
        "DELETE FROM paused_pools WHERE pool = :pool RETURNING 'PENDING' AS state, pool",
        wakes=True,
    )
    paused_pools = Statement("SELECT pool FROM paused_pools ORDER BY pool")
    # Queued and running jobs per pool: reads the partial indexes of those states only.
    pool_states = Statement("""
        SELECT pool, state, count(*) AS n FROM jobs
        WHERE state IN ('PENDING', 'RETRY', 'RUNNING') GROUP BY pool, state""")
    job_counts = Statement(_job_counts("1 = 1"))
    job_durations = Statement(_job_durations("1 = 1"))
    metric_rollup = Statement("SELECT family, labels, value FROM metric_rollup")

    # -- retention: the collector (vidq/ops/retention.py) -------------------------------
    # Named leases on the database clock: taken when free or expired, renewed by the holder.
    take_lease = Statement("""
        INSERT INTO leases (name, holder, until) VALUES (:name, :holder, {NOW} + :lease_s)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE leases.until < {NOW} OR leases.holder = excluded.holder
        RETURNING holder""")
    release_lease = Statement("DELETE FROM leases WHERE name = :name AND holder = :holder")
    # Inputs due: finished before ``:cutoff``, or marked expired by a run that stopped
    # before deleting them.
    inputs_due = Statement(f"""
        SELECT id, inputs, inputs_expired_at FROM jobs
        WHERE {_FINISHED} AND inputs_deleted_at IS NULL
          AND (finished_at <= {{NOW}} - :ttl OR inputs_expired_at IS NOT NULL)
        ORDER BY finished_at LIMIT :limit""")
    expire_inputs = Statement(f"""
        UPDATE jobs SET inputs_expired_at = {{NOW}}
        WHERE id = :id AND {_FINISHED} AND inputs_expired_at IS NULL""")
    inputs_deleted = Statement(f"""
        UPDATE jobs SET inputs_deleted_at = {{NOW}}
        WHERE id = :id AND {_FINISHED} AND inputs_expired_at IS NOT NULL""")
    outputs_due = Statement("""
        SELECT id, result_key, expired_at FROM jobs
        WHERE state = 'COMPLETED' AND output_deleted_at IS NULL
          AND (finished_at <= {NOW} - :ttl OR expired_at IS NOT NULL)
        ORDER BY finished_at LIMIT :limit""")
    expire_output = Statement("""
        UPDATE jobs SET expired_at = {NOW}
        WHERE id = :id AND state = 'COMPLETED' AND expired_at IS NULL""")
    output_deleted = Statement("""
        UPDATE jobs SET output_deleted_at = {NOW}
        WHERE id = :id AND state = 'COMPLETED' AND expired_at IS NOT NULL""")
    # The newest end time among the next ``:limit`` rows to purge (the batch's bound).
    purge_bound = Statement(f"""
        SELECT finished_at FROM jobs
        WHERE {_PURGEABLE.replace(":upto", "{NOW} - :ttl")}
        ORDER BY finished_at LIMIT :limit""")
    purge_counts = Statement(_job_counts(_PURGEABLE))
    purge_durations = Statement(_job_durations(_PURGEABLE))
    add_rollup = Statement("""
        INSERT INTO metric_rollup (family, labels, value) VALUES (:family, :labels, :value)
        ON CONFLICT (family, labels) DO UPDATE SET value = metric_rollup.value + excluded.value""")
    purge_jobs = Statement(f"DELETE FROM jobs WHERE {_PURGEABLE}")

    # -- webhooks: the outbox is the jobs table -----------------------------------------
    # Due deliveries in id order from a cursor, so a dispatcher whose first rows all wait
    # on a slow receiver still reaches the others on its next polls.
    due_webhooks = Statement(f"""
        SELECT id, owner, webhook_url FROM jobs
        WHERE {_WEBHOOK_DUE} AND id > :after AND webhook_next_at <= {{NOW}}
        ORDER BY id LIMIT :limit""")
    # The lease of one attempt: it moves ``webhook_next_at`` past the attempt, so another
    # API process's take of the same row changes nothing (PostgreSQL re-checks the WHERE
    # on the row the first take committed).
    take_webhook = Statement(f"""
        UPDATE jobs SET webhook_next_at = {{NOW}} + :lease_s
        WHERE id = :id AND {_WEBHOOK_DUE} AND webhook_next_at <= {{NOW}}
        RETURNING {JOB_COLUMNS}, webhook_attempts""")
    # Fenced by the attempt count the take returned: a late result of an attempt whose
    # lease expired (and was taken again) changes nothing.
    webhook_result = Statement("""
        UPDATE jobs SET webhook_state = :state, webhook_attempts = webhook_attempts + 1,
            webhook_next_at = CASE WHEN :state = 'pending'
                THEN {NOW} + :retry_after_s ELSE NULL END
        WHERE id = :id AND webhook_state = 'pending' AND webhook_attempts = :attempts""")

    # -- tokens -------------------------------------------------------------------------
    insert_token = Statement(f"""
        INSERT INTO tokens (owner, token_hash, max_priority, admin, max_queued, max_running,
            rate_per_minute, daily_video_seconds, worker, pools, created_at)
        VALUES (:owner, :token_hash, :max_priority, :admin, :max_queued, :max_running,
            :rate_per_minute, :daily_video_seconds, :worker, :pools, {{NOW}})
        RETURNING {TOKEN_COLUMNS}""")
    # Returns only the id, the token is read afterwards (``token_by_id``): SQLite 3.40's
    # RETURNING answers ``revoked_at IS NOT NULL`` wrongly under ``WHERE revoked_at IS NULL``.
    update_token = Statement("""
        UPDATE tokens SET max_priority = :max_priority, max_queued = :max_queued,
            max_running = :max_running, rate_per_minute = :rate_per_minute,
            daily_video_seconds = :daily_video_seconds
        WHERE id = :id AND revoked_at IS NULL
        RETURNING id""")
    token_by_id = Statement(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = :id")
    token_by_hash = Statement(f"""
        SELECT {TOKEN_COLUMNS}, token_hash FROM tokens
        WHERE token_hash = :token_hash AND revoked_at IS NULL""")
    revoke_token = Statement("""
        UPDATE tokens SET revoked_at = {NOW} WHERE id = :id AND revoked_at IS NULL""")
    list_tokens = Statement(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id")

    # -- uploads ----------------------------------------------------------------------
    insert_upload = Statement(f"""
        INSERT INTO uploads (id, owner, key, content_type, file_name, created_at, expires_at)
        VALUES (:id, :owner, :key, :content_type, :file_name, {{NOW}}, {{NOW}} + :expires_in)
        RETURNING {UPLOAD_COLUMNS}""")
    get_upload = Statement(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = :id")
    upload_stored = Statement("UPDATE uploads SET size = :size WHERE id = :id AND size IS NULL")
    # Expired: past the expiry the client asked for, else older than the retention default.
    expired_uploads = Statement(f"""
        SELECT {UPLOAD_COLUMNS} FROM uploads
        WHERE expires_at <= {{NOW}} OR (expires_at IS NULL AND created_at <= {{NOW}} - :max_age_s)
        ORDER BY created_at LIMIT :limit""")
    delete_upload = Statement("DELETE FROM uploads WHERE id = :id")

    @classmethod
    def prepared(cls, prepare: Callable[[Statement], Statement]) -> Self:
        """The dialect's statements with its expressions filled in, each passed through
        a driver's ``prepare`` (placeholders, wake-ups). The claim is left out: its
        parameters depend on the number of pools (see ``with_pools``)."""
        done = object.__new__(cls)
        for name in dir(cls):
            stmt = getattr(cls, name)
            if isinstance(stmt, Statement) and "{pools}" not in stmt.sql:
                setattr(done, name, prepare(cls.expand(stmt)))
        return done

    @classmethod
    def expand(cls, stmt: Statement) -> Statement:
        """``stmt`` with this dialect's ``{NOW}`` and ``{DAY}``."""
        sql = stmt.sql.replace("{DAY}", cls.DAY).replace("{NOW}", cls.NOW)
        return dataclasses.replace(stmt, sql=sql)

    @classmethod
    def insert_limited(cls, limits: Sequence[str]) -> Statement:
        """``insert_job`` that inserts nothing (and returns no row) when the user's jobs
        leave no room under any of ``limits`` (names of ``_LIMIT_CHECKS``; their values
        are parameters of the same names). Not yet prepared."""
        checks = " AND ".join(_LIMIT_CHECKS[name] for name in limits)
        return cls.expand(
            Statement(
                f"""
                INSERT INTO jobs ({_JOB_FIELDS})
                SELECT {_JOB_VALUES}
                WHERE {checks}
                {_ON_KEY}
                RETURNING {JOB_COLUMNS}""",
                wakes=True,
            )
        )

    @classmethod
    def with_pools(cls, stmt: Statement, count: int) -> Statement:
        """``stmt`` (not yet prepared) with ``{pools}`` as parameters ``:pool0``, ``:pool1``..."""
        names = ", ".join(f":pool{i}" for i in range(count))
        return cls.expand(dataclasses.replace(stmt, sql=stmt.sql.replace("{pools}", names)))


class SQLiteStatements(Statements):
    """SQLite: the clock from ``julianday``."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    DAY = "(CAST(strftime('%s', 'now', 'start of day') AS REAL))"
    # One UPDATE: SQLite takes the database's write lock when a writing statement starts,
    # before it reads (as BEGIN IMMEDIATE would), so two claimers never pick one row.
    claim = Statement(f"""
        UPDATE jobs SET {_TAKE}
        WHERE id = ({_FIRST_QUEUED})
        RETURNING {JOB_COLUMNS}""")


class PostgresStatements(Statements):
    """PostgreSQL: the transaction's ``now()`` (one instant for a whole statement, so the
    reaper compares every row against it and the planner can use ``ix_jobs_lease``)."""

    NOW = "extract(epoch from now())::float8"
    DAY = "extract(epoch from date_trunc('day', now() AT TIME ZONE 'UTC'))::float8"
    # A transaction-scoped lock per user (key 1987470152 names vidq's submit limits).
    lock_user = Statement("SELECT pg_advisory_xact_lock(1987470152, hashtext(:owner))")
    # Key 1987470153 names the claims' max_running check (see ``Statements.lock_running``).
    lock_running = Statement("SELECT pg_advisory_xact_lock(1987470153, hashtext(:owner))")
    # The CTE locks the first queued row that no other claimer holds (SKIP LOCKED), so
    # concurrent claimers neither block on nor share a row.
    claim = Statement(f"""
        WITH next AS ({_FIRST_QUEUED}
            FOR UPDATE SKIP LOCKED)
        UPDATE jobs SET {_TAKE}
        WHERE id = (SELECT id FROM next)
        RETURNING {JOB_COLUMNS}, max_running""")
