"""The statements of what is measured of jobs: the job counters and duration histograms
(``MetricStore``, read at scrape time; the collector's purge reuses ``job_counts_of`` and
``job_durations_of`` on the rows it deletes), the pool and worker gauges, and the recent
run times behind the ETAs (``RunTimeStore``)."""

from __future__ import annotations

from vidq.store.statements.base import RoleStatements, Statement

# Histogram buckets (seconds) of queue waits and run times: 1 s .. 1 h.
DURATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)


def job_counts_of(where: str) -> str:
    """The job counters of the rows matching ``where``, one row per (model, pool, tier,
    state): jobs, attempts (with those before admin retries), admin retries, jobs that
    ran at least once, jobs whose running attempt was cancelled, and the GPU-seconds their
    ended attempts recorded (a running attempt's counts once it ends: a counter never
    goes back)."""
    return f"""
        SELECT model_id, pool, tier, state, count(*), sum(attempt), sum(past_attempts),
            sum(admin_retries), sum(CASE WHEN attempt > 0 THEN 1 ELSE 0 END),
            sum(CASE WHEN cancel_requested THEN 1 ELSE 0 END), sum(gpu_seconds)
        FROM jobs WHERE {where} GROUP BY model_id, pool, tier, state"""


def job_durations_of(where: str) -> str:
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


class MetricStatements(RoleStatements):
    """Job counters, histograms and gauges; recent run times."""

    # Queued and running jobs per pool: reads the partial indexes of those states only.
    pool_states = Statement("""
        SELECT pool, state, count(*) AS n FROM jobs
        WHERE state IN ('PENDING', 'RETRY', 'RUNNING') GROUP BY pool, state""")
    job_counts = Statement(job_counts_of("1 = 1"))
    job_durations = Statement(job_durations_of("1 = 1"))
    metric_rollup = Statement("SELECT family, labels, value FROM metric_rollup")
    live_workers = Statement("SELECT pools FROM workers WHERE seen_at > {NOW} - :window_s")
    recent_durations = Statement("""
        SELECT finished_at - started_at AS seconds FROM jobs
        WHERE pool = :pool AND state = 'COMPLETED' AND work_units BETWEEN :low AND :high
          AND started_at IS NOT NULL
        ORDER BY finished_at DESC LIMIT :limit""")
