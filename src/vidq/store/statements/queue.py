"""The statements of the worker queue (``WorkerStore``): claims, the fenced updates of
a running job (heartbeat, progress, complete, fail, release, the end of a cancel), the
reaper, the registry of workers and the queue depths.

The claim itself differs by dialect (``statements/__init__.py``): both are built from
``FIRST_QUEUED`` and ``TAKE``."""

from __future__ import annotations

from typing import ClassVar

from vidq.store.rows import JOB_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement

# What a claim sets on the job it takes: both dialects' claims share it.
TAKE = """
    state = 'RUNNING', attempt = attempt + 1, lease_token = :token, worker = :worker,
    lease_until = {NOW} + :lease_s, started_at = {NOW}, progress_done = 0, progress_total = 0,
    retry_at = NULL, first_started_at = coalesce(first_started_at, {NOW}), preview_key = NULL,
    preview_step = NULL, preview_at = NULL"""
# What every end of an attempt records of what it used (``jobs.Ran``), in its own fenced
# update: its engine's seconds add to the job's, its device becomes the job's.
RAN = "gpu_seconds = gpu_seconds + :gpu_seconds, device = coalesce(:device, device)"
# A retry backing off (``retry_at`` in the future) waits; the jobs behind it go first.
# A paused pool (``paused_pools``) is claimed from by nobody. A user with ``max_running``
# jobs running (the token's limit, copied on the job) has the rest of theirs held back:
# the claim passes over them to other users' jobs.
FIRST_QUEUED = """
    SELECT id FROM jobs WHERE pool IN ({pools}) AND state IN ('PENDING', 'RETRY')
        AND (retry_at IS NULL OR retry_at <= {NOW})
        AND pool NOT IN (SELECT pool FROM paused_pools)
        AND (max_running IS NULL OR max_running > (SELECT count(*) FROM jobs AS mine
            WHERE mine.owner = jobs.owner AND mine.state = 'RUNNING'))
    ORDER BY rank, id LIMIT 1"""
# Fair share (``VIDQ_FAIR_SHARE``, migration 0012): the claim first finds the best claimable
# rank and its pool (``FIRST_QUEUED``'s job: the oldest of that rank), then, within that
# pool and rank, the user served least recently who has a claimable job there (``turns``
# in ``served`` order, users with nothing queued at that rank or better left out by
# ``ix_turns_next``; each user probed with ``ix_jobs_turn``), and takes that user's first
# job. Never a sort of the queued jobs: the walk stops at the first user with a claimable
# job.
FAIR_BEST = FIRST_QUEUED.replace("SELECT id FROM", "SELECT id, pool, rank FROM", 1)
_CLAIMABLE_OF = """
    FROM jobs WHERE pool = turns.pool AND owner = turns.owner AND state IN ('PENDING', 'RETRY')
        AND rank = :rank AND (retry_at IS NULL OR retry_at <= {NOW})
        AND (max_running IS NULL OR max_running > (SELECT count(*) FROM jobs AS mine
            WHERE mine.owner = jobs.owner AND mine.state = 'RUNNING'))"""

# The first claimable job at ``:rank`` in ``:pool`` of the user whose turn it is.
FAIR_TURN = f"""
    SELECT (SELECT id {_CLAIMABLE_OF} ORDER BY id LIMIT 1) FROM turns
    WHERE pool = :pool AND queued > 0 AND best_rank <= :rank
        AND EXISTS (SELECT 1 {_CLAIMABLE_OF})
    ORDER BY served LIMIT 1"""


class QueueStatements(RoleStatements):
    """The worker queue."""

    claim: ClassVar[Statement]  # per dialect; ``{pools}`` becomes one parameter per pool
    # A claim of a job whose user has a ``max_running`` limit is checked again under this
    # per-user lock, in the claim's transaction: PostgreSQL's claim counts the user's
    # running jobs under its own snapshot, so two simultaneous claims could both see room
    # for one more. The lock's holder counts every committed claim (``running_of``) and
    # rolls back its own when over. SQLite has one writer: its claim is exact already.
    lock_running: ClassVar[Statement | None] = None
    # Fair share's claim (``QueueQueries._claim_fair``), in one transaction: the pool and
    # rank to serve, then the user whose turn it is, their first claimable job there
    # taken and their turn advanced. (PostgreSQL's is one statement under a lock:
    # ``PostgresStatements.fair_claim``.)
    fair_best: ClassVar[Statement] = Statement(FAIR_BEST)
    # The same question outside any transaction and without a lock: on SQLite a fair
    # claim that finds nothing claimable (an idle worker's poll) ends there, having taken
    # no write lock (BEGIN IMMEDIATE).
    fair_peek = Statement(FAIR_BEST)
    # The user whose turn it is (least recently served with a claimable job at ``:rank``)
    # and their first job there, taken; ``:id`` (the rank's oldest job) when ``turns``
    # knows nobody (which its triggers do not allow): FIFO, so no job waits for ever.
    # The user's turn moves with the take (migration 0012's trigger).
    fair_take = Statement(f"""
        UPDATE jobs SET {TAKE}
        WHERE id = coalesce(({FAIR_TURN}), :id) AND state IN ('PENDING', 'RETRY')
        RETURNING {JOB_COLUMNS}, max_running""")
    # Where the dialect can (PostgreSQL), ``fair_best`` and ``fair_take`` as one statement
    # after ``fair_lock``: see ``PostgresStatements.fair_claim``.
    fair_lock: ClassVar[Statement | None] = None
    fair_claim: ClassVar[Statement | None] = None
    running_of = Statement(
        "SELECT count(*) AS n FROM jobs WHERE owner = :owner AND state = 'RUNNING'"
    )
    # The running attempt's lease, for the API's fenced worker routes (``claimed``).
    claimed = Statement(
        f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = :id AND state = 'RUNNING'"
        " AND lease_token IS NOT NULL"
    )
    # A retried complete of the attempt that won (its answer was lost): the completed row
    # keeps the winner's lease token, so only that attempt learns it won.
    completed_by = Statement("""
        SELECT 1 AS won FROM jobs WHERE id = :id AND state = 'COMPLETED'
            AND result_key = :key AND lease_token = :token""")
    # The answer carries the cancel request: a worker learns of it in the same round trip.
    heartbeat = Statement("""
        UPDATE jobs SET lease_until = {NOW} + :lease_s
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
        RETURNING cancel_requested""")
    progress = Statement("""
        UPDATE jobs SET progress_done = :done, progress_total = :total
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'""")
    # The attempt's latest live preview (its blob is written first, then named here).
    preview = Statement("""
        UPDATE jobs SET preview_key = :key, preview_step = :step, preview_at = {NOW}
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'""")
    complete = Statement(f"""
        UPDATE jobs SET state = 'COMPLETED', result_key = :result_key, result_meta = :meta,
            finished_at = {{NOW}}, lease_until = NULL, progress_done = progress_total, {RAN}
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
            AND NOT cancel_requested""")
    # The worker's end of a cancel request: fenced like ``complete``, so of a cancel and
    # a completion racing for one job exactly one is recorded (the request sets the flag
    # that ``complete`` refuses; a job completed first has no RUNNING row to flag).
    finish_cancel = Statement(f"""
        UPDATE jobs SET state = 'CANCELLED', finished_at = {{NOW}}, lease_token = NULL,
            lease_until = NULL, {RAN}
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING' AND cancel_requested""")
    fail = Statement(
        f"""
        UPDATE jobs SET
            state = CASE WHEN cancel_requested THEN 'CANCELLED'
                WHEN :retry AND attempt < max_attempts THEN 'RETRY' ELSE 'FAILED' END,
            error = :error, error_type = :error_type, lease_token = NULL, lease_until = NULL,
            finished_at = CASE WHEN :retry AND attempt < max_attempts AND NOT cancel_requested
                THEN NULL ELSE {{NOW}} END,
            retry_at = CASE WHEN :retry AND attempt < max_attempts AND NOT cancel_requested
                THEN {{NOW}} + :retry_after_s ELSE NULL END, {RAN}
        WHERE id = :id AND lease_token = :token AND state = 'RUNNING'
        RETURNING state, pool""",
        wakes=True,
    )
    # Graceful shutdown: the attempt was not the job's fault, so it is not spent: the job
    # gets one more attempt. Its number is not reused, so the next attempt's output key is
    # its own (the released attempt may have uploaded under its key; the next claim sweeps
    # earlier attempts' uploads).
    release = Statement(
        f"""
        UPDATE jobs SET
            state = CASE WHEN cancel_requested THEN 'CANCELLED' ELSE 'RETRY' END,
            finished_at = CASE WHEN cancel_requested THEN {{NOW}} ELSE NULL END,
            max_attempts = max_attempts + 1, lease_token = NULL, lease_until = NULL,
            worker = NULL, {RAN}
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
    # A worker token (``:owner``) keeps at most ``:max_names`` names alive (seen within
    # ``:window_s``): a name it already has is always refreshed; local workers (no owner,
    # no limit) register freely. ``:state``/``:reason``: what the worker says it is doing.
    register_worker = Statement("""
        INSERT INTO workers (name, pools, engines, seen_at, owner, state, state_reason)
        SELECT :name, :pools, :engines, {NOW}, :owner, :state, :reason
        WHERE :max_names < 0
            OR EXISTS (SELECT 1 FROM workers WHERE name = :name AND owner = :owner)
            OR (SELECT count(*) FROM workers
                WHERE owner = :owner AND seen_at > {NOW} - :window_s) < :max_names
        ON CONFLICT (name) DO UPDATE SET pools = excluded.pools, engines = excluded.engines,
            seen_at = excluded.seen_at, owner = excluded.owner, state = excluded.state,
            state_reason = excluded.state_reason""")
    queue_depths = Statement("""
        SELECT pool, count(*) AS queued FROM jobs
        WHERE state IN ('PENDING', 'RETRY') GROUP BY pool""")
