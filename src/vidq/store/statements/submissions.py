"""The statements of a user's jobs (``SubmitStore``): the submit's INSERT, with or without
the token's limits, and what the user routes read and change (one job, its status and
queue position, a user's list, a cancel, the user's usage of the limits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from vidq.store.rows import GPU_SECONDS, JOB_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement

_JOB_FIELDS = """owner, model_id, pool, tier, priority, rank, state, inputs,
            higher_quality, binary_output, max_attempts, work_units, idempotency_key,
            webhook_url, webhook_dialect, webhook_base, webhook_state, webhook_next_at,
            max_running, video_seconds, deadline_at, start_by, start_error, seed, created_at,
            weight"""
_JOB_VALUES = """:owner, :model_id, :pool, :tier, :priority, :rank, 'PENDING', :inputs,
            :higher_quality, :binary_output, :max_attempts, :work_units, :idempotency_key,
            :webhook_url, :webhook_dialect, :webhook_base, :webhook_state, :webhook_next_at,
            :max_running, :video_seconds, {NOW} + :deadline_s, {NOW} + :start_s,
            :start_error, :seed, {NOW}, :weight"""
_ON_KEY = "ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
# The conditions of a limited submit (``SubmitStatements.insert_limited``), by limit name:
# each holds while the user's jobs leave room for one more.
_LIMIT_CHECKS = {
    "max_queued": """(SELECT count(*) FROM jobs WHERE owner = :owner
            AND state IN ('PENDING', 'RETRY')) < :max_queued""",
    "rate_per_minute": """(SELECT count(*) FROM jobs WHERE owner = :owner
            AND created_at > {NOW} - 60) < :rate_per_minute""",
    "daily_video_seconds": """(SELECT coalesce(sum(video_seconds), 0) FROM jobs
            WHERE owner = :owner AND created_at >= {DAY}) + :video_seconds
            <= :daily_video_seconds""",
    # Used up once today's jobs (running ones with their time so far) reach the limit: a
    # submit's own GPU time is not known ahead, so the job that crosses it may run.
    "daily_gpu_seconds": f"""(SELECT coalesce(sum({GPU_SECONDS}), 0) FROM jobs
            WHERE owner = :owner AND created_at >= {{DAY}}) < :daily_gpu_seconds""",
}


def daily_usage_of(where: str) -> str:
    """What the jobs matching ``where`` and submitted since ``{DAY} - :back_s`` used, per
    owner, UTC day and model (``GET /usage``, and every user's for ``GET /admin/usage``)."""
    return f"""
        SELECT owner, {{CREATED_DAY}} AS day, model_id, count(*) AS jobs,
            coalesce(sum(video_seconds), 0) AS video_seconds,
            coalesce(sum({GPU_SECONDS}), 0) AS gpu_seconds
        FROM jobs WHERE {where} AND created_at >= {{DAY}} - :back_s
        GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""


class SubmitStatements(RoleStatements):
    """A user's jobs: submits and the user routes."""

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
    usage = Statement(f"""
        SELECT
            (SELECT count(*) FROM jobs WHERE owner = :owner
                AND state IN ('PENDING', 'RETRY')) AS queued,
            (SELECT count(*) FROM jobs WHERE owner = :owner AND state = 'RUNNING') AS running,
            (SELECT count(*) FROM jobs WHERE owner = :owner
                AND created_at > {{NOW}} - 60) AS last_minute,
            (SELECT min(created_at) FROM jobs WHERE owner = :owner
                AND created_at > {{NOW}} - 60) AS minute_first,
            (SELECT coalesce(sum(video_seconds), 0) FROM jobs WHERE owner = :owner
                AND created_at >= {{DAY}}) AS video_seconds_today,
            (SELECT coalesce(sum({GPU_SECONDS}), 0) FROM jobs WHERE owner = :owner
                AND created_at >= {{DAY}}) AS gpu_seconds_today,
            {{NOW}} AS now""")
    # GET /usage: the user's jobs, video seconds and GPU-seconds per UTC day and model.
    daily_usage = Statement(daily_usage_of("owner = :owner"))
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
    job_status = Statement(f"""
        SELECT id, model_id, pool, tier, priority, state, progress_done, progress_total,
            work_units, higher_quality, result_key, error,
            (SELECT version FROM queue_versions AS q WHERE q.pool = jobs.pool), expired_at,
            (SELECT 1 FROM paused_pools AS p WHERE p.pool = jobs.pool), seed,
            attempt, {GPU_SECONDS}, device, created_at, first_started_at, preview_key,
            preview_step, preview_at
        FROM jobs WHERE id = :id AND owner = :owner""")
    # A pool's queue for its position snapshot (positions.py): the owner only of jobs
    # with a ``max_running``, the only ones that may be held.
    queue_keys = Statement("""
        SELECT rank, id, max_running, CASE WHEN max_running IS NULL THEN NULL ELSE owner END,
            1
        FROM jobs WHERE pool = :pool AND state IN ('PENDING', 'RETRY')
        ORDER BY rank, id""")
    # Under fair share every job's owner and weight, and the pool's turn order
    # (positions.turn_order).
    queue_turn_keys = Statement("""
        SELECT rank, id, max_running, owner, weight
        FROM jobs WHERE pool = :pool AND state IN ('PENDING', 'RETRY')
        ORDER BY rank, id""")
    turns_of = Statement("SELECT owner, served, used FROM turns WHERE pool = :pool AND queued > 0")
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
    # GET /requests: a page of the user's requests that are not deleted, newest first,
    # each filter off when its parameter is NULL: the model, the states (one wire status
    # is one or two), and ``:pattern``, a LIKE pattern (``\\`` escapes) the lower-cased
    # prompt must match. The filters read the rows of the (owner, id) index's range: a
    # scan of the user's own rows only, bounded by the page size once enough match.
    list_jobs = Statement(f"""
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE owner = :owner AND id < :before AND deleted_at IS NULL
            AND (CAST(:model_id AS TEXT) IS NULL OR model_id = :model_id)
            AND (CAST(:state1 AS TEXT) IS NULL OR state IN (:state1, :state2))
            AND (CAST(:pattern AS TEXT) IS NULL OR lower({{PROMPT}}) LIKE :pattern ESCAPE '\\')
        ORDER BY id DESC LIMIT :limit""")
    # DELETE /requests/{id}: a finished job of the user's is marked deleted, with the
    # retention marks of its blobs (a completed job's output, and the inputs), which the
    # caller then deletes as the collector does (a rerun of the collector finishes what
    # a failure left). No row: not the user's, not finished, or deleted already.
    delete_job = Statement(f"""
        UPDATE jobs SET deleted_at = {{NOW}},
            expired_at = CASE WHEN state = 'COMPLETED' THEN coalesce(expired_at, {{NOW}})
                ELSE expired_at END,
            inputs_expired_at = coalesce(inputs_expired_at, {{NOW}})
        WHERE id = :id AND owner = :owner AND deleted_at IS NULL
            AND state IN ('COMPLETED', 'FAILED', 'CANCELLED')
        RETURNING {JOB_COLUMNS}""")

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
