"""The native dialect: exactly the routes and shapes of docs/spec/video-generation-api.md."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext, caller, context, submit_store, upload_store
from vidq.api.parsing import headers
from vidq.api.parsing.body import JsonRoute, submitted
from vidq.api.parsing.params import flag, model_or_404, request_id
from vidq.api.services import submission as svc
from vidq.catalog import MODELS, Model, _Inputs, input_schema
from vidq.errors import NotFound
from vidq.jobs import WIRE_STATUS, Hold, JobState
from vidq.store.base import Cancel, JobStatus, SubmitStore, Token, UploadStore

router = APIRouter(route_class=JsonRoute)

def urls(base: str, model_id: str, job_id: int) -> dict[str, str]:
    response_url = f"{base}/queue/{model_id}/requests/{job_id}"
    return {
        "request_id": str(job_id),
        "response_url": response_url,
        "status_url": f"{response_url}/status",
        "cancel_url": f"{response_url}/cancel",
    }


def _submit_route(model: Model) -> Any:
    schema = input_schema(model)

    async def create_request(
        request: Request,
        body: _Inputs,
        token: Token = Depends(caller),
        store: SubmitStore = Depends(submit_store),
        uploads: UploadStore = Depends(upload_store),
    ) -> Response:
        await submitted(request, model)  # the body's limits (api/body.py)
        ctx = context(request)
        binary = headers.binary_output(request.headers)
        key = headers.idempotency_key(request.headers)
        webhook = ctx.webhooks.check(request.query_params.get("fal_webhook"))
        due = headers.deadline(request.headers, ctx.settings, fal=False)
        base = ctx.base_url(request)

        job, replay = await svc.submit(
            ctx, store, uploads, model, body, token, dialect="native", base=base,
            binary_output=binary, idempotency_key=key, webhook_url=webhook, due=due,
        )  # fmt: skip
        replayed = {headers.REPLAYED_HEADER: "true"} if replay else None
        return JSONResponse(urls(base, model.id, job.id), headers=replayed)

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


for _model in MODELS.values():
    router.add_api_route(
        f"/queue/{_model.id}",
        _submit_route(_model),
        methods=["POST"],
        name=f"create_{_model.id}",
        summary=f"Create a request ({_model.id})",
        tags=[_model.family.value],
        responses={
            200: {"description": "Queued: request_id and the URLs to poll, fetch and cancel."},
            401: {"description": "Missing or unknown token."},
            413: {"description": "Body too large."},
            422: {"description": "Invalid input or X-Request-Timeout header."},
            429: {"description": "Over a limit of the token; see Retry-After."},
        },
    )


@router.post("/queue/{model_id}", include_in_schema=False)
async def create_unknown_model(model_id: str, token: Token = Depends(caller)) -> Response:
    model_or_404(model_id)  # every known model has its own route above
    raise AssertionError("unreachable")


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
        _put(body, "etaSeconds", svc.eta_remaining(ctx, job, job.queue_position, hold))
    elif state is JobState.RUNNING:
        # Before the engine's first report, n is the step count the worker will run.
        total = job.progress_total or svc.expected_tasks(job)
        body["statusMessages"] = {
            "message": "PROCESSING",
            "detail_message": f"Progress: {job.progress_done}/{total} Tasks done",
        }
        _put(body["statusMessages"], "estimated_total_time_seconds", svc.eta_total(ctx, job))
        _put(body, "etaSeconds", svc.eta_remaining(ctx, job))
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
            body["statusMessages"]["expired_at"] = svc.iso(job.expired_at)
    elif state is JobState.FAILED:
        body["statusMessages"] = {"message": "Job failed", "error": job.error or "unknown error"}
        body["error"] = job.error or "unknown error"
    else:
        body["statusMessages"] = {"message": "Job cancelled"}
    if job.seed is not None:
        body["seed"] = job.seed  # chosen at submit: known before the job starts
    body["response_url"] = f"{base}/queue/{job.model_id}/requests/{job.id}"
    return body


def _put(body: dict[str, Any], key: str, value: float | None) -> None:
    if value is not None:
        body[key] = value


def status_of(ctx: AppContext, model_id: str, rid: str, token: Token, base: str) -> dict[str, Any]:
    """The whole status route minus HTTP: checks, lookup, body. Shared by the FastAPI
    route (documented) and the ASGI fast path that serves polls (api/fastpath.py)."""
    model_or_404(model_id)
    job_id = request_id(rid)
    job = ctx.store.job_status(job_id, token.user)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return status_body(ctx, job, base)


@router.get("/queue/{model_id}/requests/{rid}/status", summary="Poll a request's status")
async def get_status(
    model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    ctx = context(request)
    body = await run_in_threadpool(status_of, ctx, model_id, rid, token, ctx.base_url(request))
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
    model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    model_or_404(model_id)
    job_id = request_id(rid)
    ctx = context(request)
    running = flag(request.query_params.get("running"), "running")
    done, job = await run_in_threadpool(
        lambda: svc.cancel_job(ctx, job_id, token.user, running=running)
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
    model_id: str, rid: str, request: Request, token: Token = Depends(caller)
) -> Response:
    model_or_404(model_id)
    job_id = request_id(rid)
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, Any]:
        job = svc.job_of(ctx, job_id, token)
        svc.require_completed(job)
        if job.binary_output:
            url = ctx.storage.signed_url(
                job.result_key or "", ctx.settings.storage.signed_url_ttl, base
            )
            return svc.native_result({"data_uri": url, "data_url": url}, job)
        return svc.native_result({"data_uri": svc.result_bytes_b64(ctx, job)}, job)

    return JSONResponse(await run_in_threadpool(work))
