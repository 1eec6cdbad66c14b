"""What the native vocabulary answers about a request: the submit's URLs, the spec's
status object, the result (``{"video": ...}``, the seed and the metrics), the summary of a
request that ``GET /requests`` lists (and the admin routes, with more), and what requests
used per day (``GET /usage``, ``GET /admin/usage``)."""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

from vidq.api.context import AppContext
from vidq.api.services import progress
from vidq.api.services.results import iso, poster_url, preview
from vidq.jobs import WIRE_STATUS, Hold, Job, JobState
from vidq.media.inputs import BLOB_PREFIX
from vidq.store.base import DailyUsage, JobStatus, SubmitStore


def urls(base: str, model_id: str, job_id: int) -> dict[str, str]:
    response_url = f"{base}/queue/{model_id}/requests/{job_id}"
    return {
        "request_id": str(job_id),
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def status_body(ctx: AppContext, job: JobStatus, base: str) -> dict[str, Any]:
    """The spec's status object for a job. ETAs (``etaSeconds``, ``statusMessages.
    estimated_total_time_seconds``) are left out when there is no estimate."""
    body: dict[str, Any] = {"status": WIRE_STATUS[job.state].value}
    state = job.state
    if job.queue_position is not None:
        body["queue_position"] = job.queue_position
        body["statusMessages"] = {}
        hold = job.hold
        if hold is Hold.PAUSED:
            body["statusMessages"] = {
                "message": hold.value,
                "detail_message": "An operator paused this model's queue; the request keeps "
                "its place and starts once the queue is resumed.",
            }
        elif hold is Hold.HELD:
            body["statusMessages"] = {
                "message": hold.value,
                "detail_message": "This token's max_running lets this request start "
                "only once an earlier one of its requests has ended; workers take other "
                "users' requests first. queue_position counts the requests that will "
                "start before it then.",
            }
        _put(body, "etaSeconds", progress.eta_remaining(ctx.eta, job, job.queue_position, hold))
    elif state is JobState.RUNNING:
        # Before the engine's first report, n is the step count the worker will run.
        total = job.progress_total or progress.expected_tasks(job)
        body["statusMessages"] = {
            "message": "PROCESSING",
            "detail_message": f"Progress: {job.progress_done}/{total} Tasks done",
        }
        _put(
            body["statusMessages"],
            "estimated_total_time_seconds",
            progress.eta_total(ctx.eta, job),
        )
        _put(body, "etaSeconds", progress.eta_remaining(ctx.eta, job))
        shown = preview(ctx, job, base)
        if shown is not None:
            body["preview"] = shown  # vidq's: the video so far (a live preview)
    elif state is JobState.COMPLETED:
        uri = ctx.storage.uri(job.result_key or "")
        body["queue_position"] = 0
        body["statusMessages"] = {
            "message": "Job completed successfully",
            "result_uri": uri,
            "results": [uri],
        }
        body["etaSeconds"] = 0
        if job.expired_at is not None:
            body["expired"] = True
            body["statusMessages"]["expired_at"] = iso(job.expired_at)
    elif state is JobState.FAILED:
        body["statusMessages"] = {"message": "Job failed", "error": job.error or "unknown error"}
        body["error"] = job.error or "unknown error"
    else:
        body["statusMessages"] = {"message": "Job cancelled"}
    cost = None if state.queued else progress.metrics(job)
    if cost is not None:
        body["metrics"] = cost  # vidq's: what it cost so far (progress.metrics)
    if job.seed is not None:
        body["seed"] = job.seed  # chosen at submit: known before the job starts
    body["response_url"] = f"{base}/queue/{job.model_id}/requests/{job.id}"
    return body


def _put(body: dict[str, Any], key: str, value: float | None) -> None:
    if value is not None:
        body[key] = value


def result(video: dict[str, Any], job: Job) -> dict[str, Any]:
    """The native dialect's result: the spec's ``{"video": {...}}``, the seed used, what
    the request cost (``metrics``) and the LoRAs applied (``loras``), if any."""
    body: dict[str, Any] = {"video": video}
    seed = progress.seed_of(job)
    if seed is not None:
        body["seed"] = seed
    body["metrics"] = progress.metrics(job)
    loras = job.result_meta.get("loras")
    if loras:  # what the engine applied: each LoRA's sha256, size, scale, expert
        body["loras"] = loras
    return body


def summary(job: Job, base: str, ctx: AppContext | None = None) -> dict[str, Any]:
    """One request as ``GET /requests`` lists it; with ``ctx``, ``poster_url``: a signed
    URL of its poster frame (a JPEG still) while its video is kept, else null."""
    shown = {} if ctx is None else {"poster_url": poster_url(ctx, job, base)}
    return {
        **urls(base, job.model_id, job.id),
        "model_id": job.model_id,
        "status": job.wire_status.value,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "progress": {"done": job.progress_done, "total": job.progress_total},
        "attempt": job.attempt,
        "error": job.error if job.state is JobState.FAILED else None,
        "error_type": job.error_type if job.state is JobState.FAILED else None,
        "expired": job.expired_at is not None,
        "deleted": job.deleted_at is not None,
        "seed": progress.seed_of(job),
        **shown,
        **submitted_inputs(job),
    }


def details(ctx: AppContext, store: SubmitStore, job: Job, base: str) -> dict[str, Any]:
    """One request as ``GET /requests/{id}`` answers it: its summary, its place in the
    queue (position, and ``hold``: why it is passed over, if it is), ETA (null without an
    estimate) and run time."""
    place = progress.queue_place(store, job) if job.state.queued else progress.Place(0)
    return {
        **summary(job, base, ctx),
        "queue_position": place.position,
        "hold": place.hold,
        "eta_seconds": progress.eta_remaining(ctx.eta, job, place.position, place.hold),
        "run_seconds": progress.run_seconds(job),
        "metrics": progress.metrics(job),
        # the finished video's {width, height, fps, frames, seconds, file_size}
        "output": output_facts(job),
    }


def output_facts(job: Job) -> dict[str, Any] | None:
    """What the worker measured of a completed request's video; None before it completed,
    once it expired, or for outputs stored before it was measured."""
    video = job.result_meta.get("video")
    if job.state is not JobState.COMPLETED or job.expired_at is not None:
        return None
    if not isinstance(video, dict):
        return None
    # A remote worker reported it: only its numbers are passed on, nothing else it sent.
    facts: dict[str, Any] = {k: _number(video.get(k)) for k in _OUTPUT_FACTS}
    facts["file_size"] = _number(job.result_meta.get("file_size"))
    return facts


_OUTPUT_FACTS = ("width", "height", "fps", "frames", "seconds")


def _number(value: Any) -> int | float | None:
    """``value`` if it is a finite number (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def submitted_inputs(job: Job) -> dict[str, Any]:
    """The inputs as submitted: ``inputs`` without the media (stored as blobs, possibly
    megabytes) and the service's own ``_`` keys; ``input_files`` names the media fields."""
    inputs: dict[str, Any] = {}
    files: list[str] = []
    for key, value in job.inputs.items():
        if isinstance(value, str) and value.startswith(BLOB_PREFIX):
            files.append(key)
        elif not key.startswith("_"):
            inputs[key] = value
    return {"inputs": inputs, "input_files": files}


# The days ``GET /usage`` and ``GET /admin/usage`` may cover (today included).
USAGE_DAYS_MAX = 90


def usage(rows: Sequence[DailyUsage], days: int, now: float, *, users: bool) -> dict[str, Any]:
    """What requests submitted on each of the last ``days`` UTC days used, per day and
    model (and per user, for the operators): requests, requested video seconds and
    GPU-seconds (running requests: their time so far), with the totals. Each figure is the
    sum of the requests' own (their ``metrics.gpu_seconds``)."""
    today = datetime.datetime.fromtimestamp(now, datetime.UTC).date()
    since = today - datetime.timedelta(days=days - 1)

    def figures(row: DailyUsage) -> dict[str, Any]:
        who = {"user": row.user} if users else {}
        return {
            **who, "day": row.day, "model_id": row.model_id, "jobs": row.jobs,
            "video_seconds": row.video_seconds, "gpu_seconds": row.gpu_seconds,
        }  # fmt: skip

    return {
        "days": days,
        "since": since.isoformat(),
        "usage": [figures(r) for r in rows],
        "total": {
            "jobs": sum(r.jobs for r in rows),
            "video_seconds": round(sum(r.video_seconds for r in rows), 3),
            "gpu_seconds": round(sum(r.gpu_seconds for r in rows), 3),
        },
    }
