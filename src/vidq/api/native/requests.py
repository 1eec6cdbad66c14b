"""Dialect-free views of the caller's own requests: ``GET /requests`` (paged, newest first),
``GET /requests/{id}`` (one request with its model and structured progress; what the SDK
and the CLI poll), and ``GET /webhooks/secret`` (the key that signs the caller's webhooks).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext, caller, context
from vidq.api.native.routes import urls
from vidq.api.parsing.params import request_id
from vidq.api.services import submission as svc
from vidq.jobs import Job, JobState
from vidq.media.inputs import BLOB_PREFIX
from vidq.store.base import Token

router = APIRouter(tags=["requests"])

PAGE_MAX = 100


def summary(ctx: AppContext, job: Job, base: str, *, detail: bool) -> dict[str, Any]:
    """One request as ``GET /requests`` lists it; ``detail`` adds its place in the queue
    (position, and ``hold``: why it is passed over, if it is), ETA (null without an
    estimate) and run time."""
    body: dict[str, Any] = {
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
        "seed": svc.seed_of(job),
        **submitted_inputs(job),
    }
    if detail:
        place = svc.queue_place(ctx, job) if job.state.queued else svc.Place(0)
        body["queue_position"] = place.position
        body["hold"] = place.hold
        body["eta_seconds"] = svc.eta_remaining(ctx, job, place.position, place.hold)
        body["run_seconds"] = svc.run_seconds(job)
    return body


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


@router.get("/requests", summary="Your requests, newest first (paged)")
async def list_requests(
    request: Request,
    limit: int = Query(20, ge=1, le=PAGE_MAX, description="Page size."),
    before: int | None = Query(
        None,
        ge=1,
        le=2**62,
        description="Only requests older than this id (the `next_before` of a page).",
    ),
    token: Token = Depends(caller),
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        jobs = ctx.store.list_jobs(token.user, limit + 1, before)
        page = jobs[:limit]
        more = len(jobs) > limit
        return {
            "requests": [summary(ctx, j, base, detail=False) for j in page],
            "next_before": page[-1].id if more and page else None,
        }

    return JSONResponse(await run_in_threadpool(work))


@router.get("/requests/{rid}", summary="One of your requests: model, status, progress, ETA")
async def get_request(rid: str, request: Request, token: Token = Depends(caller)) -> Response:
    job_id = request_id(rid)
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        return summary(ctx, svc.job_of(ctx, job_id, token), base, detail=True)

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
