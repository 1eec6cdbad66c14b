"""What the fal-compatible dialect answers, worded as fal's clients read it: the request's
URLs under the path it was submitted to, the ``x-fal-request-id`` header, the status
object (with ``logs``: the request's timeline as fal log lines), and the result or the
error of a finished request.
"""

from __future__ import annotations

import datetime
from typing import Any

from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext
from vidq.api.services import progress
from vidq.api.services.results import video_file
from vidq.catalog import Family
from vidq.jobs import Job, JobState
from vidq.store.base import SubmitStore

REQUEST_ID_HEADER = "x-fal-request-id"
# Failures the engine attributes to the inputs are 422 (as fal's model errors); the
# rest (crashes, lost workers, engines that cannot run) are the server's: 500.
# (``InvalidLora``, ``PayloadTooLarge``: a request's LoRA is not one for the model, or
# is over VIDQ_MAX_LORA_BYTES; the worker found out, fetching or loading it.)
_INPUT_ERRORS = {"EngineError", "InvalidInput", "InvalidLora", "PayloadTooLarge", "unknown_model"}


def urls(base: str, owner: str, model_id: str, job_id: int) -> dict[str, str]:
    """A request's URLs under the path it was submitted to (``owner/model_id``)."""
    response_url = f"{base}/queue/{owner}/{model_id}/requests/{job_id}"
    return {
        "request_id": str(job_id),
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def request_headers(job_id: int) -> dict[str, str]:
    """The header every answer about a request carries."""
    return {REQUEST_ID_HEADER: str(job_id)}


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def logs_of(job: Job) -> list[dict[str, Any]]:
    """The request's timeline as fal log lines (vidq keeps no engine output). The list
    only grows while an attempt runs (one line per step done), so that a client adding
    the lines of each stream event to what it has ends with this list."""

    def line(ts: float | None, message: str, level: str = "INFO") -> dict[str, Any]:
        return {"message": message, "level": level, "source": "user", "timestamp": _iso(ts or 0)}

    lines = [line(job.created_at, f"Request {job.id} queued for {job.model_id}")]
    if job.started_at is not None:
        who = f" on worker {job.worker}" if job.worker else ""
        lines.append(line(job.started_at, f"Attempt {job.attempt} started{who}"))
    lines.extend(
        line(job.started_at, f"Progress: {done}/{job.progress_total} steps")
        for done in range(1, job.progress_done + 1)
    )
    if job.state is JobState.COMPLETED:
        lines.append(line(job.finished_at, f"Completed in {progress.run_seconds(job) or 0:.1f} s"))
    elif job.state is JobState.FAILED:
        lines.append(line(job.finished_at, f"Failed: {job.error or 'unknown error'}", "ERROR"))
    elif job.state is JobState.CANCELLED:
        lines.append(line(job.finished_at, "Cancelled", "WARNING"))
    return lines


def status_body(
    ctx: AppContext, store: SubmitStore, job: Job, base: str, owner: str, logs: bool
) -> dict[str, Any]:
    """fal's status object for a job (runs in a worker thread: it may query)."""
    status = {JobState.RUNNING: "IN_PROGRESS"}.get(job.state, "COMPLETED")
    if job.state.queued:
        status = "IN_QUEUE"
    body: dict[str, Any] = {
        "status": status,
        **urls(base, owner, job.model_id, job.id),
        "logs": logs_of(job) if logs else None,
        "seed": progress.seed_of(job),  # vidq's: the seed chosen at submit (fal's result has it)
    }
    if job.state.queued:  # queue_position is fal's; hold and the ETAs are vidq's
        place = progress.queue_place(store, job)
        body["queue_position"] = place.position
        body["hold"] = place.hold
        body["eta_seconds"] = progress.eta_remaining(ctx.eta, job, place.position, place.hold)
    elif job.state is JobState.RUNNING:
        body["progress"] = {"done": job.progress_done, "total": job.progress_total}
        body["eta_seconds"] = progress.eta_remaining(ctx.eta, job)
    else:
        # the engine's seconds over the attempts: the native metrics' gpu_seconds
        cost = progress.metrics(job)
        body["metrics"] = {"inference_time": None if cost is None else cost["gpu_seconds"]}
        if job.state is JobState.FAILED:
            body["error"] = job.error or "unknown error"
            body["error_type"] = job.error_type or "internal_error"
        elif job.state is JobState.CANCELLED:
            body["error"] = f"Request {job.id} was cancelled."
            body["error_type"] = "request_cancelled"
    return body


def result_body(ctx: AppContext, job: Job, base: str) -> dict[str, Any]:
    """A finished job's result as fal's Wan endpoints return it: ``video`` (a file: url,
    content_type, file_name, file_size) with the ``prompt`` and ``seed`` used; Foley's
    is the video alone. Runs in a worker thread."""
    body: dict[str, Any] = {"video": video_file(ctx, job, base)}
    if progress.model_of(job).family is not Family.FOLEY:
        body["prompt"] = job.inputs.get("prompt", "")
        seed = progress.seed_of(job)
        if seed is not None:
            body["seed"] = seed
    return body


async def result_response(ctx: AppContext, job: Job, base: str) -> Response:
    """A request's result as fal answers it (the result route and ``fal.run``)."""
    headers = request_headers(job.id)
    if job.state is JobState.COMPLETED:
        body = await run_in_threadpool(result_body, ctx, job, base)
        return JSONResponse(body, headers=headers)
    if job.state is JobState.FAILED:
        error_type = job.error_type or "internal_error"
        code = 422 if error_type in _INPUT_ERRORS else 500
        failure = {"detail": job.error or "unknown error", "error_type": error_type}
        return JSONResponse(
            failure, status_code=code, headers={**headers, "x-fal-error-type": error_type}
        )
    if job.state is JobState.CANCELLED:
        cancelled = {
            "detail": f"Request {job.id} was cancelled.",
            "error_type": "request_cancelled",
        }
        return JSONResponse(cancelled, status_code=400, headers=headers)
    status_name = "IN_QUEUE" if job.state.queued else "IN_PROGRESS"
    pending = {"detail": f"Request {job.id} is {status_name}; the result is ready once COMPLETED."}
    return JSONResponse(pending, status_code=400, headers=headers)
