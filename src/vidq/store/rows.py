"""Row <-> value-object conversion shared by the SQL adapters."""

from __future__ import annotations

import json
from typing import Any

from vidq.jobs import Job, JobState

JOB_COLUMNS = (
    "id, owner, model_id, pool, tier, priority, state, inputs, binary_output, attempt, "
    "max_attempts, lease_token, worker, progress_done, progress_total, work_units, "
    "result_key, result_meta, error, error_type, idempotency_key, webhook_url, created_at, "
    "started_at, finished_at, lease_until"
)


def job_from_row(row: Any) -> Job:
    """A Job from a row that supports row["column"] (sqlite3.Row, psycopg dict rows)."""
    return Job(
        id=int(row["id"]),
        user=row["owner"],
        model_id=row["model_id"],
        pool=row["pool"],
        tier=int(row["tier"]),
        priority=int(row["priority"]),
        state=JobState(row["state"]),
        inputs=json.loads(row["inputs"]),
        binary_output=bool(row["binary_output"]),
        attempt=int(row["attempt"]),
        max_attempts=int(row["max_attempts"]),
        lease_token=row["lease_token"],
        worker=row["worker"],
        progress_done=int(row["progress_done"]),
        progress_total=int(row["progress_total"]),
        work_units=float(row["work_units"]),
        result_key=row["result_key"],
        result_meta=json.loads(row["result_meta"]) if row["result_meta"] else {},
        error=row["error"],
        error_type=row["error_type"],
        idempotency_key=row["idempotency_key"],
        webhook_url=row["webhook_url"],
        created_at=float(row["created_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        lease_until=row["lease_until"],
    )


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)
