"""The native dialect's routes: exactly those of docs/spec/video-generation-api.md, answering
in the shapes of ``answers.py``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext, caller, context, submit_store, upload_store
from vidq.api.native import answers
from vidq.api.parsing import headers
from vidq.api.parsing.body import JsonRoute, submitted
from vidq.api.parsing.params import flag, model_or_404, request_id
from vidq.api.services import results, submission
from vidq.api.services.control import cancel_job
from vidq.catalog import MODELS, Model, _Inputs, input_schema
from vidq.errors import NotFound
from vidq.store.base import Cancel, SubmitStore, Token, UploadStore

router = APIRouter(route_class=JsonRoute)


def _submit_route(model: Model) -> Any:
    schema = input_schema(model)

    async def create_request(
        request: Request,
        body: _Inputs,
        token: Token = Depends(caller),
        store: SubmitStore = Depends(submit_store),
        uploads: UploadStore = Depends(upload_store),
    ) -> Response:
        await submitted(request, model)  # the body's limits (api/parsing/body.py)
        ctx = context(request)
        binary = headers.binary_output(request.headers)
        key = headers.idempotency_key(request.headers)
        webhook = ctx.webhooks.check(request.query_params.get("fal_webhook"))
        due = headers.deadline(request.headers, ctx.settings, fal=False)
        base = ctx.base_url(request)

        job, replay = await submission.submit(
            ctx, store, uploads, model, body, token, dialect="native", base=base,
            binary_output=binary, idempotency_key=key, webhook_url=webhook, due=due,
        )  # fmt: skip
        replayed = {headers.REPLAYED_HEADER: "true"} if replay else None
        return JSONResponse(answers.urls(base, model.id, job.id), headers=replayed)

    # With postponed annotations FastAPI resolves names from module globals; give it the
    # family's schema class itself so validation and OpenAPI use it.
    create_request.__annotations__ = {
        "request": Request,
        "body": schema,
        "token": Token,
        "store": SubmitStore,
        "uploads": UploadStore,
        "return": Response,
    }
    create_request.__doc__ = f"Create a {model.family.value.upper()} request for `{model.id}`."
    return create_request


def model_router() -> APIRouter:
    """One submit route per model of the catalog (built per app, after the models file is
    read; included before ``router``, whose ``/queue/{model_id}`` answers the unknown)."""
    models = APIRouter(route_class=JsonRoute)
    for model in MODELS.values():
        models.add_api_route(
            f"/queue/{model.id}",
            _submit_route(model),
            methods=["POST"],
            name=f"create_{model.id}",
            summary=f"Create a request ({model.id})",
            tags=[model.family.value],
            responses={
                200: {"description": "Queued: request_id and the URLs to poll, fetch and cancel."},
                401: {"description": "Missing or unknown token."},
                413: {"description": "Body too large."},
                422: {"description": "Invalid input or X-Request-Timeout header."},
                429: {"description": "Over a limit of the token; see Retry-After."},
            },
        )
    return models


@router.post("/queue/{model_id}", include_in_schema=False)
async def create_unknown_model(model_id: str, token: Token = Depends(caller)) -> Response:
    model_or_404(model_id)  # every known model has its own route above
    raise AssertionError("unreachable")


def status_of(
    ctx: AppContext, store: SubmitStore, model_id: str, rid: str, token: Token, base: str
) -> dict[str, Any]:
    """The whole status route minus HTTP: checks, lookup, body. Shared by the FastAPI
    route (documented) and the ASGI fast path that serves polls (``fastpath.py``)."""
    model_or_404(model_id)
    job_id = request_id(rid)
    job = store.job_status(job_id, token.user)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return answers.status_body(ctx, job, base)


@router.get("/queue/{model_id}/requests/{rid}/status", summary="Poll a request's status")
async def get_status(
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)
    body = await run_in_threadpool(status_of, ctx, store, model_id, rid, token, base)
    return JSONResponse(body)


@router.put(
    "/queue/{model_id}/requests/{rid}/cancel",
    status_code=204,
    summary="Cancel a queued request (or, with ?running=true, a running one)",
    responses={
        202: {"description": "Running (with ?running=true): it is stopped and CANCELLED."},
        204: {"description": "Cancelled."},
        409: {"description": "Already started (without ?running=true) or finished."},
    },
)
async def cancel(
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    model_or_404(model_id)
    job_id = request_id(rid)
    running = flag(request.query_params.get("running"), "running")
    done, job = await run_in_threadpool(
        lambda: cancel_job(store, job_id, token.user, running=running)
    )
    if done is Cancel.CANCELLED:
        return Response(status_code=204)
    if done is Cancel.REQUESTED:
        return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)
    assert job is not None
    hint = "" if running or job.state.terminal else " (add ?running=true to stop it)"
    return JSONResponse(
        {"detail": f"Cannot cancel request {job_id}: it is {job.wire_status.value}{hint}."},
        status_code=409,
    )


@router.get("/queue/{model_id}/requests/{rid}", summary="Fetch a completed request's video")
async def get_result(
    model_id: str,
    rid: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    model_or_404(model_id)
    job_id = request_id(rid)
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        job = results.job_of(store, job_id, token)
        results.require_completed(job)
        if job.binary_output:
            url = results.video_url(ctx, job, base)
            return answers.result({"data_uri": url, "data_url": url}, job)
        return answers.result({"data_uri": results.video_b64(ctx, job)}, job)

    return JSONResponse(await run_in_threadpool(work))
