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
  final one; with ``?previews=true`` (vidq's) it also sends each new live preview of the
  running job as an ``event: preview`` (``{url, content_type, step, updated_at}``: fal's
  clients read every event as a status, so only a client that asks gets them);
  ``X-Fal-Queue-Priority: low`` lowers the priority (``api/parsing/headers.py``).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, submit_store, upload_store
from vidq.api.fal import answers, inputs
from vidq.api.fal.catalog import ENDPOINTS, refresh
from vidq.api.parsing.body import JsonRoute
from vidq.api.parsing.headers import REPLAYED_HEADER
from vidq.api.parsing.params import request_id, truthy
from vidq.api.services.control import cancel_job
from vidq.api.services.results import job_of, preview
from vidq.jobs import Job, JobState
from vidq.store.base import SubmitStore, Token, UploadStore

router = APIRouter(tags=["fal-compatible"], route_class=JsonRoute)

STREAM_POLL_S = 0.25
STREAM_KEEPALIVE_S = 10.0


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
        prepared = await inputs.prepare(request, owner, path)
    except inputs.Invalid as exc:
        return JSONResponse({"detail": exc.detail}, status_code=422)
    webhook = ctx.webhooks.check(request.query_params.get("fal_webhook"))
    job, replay = await inputs.submit(request, prepared, token, store, uploads, webhook_url=webhook)
    base = ctx.base_url(request)
    where = prepared.target
    position = await run_in_threadpool(store.queue_position, job) if job.state.queued else 0
    answer = {**answers.urls(base, where.owner, where.app, job.id), "queue_position": position}
    answer_headers = answers.request_headers(job.id)
    if replay:
        answer_headers[REPLAYED_HEADER] = "true"
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


def inline_defs(model: type[BaseModel]) -> dict[str, Any]:
    """``model``'s JSON schema with its ``$defs`` (the ``loras`` items) written in place:
    a ``#/$defs/...`` reference inside /openapi.json's paths resolves against the OpenAPI
    document, not this schema, and ReDoc fails to render the whole page on it. Made once
    per schema class (half of building an app's routes), a copy per app."""
    return copy.deepcopy(_inlined(model))


@functools.cache
def _inlined(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    inlined: dict[str, Any] = resolve(schema)
    return inlined


def alias_router() -> APIRouter:
    """fal's endpoint ids of the catalog, each with fal's own input schema in /openapi.json
    (built per app, after the models file is read; included before ``router``)."""
    refresh()
    aliases = APIRouter(route_class=router.route_class)
    for endpoint in ENDPOINTS.values():
        aliases.add_api_route(
            f"/queue/{endpoint.id}",
            _alias_route(endpoint.id),
            methods=["POST"],
            name=f"fal_{endpoint.id}",
            summary=f"Submit to {endpoint.id} (fal endpoint id; served by {endpoint.model.id})",
            description=(endpoint.schema.__doc__ or "").strip(),
            openapi_extra={
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": inline_defs(endpoint.schema)}},
                }
            },
        )
    return aliases


async def _job(
    request: Request, owner: str, model_id: str, rid: str, token: Token, store: SubmitStore
) -> tuple[Job, str]:
    inputs.check_app(owner, model_id)
    job_id = request_id(rid)
    ctx = context(request)
    job = await run_in_threadpool(job_of, store, job_id, token)
    return job, ctx.base_url(request)


@router.get("/queue/{owner}/{model_id}/requests/{rid}/status", summary="Status (fal)")
async def status(
    owner: str,
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    job, base = await _job(request, owner, model_id, rid, token, store)
    logs = truthy(request.query_params.get("logs"))
    ctx = context(request)
    body = await run_in_threadpool(answers.status_body, ctx, store, job, base, owner, logs)
    return JSONResponse(body, headers=answers.request_headers(job.id))


@router.get(
    "/queue/{owner}/{model_id}/requests/{rid}/status/stream",
    summary="Status as server-sent events until the request is finished (fal)",
)
async def status_stream(
    owner: str,
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    job, base = await _job(request, owner, model_id, rid, token, store)
    logs = truthy(request.query_params.get("logs"))
    previews = truthy(request.query_params.get("previews"))
    ctx = context(request)

    def shown(current: Job) -> dict[str, Any] | None:
        """The running job's live preview (a status read of its own: ``Job`` has none)."""
        if not previews or current.state is not JobState.RUNNING:
            return None
        status = store.job_status(current.id, token.user)
        return None if status is None else preview(ctx, status, base)

    async def events() -> AsyncIterator[str]:
        # Each event carries only the log lines this stream has not sent yet: fal's JS
        # client appends every event's lines to those it has.
        sent: set[str] = set()
        last = ""
        last_preview: tuple[int, str] | None = None
        quiet_since = asyncio.get_running_loop().time()
        current = job
        while True:
            body = await run_in_threadpool(
                answers.status_body, ctx, store, current, base, owner, logs
            )
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
            latest = await run_in_threadpool(shown, current)
            if latest is not None and (latest["step"], latest["updated_at"]) != last_preview:
                last_preview, quiet_since = (latest["step"], latest["updated_at"]), now
                yield f"event: preview\ndata: {json.dumps(latest)}\n\n"
            if body["status"] == "COMPLETED" or await request.is_disconnected():
                return
            await asyncio.sleep(STREAM_POLL_S)
            current = await run_in_threadpool(job_of, store, job.id, token)

    headers = {
        **answers.request_headers(job.id),
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _key(line: dict[str, Any]) -> str:
    return json.dumps(line, sort_keys=True)


@router.put("/queue/{owner}/{model_id}/requests/{rid}/cancel", summary="Cancel (fal)")
async def cancel(
    owner: str,
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    inputs.check_app(owner, model_id)
    job_id = request_id(rid)
    done, _ = await run_in_threadpool(lambda: cancel_job(store, job_id, token.user, running=True))
    headers = answers.request_headers(job_id)
    if done is not None:
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202, headers=headers)
    return JSONResponse(
        {"status": "ALREADY_COMPLETED", "detail": f"Request {job_id} is already finished."},
        status_code=400,
        headers=headers,
    )


@router.get("/queue/{owner}/{model_id}/requests/{rid}", summary="Result (fal)")
async def result(
    owner: str,
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    job, base = await _job(request, owner, model_id, rid, token, store)
    return await answers.result_response(context(request), job, base)
