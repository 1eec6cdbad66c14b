"""The fal-compatible dialect: ``/queue/{owner}/{model_id}/...`` speaking what the real
``fal-client`` (PyPI) and ``@fal-ai/client`` (npm) expect. Any owner segment is accepted
(documented as ``vidq/<model id>``); the store and the jobs are the native ones.

Differences from the native dialect, all taken from the clients' sources:
- statuses are IN_QUEUE / IN_PROGRESS / COMPLETED only; a failed or cancelled request is
  COMPLETED with ``error`` and ``error_type``; ``logs`` is always present (a list with
  ``?logs=1|true``, else null) and COMPLETED carries ``metrics.inference_time``;
- cancel answers 202 ``CANCELLATION_REQUESTED`` (queued: removed; running: the worker
  stops it within a heartbeat and it ends cancelled) or 400 ``ALREADY_COMPLETED``;
- deadlines: ``X-Request-Timeout`` (finished within N s) and fal-client's
  ``start_timeout`` header ``X-Fal-Request-Timeout`` (started within N s);
- results are ``{"video": {"url", "content_type", "file_name", "file_size"}}`` with a
  signed download URL; every response about a request carries ``x-fal-request-id``;
- ``/status/stream`` is a server-sent-event stream of status objects that ends after the
  final one; ``X-Fal-Queue-Priority: low`` lowers the priority by ``LOW_PRIORITY_DROP``.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from vidq.api import jobs_service as svc
from vidq.api.body import JsonRoute, submitted
from vidq.api.context import AppContext, context
from vidq.api.deps import caller, model_or_404, request_id
from vidq.catalog import Model, input_schema
from vidq.errors import InvalidInput
from vidq.jobs import PRIORITY_MIN, Job, JobState
from vidq.store.base import Token

router = APIRouter(tags=["fal-compatible"], route_class=JsonRoute)

REQUEST_ID_HEADER = "x-fal-request-id"
PRIORITY_HEADER = "x-fal-queue-priority"
LOW_PRIORITY_DROP = 500
STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 10.0
# Failures the engine attributes to the inputs are 422 (as fal's model errors); the
# rest (crashes, lost workers, engines that cannot run) are the server's: 500.
_INPUT_ERRORS = {"EngineError", "InvalidInput", "unknown_model"}


def _prefix(base: str, owner: str, model_id: str, job_id: int) -> str:
    return f"{base}/queue/{owner}/{model_id}/requests/{job_id}"


def _urls(base: str, owner: str, model_id: str, job_id: int) -> dict[str, str]:
    response_url = _prefix(base, owner, model_id, job_id)
    return {
        "request_id": str(job_id),
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def _headers(job_id: int) -> dict[str, str]:
    return {REQUEST_ID_HEADER: str(job_id)}


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _priority(header: str | None, requested: int) -> int:
    value = (header or "normal").strip().lower()
    if value == "normal":
        return requested
    if value == "low":
        return max(PRIORITY_MIN, requested - LOW_PRIORITY_DROP)
    raise InvalidInput("X-Fal-Queue-Priority", "must be 'normal' or 'low'")


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat().replace("+00:00", "Z")


def logs_of(job: Job) -> list[dict[str, Any]]:
    """The request's timeline as fal log lines (vidq keeps no engine output)."""

    def line(ts: float | None, message: str, level: str = "INFO") -> dict[str, Any]:
        return {"message": message, "level": level, "source": "user", "timestamp": _iso(ts or 0)}

    lines = [line(job.created_at, f"Request {job.id} queued for {job.model_id}")]
    if job.started_at is not None:
        who = f" on worker {job.worker}" if job.worker else ""
        lines.append(line(job.started_at, f"Attempt {job.attempt} started{who}"))
    if job.progress_total:
        lines.append(
            line(job.started_at, f"Progress: {job.progress_done}/{job.progress_total} steps")
        )
    if job.state is JobState.COMPLETED:
        lines.append(line(job.finished_at, f"Completed in {svc.run_seconds(job) or 0:.1f} s"))
    elif job.state is JobState.FAILED:
        lines.append(line(job.finished_at, f"Failed: {job.error or 'unknown error'}", "ERROR"))
    elif job.state is JobState.CANCELLED:
        lines.append(line(job.finished_at, "Cancelled", "WARNING"))
    return lines


def status_body(ctx: AppContext, job: Job, base: str, owner: str, logs: bool) -> dict[str, Any]:
    """fal's status object for a job (runs in a worker thread: it may query)."""
    status = {JobState.RUNNING: "IN_PROGRESS"}.get(job.state, "COMPLETED")
    if job.state.queued:
        status = "IN_QUEUE"
    body: dict[str, Any] = {
        "status": status,
        **_urls(base, owner, job.model_id, job.id),
        "logs": logs_of(job) if logs else None,
    }
    if job.state.queued:
        body["queue_position"] = ctx.store.queue_position(job)
        body["eta_seconds"] = svc.eta_remaining(ctx, job, body["queue_position"])
    elif job.state is JobState.RUNNING:
        body["progress"] = {"done": job.progress_done, "total": job.progress_total}
        body["eta_seconds"] = svc.eta_remaining(ctx, job)
    else:
        body["metrics"] = {"inference_time": svc.run_seconds(job)}
        if job.state is JobState.FAILED:
            body["error"] = job.error or "unknown error"
            body["error_type"] = job.error_type or "internal_error"
        elif job.state is JobState.CANCELLED:
            body["error"] = f"Request {job.id} was cancelled."
            body["error_type"] = "request_cancelled"
    return body


def _validate(model: Model, data: Any) -> Any:
    try:
        return input_schema(model).model_validate(data)
    except pydantic.ValidationError as exc:
        detail = [
            {"loc": ["body", *e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type")}
            for e in exc.errors(include_url=False, include_input=False)
        ]
        raise _Invalid(detail) from None


class _Invalid(Exception):
    def __init__(self, detail: list[dict[str, Any]]) -> None:
        self.detail = detail


@router.post("/queue/{owner}/{model_id}", summary="Submit (fal-compatible)")
async def submit(
    owner: str, model_id: str, request: Request, token: Token = Depends(caller)
) -> Response:
    """Queue a request; answers fal's submit object (request_id, the three URLs and
    queue_position). ``?fal_webhook=URL``, ``Idempotency-Key``,
    ``X-Fal-Queue-Priority: normal|low``, ``X-Request-Timeout`` and
    ``X-Fal-Request-Timeout`` are honoured."""
    model = model_or_404(model_id)
    ctx = context(request)
    data = await submitted(request, model)
    try:
        body = _validate(model, data)
    except _Invalid as exc:
        return JSONResponse({"detail": exc.detail}, status_code=422)
    priority = _priority(request.headers.get(PRIORITY_HEADER), body.priority)
    key = svc.idempotency_key(request.headers.get("idempotency-key"))
    webhook = ctx.webhooks.check(request.query_params.get("fal_webhook"))
    due = svc.deadline(request.headers, ctx.settings, fal=True)
    base = ctx.base_url(request)

    job, replay = await svc.submit_once(
        ctx, model, body, token, dialect="fal", base=base, binary_output=True,
        priority=priority, idempotency_key=key, webhook_url=webhook, due=due,
    )  # fmt: skip
    position = await run_in_threadpool(ctx.store.queue_position, job) if job.state.queued else 0
    answer = {**_urls(base, owner, model.id, job.id), "queue_position": position}
    headers = _headers(job.id)
    if replay:
        headers[svc.REPLAYED_HEADER] = "true"
    return JSONResponse(answer, headers=headers)


async def _job(request: Request, model_id: str, rid: str, token: Token) -> tuple[Job, str]:
    model_or_404(model_id)
    job_id = request_id(rid)
    ctx = context(request)
    job = await run_in_threadpool(svc.job_of, ctx, job_id, token)
    return job, ctx.base_url(request)


@router.get("/queue/{owner}/{model_id}/requests/{rid}/status", summary="Status (fal)")
async def status(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    job, base = await _job(request, model_id, rid, token)
    logs = _truthy(request.query_params.get("logs"))
    ctx = context(request)
    body = await run_in_threadpool(status_body, ctx, job, base, owner, logs)
    return JSONResponse(body, headers=_headers(job.id))


@router.get(
    "/queue/{owner}/{model_id}/requests/{rid}/status/stream",
    summary="Status as server-sent events until the request is finished (fal)",
)
async def status_stream(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    job, base = await _job(request, model_id, rid, token)
    logs = _truthy(request.query_params.get("logs"))
    ctx = context(request)

    async def events() -> AsyncIterator[str]:
        last = ""
        quiet_since = asyncio.get_running_loop().time()
        current = job
        while True:
            body = await run_in_threadpool(status_body, ctx, current, base, owner, logs)
            text = json.dumps(body)
            now = asyncio.get_running_loop().time()
            if text != last:
                last, quiet_since = text, now
                yield f"data: {text}\n\n"
            elif now - quiet_since > STREAM_KEEPALIVE_S:
                quiet_since = now
                yield ": keepalive\n\n"
            if body["status"] == "COMPLETED" or await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_S)
            current = await run_in_threadpool(svc.job_of, ctx, job.id, token)

    headers = {**_headers(job.id), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


@router.put("/queue/{owner}/{model_id}/requests/{rid}/cancel", summary="Cancel (fal)")
async def cancel(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    model_or_404(model_id)
    job_id = request_id(rid)
    ctx = context(request)
    done, _ = await run_in_threadpool(lambda: svc.cancel_job(ctx, job_id, token.user, running=True))
    if done is not None:
        return JSONResponse(
            {"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=_headers(job_id)
        )
    return JSONResponse(
        {"status": "ALREADY_COMPLETED", "detail": f"Request {job_id} is already finished."},
        status_code=400,
        headers=_headers(job_id),
    )


@router.get("/queue/{owner}/{model_id}/requests/{rid}", summary="Result (fal)")
async def result(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    job, base = await _job(request, model_id, rid, token)
    ctx = context(request)
    headers = _headers(job.id)
    if job.state is JobState.COMPLETED:
        video = await run_in_threadpool(svc.video_file, ctx, job, base)
        return JSONResponse({"video": video}, headers=headers)
    if job.state is JobState.FAILED:
        error_type = job.error_type or "internal_error"
        code = 422 if error_type in _INPUT_ERRORS else 500
        body = {"detail": job.error or "unknown error", "error_type": error_type}
        return JSONResponse(
            body, status_code=code, headers={**headers, "x-fal-error-type": error_type}
        )
    if job.state is JobState.CANCELLED:
        body = {"detail": f"Request {job.id} was cancelled.", "error_type": "request_cancelled"}
        return JSONResponse(body, status_code=400, headers=headers)
    status_name = "IN_QUEUE" if job.state.queued else "IN_PROGRESS"
    body = {"detail": f"Request {job.id} is {status_name}; the result is ready once COMPLETED."}
    return JSONResponse(body, status_code=400, headers=headers)
