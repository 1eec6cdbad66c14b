"""The statements of the operators' routes (``OperatorStore``, ``/admin/*``): every
user's jobs, admin retries, paused pools, per-user and per-pool figures, workers."""

from __future__ import annotations

from vidq.store.rows import JOB_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement
from vidq.store.statements.submissions import daily_usage_of


class OperatorStatements(RoleStatements):
    """The operators' reads and changes."""

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
    # GET /admin/usage: every user's jobs, video seconds and GPU-seconds per day and model.
    all_usage = Statement(daily_usage_of("1 = 1"))
    workers = Statement("""
        SELECT name, pools, engines, {NOW} - seen_at AS age, state, state_reason,
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
    # The dashboard's window: jobs started or finished in it, and those running now.
    pool_window = Statement("""
        SELECT pool, state, created_at, started_at, finished_at, {NOW} AS now FROM jobs
        WHERE state = 'RUNNING' OR finished_at > {NOW} - :window_s
           OR started_at > {NOW} - :window_s""")
    # The dashboard's history (``/admin/history``): the jobs finished in the window and the
    # unfinished ones (a job finished before it was queued and started before it too). Three
    # parts, each over a partial index (finished, queued, running), so the read is bounded
    # by what the window touched, not by the table; the predicates are the indexes' own.
    pool_history = Statement("""
        SELECT pool, state, created_at, first_started_at, finished_at FROM jobs
        WHERE state IN ('COMPLETED', 'FAILED', 'CANCELLED') AND finished_at > :since
          AND created_at <= :until
        UNION ALL
        SELECT pool, state, created_at, first_started_at, finished_at FROM jobs
        WHERE state IN ('PENDING', 'RETRY') AND created_at <= :until
        UNION ALL
        SELECT pool, state, created_at, first_started_at, finished_at FROM jobs
        WHERE state = 'RUNNING' AND created_at <= :until""")
    recent_failures = Statement("""
        SELECT id, owner, model_id, pool, error, error_type, finished_at FROM jobs
        WHERE state = 'FAILED' ORDER BY finished_at DESC, id DESC LIMIT :limit""")
