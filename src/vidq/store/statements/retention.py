"""The statements of the retention collector (``RetentionStore``, ``ops/retention.py``):
its fleet-wide lease, the jobs whose blobs are due, the marks before and after deleting
them, the purge of old rows into the metric rollup, expired uploads, the running
attempts (whose live previews are kept) and the retried jobs that finished lately (whose
losing attempts' late uploads are swept)."""

from __future__ import annotations

from vidq.store.rows import JOB_COLUMNS, UPLOAD_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement
from vidq.store.statements.metrics import job_counts_of, job_durations_of

_FINISHED = "state IN ('COMPLETED', 'FAILED', 'CANCELLED')"
# A finished job whose row the collector may delete: past the job TTL (``:upto``, the
# newest end time of the batch) and with every blob already deleted.
_PURGEABLE = f"""{_FINISHED} AND finished_at <= :upto AND inputs_deleted_at IS NOT NULL
    AND (state <> 'COMPLETED' OR output_deleted_at IS NOT NULL)"""


class RetentionStatements(RoleStatements):
    """The collector's statements."""

    # Named leases on the database clock: taken when free or expired, renewed by the holder.
    take_lease = Statement("""
        INSERT INTO leases (name, holder, until) VALUES (:name, :holder, {NOW} + :lease_s)
        ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
        WHERE leases.until < {NOW} OR leases.holder = excluded.holder
        RETURNING holder""")
    release_lease = Statement("DELETE FROM leases WHERE name = :name AND holder = :holder")
    # The attempts running now: a live preview of any other attempt is an orphan.
    running_attempts = Statement("SELECT id, attempt FROM jobs WHERE state = 'RUNNING'")
    # Retried jobs that finished in the last ``:window_s``: an attempt that lost such a job
    # may have stored an upload after the winner's sweep (and died before deleting it).
    retried_finished = Statement(f"""
        SELECT {JOB_COLUMNS} FROM jobs
        WHERE {_FINISHED} AND attempt > 1 AND finished_at >= {{NOW}} - :window_s
        ORDER BY finished_at DESC, id DESC LIMIT :limit""")
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
    purge_counts = Statement(job_counts_of(_PURGEABLE))
    purge_durations = Statement(job_durations_of(_PURGEABLE))
    add_rollup = Statement("""
        INSERT INTO metric_rollup (family, labels, value) VALUES (:family, :labels, :value)
        ON CONFLICT (family, labels) DO UPDATE SET value = metric_rollup.value + excluded.value""")
    purge_jobs = Statement(f"DELETE FROM jobs WHERE {_PURGEABLE}")
    # Expired: past the expiry the client asked for, else older than the retention default.
    expired_uploads = Statement(f"""
        SELECT {UPLOAD_COLUMNS} FROM uploads
        WHERE expires_at <= {{NOW}} OR (expires_at IS NULL AND created_at <= {{NOW}} - :max_age_s)
        ORDER BY created_at LIMIT :limit""")
