"""Submit, status, cancel and result in terms of the store: the logic both wire dialects
(native and fal-compatible) share. Routers only translate to and from HTTP."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import uuid
from typing import Any

from vidq.api.app import AppContext
from vidq.api.eta import work_units
from vidq.catalog import Model, _Inputs, get_model
from vidq.config import Settings
from vidq.errors import Conflict, InvalidInput, NotFound, VidqError
from vidq.jobs import Job, JobState, NewJob
from vidq.media.fetch import FetchPolicy
from vidq.media.inputs import BLOB_PREFIX, Limits, MediaInput, load_media, plan_of
from vidq.media.sizing import Plan
from vidq.store.base import JobStatus, Token

log = logging.getLogger(__name__)


def submit(
    ctx: AppContext,
    model: Model,
    body: _Inputs,
    token: Token,
    *,
    binary_output: bool,
    priority: int | None = None,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
) -> Job:
    """Validate what the schema cannot, store the media inputs as blobs, then enqueue.
    Nothing is queued (and no blob is left) if any input is bad. Runs in a worker thread."""
    prio = body.priority if priority is None else priority
    if prio > token.max_priority:
        raise InvalidInput(
            "priority", f"priority {prio} is above this token's maximum of {token.max_priority}"
        )
    inputs = body.model_dump(mode="json", exclude_none=True)
    reserved = sorted(k for k in inputs if k.startswith("_"))
    if reserved:
        raise InvalidInput(reserved[0], "fields starting with '_' are reserved")
    inputs["priority"] = prio
    media = load_media(model.family, inputs, limits(ctx.settings), fetch_policy(ctx.settings))
    plan = plan_of(model.family, inputs, media)
    blobs = _store_media(ctx, token.user, media)
    for field, key in blobs.items():
        inputs[field] = BLOB_PREFIX + key  # megabytes of base64 stay out of the job row
    if blobs:
        inputs["_blobs"] = blobs
    inputs["_plan"] = plan.as_json()
    new = NewJob(
        user=token.user,
        model_id=model.id,
        pool=model.pool,
        tier=int(model.tier),
        priority=prio,
        inputs=inputs,
        binary_output=binary_output,
        max_attempts=ctx.settings.max_attempts,
        work_units=estimate_units(model, inputs, plan),
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
    )
    try:
        return ctx.store.enqueue(new)
    except BaseException:
        for key in blobs.values():
            _delete_quietly(ctx, key)
        raise


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.max_input_bytes,
        max_image_pixels=settings.max_image_pixels,
        max_audio_seconds=settings.max_audio_seconds,
        max_video_seconds=settings.max_video_seconds,
    )


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.max_input_bytes,
        timeout_s=settings.fetch_timeout,
        allow_http=settings.fetch_allow_http,
        allow_networks=FetchPolicy.parse_networks(settings.fetch_allow_networks),
    )


def _user_folder(user: str) -> str:
    """A storage-safe folder name for a user (names may hold any character)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)[:64].strip(".")
    if safe != user:
        safe = f"{safe}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"
    return safe


def _store_media(ctx: AppContext, user: str, media: dict[str, MediaInput]) -> dict[str, str]:
    """``inputs/<user>/<uuid>/<field>`` for each media input; all or nothing."""
    folder = f"inputs/{_user_folder(user)}/{uuid.uuid4().hex}"
    stored: dict[str, str] = {}
    try:
        for field, item in media.items():
            key = f"{folder}/{field}"
            ctx.storage.put_bytes(key, item.data, item.format.content_type)
            stored[field] = key
    except BaseException:
        for key in stored.values():
            _delete_quietly(ctx, key)
        raise
    return stored


def _delete_quietly(ctx: AppContext, key: str) -> None:
    try:
        ctx.storage.delete(key)
    except VidqError:
        log.warning("could not delete an input blob", extra={"key": key})


def estimate_units(model: Model, inputs: dict[str, Any], plan: Plan) -> float:
    """Work units of a request: the planned output's pixels x frames, scaled by steps."""
    steps = model.steps_for(bool(inputs.get("higher_quality_with_more_steps")))
    return work_units(plan.width, plan.height, plan.frames, steps, model.steps)


def job_of(ctx: AppContext, job_id: int, token: Token) -> Job:
    """The caller's job; 404 for unknown ids and other users' jobs alike."""
    job = ctx.store.get(job_id, token.user)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return job


def cancel(ctx: AppContext, job_id: int, token: Token) -> Job | None:
    """Cancel a queued job; returns None on success, else the job (not cancellable)."""
    if ctx.store.cancel(job_id, token.user):
        return None
    return job_of(ctx, job_id, token)


def model_of(job: Job | JobStatus) -> Model:
    model = get_model(job.model_id)
    assert model is not None, job.model_id
    return model


def expected_tasks(job: JobStatus) -> int:
    """Tasks a job will report: its denoising steps plus the encode."""
    return model_of(job).steps_for(job.higher_quality) + 1


def eta_total(ctx: AppContext, job: JobStatus) -> float:
    return ctx.eta.total_seconds(model_of(job), job.work_units)


def result_bytes_b64(ctx: AppContext, job: Job) -> str:
    if job.result_key is None:
        raise NotFound(f"Request {job.id} has no stored output.")
    return base64.b64encode(ctx.storage.get_bytes(job.result_key)).decode("ascii")


def require_completed(job: Job) -> None:
    if job.state is not JobState.COMPLETED:
        status = job.wire_status.value
        if job.state is JobState.FAILED:
            raise Conflict(f"Request {job.id} is FAILED: {job.error or 'unknown error'}")
        raise Conflict(f"Request {job.id} is {status}; the result is available once COMPLETED.")
