"""vidq's own views of the caller's requests, on paths of neither dialect and in the native
vocabulary: ``GET /requests`` (paged, newest first; by model, status, prompt text),
``GET /requests/{id}`` (one request with its model and structured progress; what the SDK
and the CLI poll), ``DELETE /requests/{id}`` (a finished one's blobs), ``GET /usage``
(what the caller's requests used per day and model) and ``GET /webhooks/secret`` (the key
that signs the caller's webhooks).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, submit_store
from vidq.api.native.answers import USAGE_DAYS_MAX, details, summary, usage
from vidq.api.parsing.params import request_id
from vidq.api.services import control
from vidq.api.services.results import job_of
from vidq.jobs import WIRE_STATUS, WireStatus
from vidq.store.base import JobFilter, SubmitStore, Token

router = APIRouter(tags=["requests"])

PAGE_MAX = 100
Q_MAX = 200  # the longest prompt search (``q``)


@router.get("/requests", summary="Your requests, newest first (paged; filters, prompt search)")
async def list_requests(
    request: Request,
    limit: int = Query(20, ge=1, le=PAGE_MAX, description="Page size."),
    before: int | None = Query(
        None,
        ge=1,
        le=2**62,
        description="Only requests older than this id (the `next_before` of a page).",
    ),
    model_id: str | None = Query(
        None, min_length=1, max_length=200, description="Only this model's requests."
    ),
    status: WireStatus | None = Query(None, description="Only requests with this status."),
    q: str | None = Query(
        None,
        min_length=1,
        max_length=Q_MAX,
        description="Only requests whose prompt contains this text (any case; `%` and `_` "
        "match themselves).",
    ),
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)
    where = JobFilter(
        model_id=model_id,
        states=tuple(s for s, wire in WIRE_STATUS.items() if wire is status),
        prompt=q,
    )

    def work() -> dict[str, Any]:
        jobs = store.list_jobs(token.user, limit + 1, before, where)
        page = jobs[:limit]
        more = len(jobs) > limit
        return {
            "requests": [summary(j, base, ctx) for j in page],
            "next_before": page[-1].id if more and page else None,
        }

    return JSONResponse(await run_in_threadpool(work))


@router.get("/requests/{rid}", summary="One of your requests: model, status, progress, ETA")
async def get_request(
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    job_id = request_id(rid)
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        return details(ctx, store, job_of(store, job_id, token), base)

    return JSONResponse(await run_in_threadpool(work))


@router.delete("/requests/{rid}", summary="Delete one of your finished requests")
async def delete_request(
    rid: str,
    request: Request,
    token: Token = Depends(caller),
) -> Response:
    """Its video, poster and inputs are deleted from storage; the request stays, with its
    status, times and cost, as ``deleted: true`` (out of ``GET /requests``; its result
    answers 410). A queued or running request is refused (409): cancel it first."""
    job_id = request_id(rid)
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        job = control.delete_request(ctx.store, ctx.storage, job_id, token.user)
        return summary(job, base, ctx)

    return JSONResponse(await run_in_threadpool(work))


@router.get("/usage", summary="What your requests used per UTC day and model")
async def get_usage(
    request: Request,
    days: int = Query(
        7, ge=1, le=USAGE_DAYS_MAX, description="The last N UTC days, today included."
    ),
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    """Your requests, requested video seconds and GPU-seconds per UTC day (of submit, as
    the daily limits count them) and model; running requests count their time so far."""
    ctx = context(request)

    def work() -> dict[str, Any]:
        rows = store.daily_usage(token.user, days)
        return usage(rows, days, ctx.store.now(), users=False)  # the database's day

    return JSONResponse(await run_in_threadpool(work))


@router.get("/webhooks/secret", summary="The secret that signs your webhooks (HMAC-SHA256)")
async def webhook_secret(request: Request, token: Token = Depends(caller)) -> Response:
    ctx = context(request)
    secret = await run_in_threadpool(ctx.webhooks.secret_for, token.user)
    return JSONResponse(
        {
            "secret": secret,
            "signature_header": "X-Vidq-Webhook-Signature",
            "signed": "f'{request_id}\\n{timestamp}\\n{sha256_hex(body)}'",
        }
    )
