"""``fal.run`` / ``fal_client.run``: the synchronous fal route. ``POST /run/{owner}/{model}``
(fal's clients build ``https://{FAL_RUN_HOST}/{endpoint id}``; point the run host at
``{host}/run``) submits like the queue route, waits for the request to finish and answers
its result as the queue's result route would. Waiting is bounded by
``VIDQ_RUN_TIMEOUT``; past it the answer is 504 naming the request id, which goes on
running and can be polled on the queue routes.
"""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, submit_store, upload_store
from vidq.api.fal import answers, inputs
from vidq.api.parsing.body import JsonRoute
from vidq.api.services.results import job_of
from vidq.jobs import Job
from vidq.store.base import SubmitStore, Token, UploadStore

router = APIRouter(tags=["fal-compatible"], route_class=JsonRoute)

POLL_S = 0.1  # the first polls; then up to POLL_MAX_S apart
POLL_MAX_S = 1.0


@router.post("/run/{owner}/{path:path}", summary="Run and wait for the result (fal.run)")
async def run(
    owner: str,
    path: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
    uploads: UploadStore = Depends(upload_store),
) -> Response:
    """Submit, wait for the request to finish (at most ``VIDQ_RUN_TIMEOUT`` seconds) and
    answer its result: fal's result body, or its error. 504 past the timeout."""
    ctx = context(request)
    try:
        prepared = await inputs.prepare(request, owner, path)
    except inputs.Invalid as exc:
        return JSONResponse({"detail": exc.detail}, status_code=422)
    job, _ = await inputs.submit(request, prepared, token, store, uploads, webhook_url=None)
    base = ctx.base_url(request)
    timeout = ctx.settings.limits.run_timeout
    with anyio.move_on_after(timeout):
        job = await _finished(store, job, token)
    if not job.state.terminal:
        where = prepared.target
        status_url = f"{base}/queue/{where.owner}/{where.app}/requests/{job.id}/status"
        detail = (
            f"Request {job.id} did not finish within {timeout:g} s; it goes on: poll {status_url}"
        )
        body = {"detail": detail, "request_id": str(job.id), "status_url": status_url}
        return JSONResponse(body, status_code=504, headers=answers.request_headers(job.id))
    return await answers.result_response(ctx, job, base)


async def _finished(store: SubmitStore, job: Job, token: Token) -> Job:
    wait = POLL_S
    while not job.state.terminal:
        await anyio.sleep(wait)
        wait = min(POLL_MAX_S, wait * 1.5)
        job = await run_in_threadpool(job_of, store, job.id, token)
    return job
