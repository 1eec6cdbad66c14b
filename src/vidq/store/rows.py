"""Row <-> value-object conversion for the SQL store (rows of either driver)."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Sequence
from typing import Any

from vidq.jobs import Claim, Job, JobState, queue_rank
from vidq.store.base import DailyUsage, JobStatus, Preview, Quota, Token, Upload
from vidq.store.positions import position_key

# A job's GPU-seconds as every reader counts them (status, usage, the daily limit): what
# its finished attempts recorded, plus the running attempt's time since its claim (an
# estimate until the attempt ends and records its engine's own time).
GPU_SECONDS = "(gpu_seconds + CASE WHEN state = 'RUNNING' THEN {NOW} - started_at ELSE 0 END)"
JOB_COLUMNS = (
    "id, owner, model_id, pool, tier, priority, state, inputs, binary_output, attempt, "
    "max_attempts, lease_token, worker, progress_done, progress_total, work_units, "
    "result_key, result_meta, error, error_type, idempotency_key, webhook_url, "
    "webhook_dialect, webhook_base, created_at, started_at, finished_at, lease_until, "
    f"expired_at, inputs_expired_at, {GPU_SECONDS} AS gpu_seconds, device, first_started_at, "
    "deleted_at"
)
TOKEN_COLUMNS = (
    "id, owner, max_priority, admin, created_at, revoked_at IS NOT NULL AS revoked, "
    "max_queued, max_running, rate_per_minute, daily_video_seconds, weight, worker, pools, "
    "daily_gpu_seconds, name, expires_at, "
    "(expires_at IS NOT NULL AND expires_at <= {NOW}) AS expired"
)
UPLOAD_COLUMNS = "id, owner, key, content_type, file_name, size, created_at, expires_at, received"


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
        webhook_dialect=row["webhook_dialect"],
        webhook_base=row["webhook_base"],
        created_at=float(row["created_at"]),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        expired_at=row["expired_at"],
        inputs_expired_at=row["inputs_expired_at"],
        gpu_seconds=float(row["gpu_seconds"] or 0.0),
        device=row["device"],
        first_started_at=row["first_started_at"],
        deleted_at=row["deleted_at"],
    )


def claim_from_row(row: Any) -> Claim:
    """A Claim from a row of ``JOB_COLUMNS`` that holds a lease (a claim's, or a running job's)."""
    return Claim(job_from_row(row), str(row["lease_token"]), float(row["lease_until"]))


def token_from_row(row: Any) -> Token:
    """A Token from a row of ``TOKEN_COLUMNS``."""
    return Token(
        id=int(row["id"]),
        user=row["owner"],
        max_priority=int(row["max_priority"]),
        admin=bool(row["admin"]),
        created_at=float(row["created_at"]),
        revoked=bool(row["revoked"]),
        quota=Quota(
            max_queued=_int(row["max_queued"]),
            max_running=_int(row["max_running"]),
            rate_per_minute=_int(row["rate_per_minute"]),
            daily_video_seconds=_int(row["daily_video_seconds"]),
            daily_gpu_seconds=_int(row["daily_gpu_seconds"]),
            weight=int(row["weight"]),
        ),
        worker=bool(row["worker"]),
        pools=tuple(row["pools"].split(",")) if row["pools"] else None,
        name=row["name"],
        expires_at=None if row["expires_at"] is None else float(row["expires_at"]),
        expired=bool(row["expired"]),
    )


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def job_status_from_row(
    row: Sequence[Any], position: Callable[[str, int, int], tuple[int, bool]]
) -> JobStatus:
    """A JobStatus from the ``job_status`` statement, whose columns are: id,
    model_id, pool, tier, priority, state, progress_done, progress_total, work_units,
    higher_quality, result_key, error, queue_version, expired_at, pool_paused, seed,
    attempt, gpu_seconds, device, created_at, first_started_at, preview_key, preview_step,
    preview_at.
    ``position(pool, key, version)`` answers for queued jobs: (position, held)."""
    state = JobState(row[5])
    queue_position = None
    held = False
    if state.queued:
        key = position_key(queue_rank(row[3], row[4]), row[0])
        queue_position, held = position(row[2], key, row[12] or 0)
    return JobStatus(
        id=int(row[0]), model_id=row[1], state=state, progress_done=row[6],
        progress_total=row[7], work_units=row[8], higher_quality=bool(row[9]),
        result_key=row[10], error=row[11], queue_position=queue_position,
        expired_at=row[13], pool_paused=bool(row[14]), held=held,
        seed=None if row[15] is None else int(row[15]), attempt=int(row[16]),
        gpu_seconds=float(row[17] or 0.0), device=row[18], created_at=float(row[19]),
        first_started_at=row[20],
        preview=None if row[21] is None else Preview(row[21], int(row[22]), float(row[23])),
    )  # fmt: skip


def daily_usage_from_row(row: Any) -> DailyUsage:
    """A DailyUsage from a row of ``statements.submissions.daily_usage_of``."""
    day = datetime.date(1970, 1, 1) + datetime.timedelta(days=int(row["day"]))
    return DailyUsage(
        user=row["owner"], day=day.isoformat(), model_id=row["model_id"],
        jobs=int(row["jobs"]), video_seconds=round(float(row["video_seconds"]), 3),
        gpu_seconds=round(float(row["gpu_seconds"]), 3),
    )  # fmt: skip


def upload_from_row(row: Any) -> Upload:
    size = row["size"]
    expires = row["expires_at"]
    return Upload(
        id=row["id"],
        user=row["owner"],
        key=row["key"],
        content_type=row["content_type"],
        file_name=row["file_name"],
        size=None if size is None else int(size),
        created_at=float(row["created_at"]),
        expires_at=None if expires is None else float(expires),
        received=int(row["received"] or 0),
    )
