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
  final one; ``X-Fal-Queue-Priority: low`` lowers the priority (``api/parsing/headers.py``).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext, caller, context, submit_store, upload_store
from vidq.api.fal import inputs as fal_inputs
from vidq.api.fal.catalog import ENDPOINTS
from vidq.api.parsing import headers
from vidq.api.parsing.body import JsonRoute
from vidq.api.parsing.params import request_id, truthy
from vidq.api.services import submission as svc
from vidq.jobs import Job, JobState
from vidq.store.base import SubmitStore, Token, UploadStore

router = APIRouter(tags=["fal-compatible"], route_class=JsonRoute)

REQUEST_ID_HEADER = "x-fal-request-id"
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
        "seed": svc.seed_of(job),  # vidq's: the seed chosen at submit (fal's result has it)
    }
    if job.state.queued:  # queue_position is fal's; hold and the ETAs are vidq's
        place = svc.queue_place(ctx, job)
        body["queue_position"] = place.position
        body["hold"] = place.hold
        body["eta_seconds"] = svc.eta_remaining(ctx, job, place.position, place.hold)
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


@router.post("/queue/{owner}/{model_id}", summary="Submit (fal-compatible)")
async def submit(
    owner: str,
    model_id: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
    uploads: UploadStore = Depends(upload_store),
) -> Response:
    """Queue a request; answers fal's submit object (request_id, the three URLs and
    queue_position). ``?fal_webhook=URL``, ``Idempotency-Key``,
    ``X-Fal-Queue-Priority: normal|low``, ``X-Request-Timeout`` and
    ``X-Fal-Request-Timeout`` are honoured. ``owner/model_id`` is ``vidq/<model id>`` or a
    two-part fal endpoint id (``fal-ai/hunyuan-video-foley``)."""
    return await _submit(owner, model_id, request, token, store, uploads)


async def _submit(
    owner: str,
    path: str,
    request: Request,
    token: Token,
    store: SubmitStore,
    uploads: UploadStore,
) -> Response:
    ctx = context(request)
    try:
        prepared = await fal_inputs.prepare(request, owner, path)
    except fal_inputs.Invalid as exc:
        return JSONResponse({"detail": exc.detail}, status_code=422)
    webhook = ctx.webhooks.check(request.query_params.get("fal_webhook"))
    job, replay = await fal_inputs.submit(
        request, prepared, token, store, uploads, webhook_url=webhook
    )
    base = ctx.base_url(request)
    where = prepared.target
    position = await run_in_threadpool(store.queue_position, job) if job.state.queued else 0
    answer = {**_urls(base, where.owner, where.app, job.id), "queue_position": position}
    answer_headers = _headers(job.id)
    if replay:
        answer_headers[headers.REPLAYED_HEADER] = "true"
    return JSONResponse(answer, headers=answer_headers)


def _alias_route(endpoint_id: str) -> Any:
    owner, path = endpoint_id.split("/", 1)

    async def submit_alias(
        request: Request,
        token: Token = Depends(caller),
        store: SubmitStore = Depends(submit_store),
        uploads: UploadStore = Depends(upload_store),
    ) -> Response:
        return await _submit(owner, path, request, token, store, uploads)

    return submit_alias


# fal's endpoint ids, each with fal's own input schema in /openapi.json.
for _endpoint in ENDPOINTS.values():
    router.add_api_route(
        f"/queue/{_endpoint.id}",
        _alias_route(_endpoint.id),
        methods=["POST"],
        name=f"fal_{_endpoint.id}",
        summary=f"Submit to {_endpoint.id} (fal endpoint id; served by {_endpoint.model.id})",
        description=(_endpoint.schema.__doc__ or "").strip(),
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _endpoint.schema.model_json_schema()}},
            }
        },
    )


async def _job(
    request: Request, owner: str, model_id: str, rid: str, token: Token
) -> tuple[Job, str]:
    fal_inputs.check_app(owner, model_id)
    job_id = request_id(rid)
    ctx = context(request)
    job = await run_in_threadpool(svc.job_of, ctx, job_id, token)
    return job, ctx.base_url(request)


@router.get("/queue/{owner}/{model_id}/requests/{rid}/status", summary="Status (fal)")
async def status(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    job, base = await _job(request, owner, model_id, rid, token)
    logs = truthy(request.query_params.get("logs"))
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
    job, base = await _job(request, owner, model_id, rid, token)
    logs = truthy(request.query_params.get("logs"))
    ctx = context(request)

    async def events() -> AsyncIterator[str]:
        # Each event carries only the log lines this stream has not sent yet: fal's JS
        # client appends every event's lines to those it has.
        sent: set[str] = set()
        last = ""
        quiet_since = asyncio.get_running_loop().time()
        current = job
        while True:
            body = await run_in_threadpool(status_body, ctx, current, base, owner, logs)
            fresh = [line for line in body["logs"] or () if _key(line) not in sent]
            rest = json.dumps({**body, "logs": None})
            now = asyncio.get_running_loop().time()
            if rest != last or fresh:
                last, quiet_since = rest, now
                sent.update(_key(line) for line in fresh)
                yield f"data: {json.dumps({**body, 'logs': fresh if logs else None})}\n\n"
            elif now - quiet_since > STREAM_KEEPALIVE_S:
                quiet_since = now
                yield ": keepalive\n\n"
            if body["status"] == "COMPLETED" or await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_S)
            current = await run_in_threadpool(svc.job_of, ctx, job.id, token)

    headers = {**_headers(job.id), "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _key(line: dict[str, Any]) -> str:
    return json.dumps(line, sort_keys=True)


@router.put("/queue/{owner}/{model_id}/requests/{rid}/cancel", summary="Cancel (fal)")
async def cancel(
    owner: str, model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    fal_inputs.check_app(owner, model_id)
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
    job, base = await _job(request, owner, model_id, rid, token)
    return await result_response(context(request), job, base)


async def result_response(ctx: AppContext, job: Job, base: str) -> Response:
    """A request's result as fal answers it (the result route and ``fal.run``)."""
    headers = _headers(job.id)
    if job.state is JobState.COMPLETED:
        body = await run_in_threadpool(fal_inputs.result_body, ctx, job, base)
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
