"""Submit, status, cancel and result in terms of the store: the logic both wire dialects
(native and fal-compatible) share. Routers only translate to and from HTTP."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hashlib
import logging
import re
import uuid
from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from vidq.api.context import AppContext
from vidq.api.eta import work_units
from vidq.api.parsing.headers import Deadline
from vidq.api.services import uploads
from vidq.catalog import Model, _Inputs, get_model, new_seed
from vidq.config import Settings
from vidq.errors import Conflict, Gone, InvalidInput, NotFound, VidqError
from vidq.jobs import Hold, Job, JobState, NewJob
from vidq.media.fetch import Fetcher, FetchPolicy
from vidq.media.inputs import (
    BLOB_PREFIX,
    MEDIA_FIELDS,
    Limits,
    MediaInput,
    load_media,
    media_urls,
    plan_of,
)
from vidq.media.sizing import Plan
from vidq.store.base import Cancel, JobStatus, Token

log = logging.getLogger(__name__)


def submit(
    ctx: AppContext,
    model: Model,
    body: _Inputs,
    token: Token,
    *,
    binary_output: bool,
    fetched: Mapping[str, bytes],
    priority: int | None = None,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    dialect: str = "native",
    base: str = "",
    due: Deadline = Deadline(),
) -> Job:
    """Validate what the schema cannot, store the media inputs as blobs, then enqueue.
    Nothing is queued (and no blob is left) if any input is bad. Runs in a worker thread;
    ``fetched`` holds the bytes of the URL inputs (``Fetcher.fetching``). The job's INSERT
    registers its webhook too (worded for ``dialect``, with URLs under ``base``), so a
    submit that fails leaves neither."""
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
    # Drawn once, here: stored with the inputs, every attempt (a retry, an operator's
    # retry) runs with it, and the answers about the request report it.
    inputs.setdefault("seed", new_seed())
    media = load_media(model.family, inputs, limits(ctx.settings), fetched, ctx.images)
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
        max_attempts=ctx.settings.store.max_attempts,
        work_units=estimate_units(model, inputs, plan),
        idempotency_key=idempotency_key,
        webhook_url=webhook_url,
        webhook_dialect=dialect if webhook_url else None,
        webhook_base=base if webhook_url else None,
        max_running=token.quota.max_running,
        video_seconds=plan.seconds,
        deadline_s=due.finish_s,
        start_s=due.start_s,
        start_error=due.start_error,
    )
    try:
        job = ctx.store.enqueue(new, token.quota)
    except BaseException:
        for key in blobs.values():
            _delete_quietly(ctx, key)
        raise
    if job.inputs.get("_blobs") != inputs.get("_blobs"):
        # A concurrent submit with this Idempotency-Key won the race: ours stored nothing.
        for key in blobs.values():
            _delete_quietly(ctx, key)
    _same_model(job, model)
    log.info(
        "request queued",
        extra={"request_id": job.id, "user": token.user, "model": model.id, "pool": model.pool},
    )
    return job


async def submit_once(
    ctx: AppContext,
    model: Model,
    body: _Inputs,
    token: Token,
    *,
    dialect: str,
    base: str,
    binary_output: bool,
    priority: int | None = None,
    idempotency_key: str | None = None,
    webhook_url: str | None = None,
    due: Deadline = Deadline(),
) -> tuple[Job, bool]:
    """What both dialects' submit routes do: replay an earlier submit with the same
    Idempotency-Key, else fetch the URL inputs on the event loop (``ctx.fetcher``: no
    request thread waits on a remote server), then submit in a thread (media families
    under ``ctx.decode_limiter``). Returns (job, replayed)."""
    if idempotency_key is not None:
        job = await anyio.to_thread.run_sync(replayed, ctx, model, token, idempotency_key)
        if job is not None:
            return job, True
    fields = MEDIA_FIELDS[model.family]
    urls = media_urls(model.family, {f: getattr(body, f, None) for f in fields})
    own, urls = uploads.split(urls, base)  # this server's uploads: read from storage

    def work(fetched: Mapping[str, bytes]) -> Job:
        if own:
            fetched = {**fetched, **uploads.read(ctx, own, token.user)}
        return submit(
            ctx, model, body, token, binary_output=binary_output, fetched=fetched,
            priority=priority, idempotency_key=idempotency_key, webhook_url=webhook_url,
            dialect=dialect, base=base, due=due,
        )  # fmt: skip

    limiter = ctx.decode_limiter if fields else None  # None: the request thread pool
    async with ctx.fetcher.fetching(urls, token.user) as fetched:
        return await anyio.to_thread.run_sync(work, fetched, limiter=limiter), False


def replayed(ctx: AppContext, model: Model, token: Token, key: str | None) -> Job | None:
    """The request an earlier submit with this Idempotency-Key created, if any (checked
    before any work, so a retried submit stores nothing twice)."""
    if key is None:
        return None
    job = ctx.store.find_by_idempotency_key(token.user, key)
    if job is not None:
        _same_model(job, model)
    return job


def _same_model(job: Job, model: Model) -> None:
    if job.model_id != model.id:
        raise Conflict(
            f"Idempotency-Key was already used for request {job.id} to model "
            f"'{job.model_id}'; use a new key for a different request."
        )


def limits(settings: Settings) -> Limits:
    return Limits(
        max_bytes=settings.limits.max_input_bytes,
        max_image_pixels=settings.limits.max_image_pixels,
        max_audio_seconds=settings.limits.max_audio_seconds,
        max_video_seconds=settings.limits.max_video_seconds,
    )


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=settings.limits.max_input_bytes,
        timeout_s=settings.limits.fetch_timeout,
        allow_http=settings.limits.fetch_allow_http,
        allow_networks=settings.limits.fetch_allow_networks,
    )


def input_fetcher(settings: Settings) -> Fetcher:
    """The API process's fetcher of input URLs (``media/fetch.py``)."""
    return Fetcher(
        fetch_policy(settings),
        total=settings.limits.fetch_concurrency,
        per_user=settings.limits.fetch_per_user,
    )


def user_folder(user: str) -> str:
    """A storage-safe folder name for a user (names may hold any character)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)[:64].strip(".")
    if safe != user:
        safe = f"{safe}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"
    return safe


def _store_media(ctx: AppContext, user: str, media: dict[str, MediaInput]) -> dict[str, str]:
    """``inputs/<user>/<uuid>/<field>`` for each media input; all or nothing."""
    folder = f"inputs/{user_folder(user)}/{uuid.uuid4().hex}"
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


def cancel_job(
    ctx: AppContext, job_id: int, user: str | None, *, running: bool
) -> tuple[Cancel | None, Job | None]:
    """Cancel a job, its running attempt included if ``running``: what every cancel route
    calls (native, fal, admin with ``user`` None: any user's job). A queued job is
    CANCELLED at once; a running one gets a cancel request that its worker reads in its
    next heartbeat (it stops the engine, keeps no output and records CANCELLED, unless it
    completed first). Returns what was done, or (None, the job) when nothing could be
    (finished, or running without ``running``); NotFound for unknown ids and, with
    ``user``, other users' jobs."""
    owner = user
    if owner is None:
        found = ctx.store.get(job_id)
        if found is None:
            raise NotFound(f"Request {job_id} not found.")
        owner = found.user
    done = ctx.store.cancel_job(job_id, owner, running=running)
    if done is not None:
        return done, None
    job = ctx.store.get(job_id, owner)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return None, job


def admin_cancel(ctx: AppContext, job_id: int) -> Job:
    """An operator's cancel of any user's unfinished request, running ones included
    (``cancel_job``). Returns the job as it is now; 409 once it finished."""
    done, job = cancel_job(ctx, job_id, None, running=True)
    if done is None:
        assert job is not None
        raise Conflict(f"Cannot cancel request {job_id}: it is {job.wire_status.value}.")
    job = ctx.store.get(job_id)
    assert job is not None
    log.info("request cancelled by an operator (%s)", done.value, extra={"request_id": job_id})
    return job


def admin_retry(ctx: AppContext, job_id: int) -> Job:
    """FAILED -> queued again with fresh attempts (an operator's retry)."""
    if not ctx.store.admin_retry(job_id):
        job = ctx.store.get(job_id)
        if job is None:
            raise NotFound(f"Request {job_id} not found.")
        if job.state is not JobState.FAILED:
            raise Conflict(
                f"Cannot retry request {job_id}: it is {job.wire_status.value}; "
                "only FAILED requests are retried."
            )
        raise Gone(
            f"Cannot retry request {job_id}: its inputs expired at {iso(job.inputs_expired_at)}"
            " and were deleted (VIDQ_INPUT_TTL)."
        )
    job = ctx.store.get(job_id)
    assert job is not None
    log.warning("request retried by an operator", extra={"request_id": job_id, "user": job.user})
    return job


def iso(ts: float | None) -> str:
    """A database time as ISO 8601 UTC."""
    when = datetime.datetime.fromtimestamp(ts or 0.0, datetime.UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def require_not_expired(job: Job) -> None:
    """410 once the collector expired the job's output (its blob is, or is being, deleted)."""
    if job.expired_at is not None:
        raise Gone(
            f"Request {job.id}'s video expired at {iso(job.expired_at)} and was deleted "
            "(retention: VIDQ_OUTPUT_TTL); its status is still available."
        )


def model_of(job: Job | JobStatus) -> Model:
    model = get_model(job.model_id)
    assert model is not None, job.model_id
    return model


def expected_tasks(job: JobStatus) -> int:
    """Tasks a job will report: its denoising steps plus the encode."""
    return model_of(job).steps_for(job.higher_quality) + 1


def eta_total(ctx: AppContext, job: Job | JobStatus) -> float | None:
    """Expected run time of the job (``api/eta.py``); None when there is no estimate."""
    return ctx.eta.total_seconds(model_of(job), job.work_units)


def eta_remaining(
    ctx: AppContext, job: Job | JobStatus, queue_position: int = 0, hold: Hold | None = None
) -> float | None:
    """Seconds until the job should be done: the rest of its run if running, else the
    runs of the jobs ahead plus its own. None when there is no estimate, or when its pool
    is paused (it waits for an operator, not for a run time)."""
    if job.state.terminal:
        return 0.0
    if hold is Hold.PAUSED and job.state.queued:
        return None
    total = eta_total(ctx, job)
    if total is None:
        return None
    if job.state is JobState.RUNNING:
        done = job.progress_done / job.progress_total if job.progress_total else 0.0
        return round(total * (1.0 - done), 1)
    return round(total * (1 + queue_position), 1)


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where a queued job stands: its queue position and why it is passed over, if it is."""

    position: int
    hold: Hold | None = None


def queue_place(ctx: AppContext, job: Job) -> Place:
    """A queued job's position and hold (one status read, as a poll's); a job that has
    started since ``job`` was read is at position 0."""
    status = ctx.store.job_status(job.id, job.user)
    if status is None or status.queue_position is None:
        return Place(0)
    return Place(status.queue_position, status.hold)


def run_seconds(job: Job) -> float | None:
    """How long the last attempt ran (None until it has finished)."""
    if job.started_at is None or job.finished_at is None:
        return None
    return round(max(0.0, job.finished_at - job.started_at), 3)


def seed_of(job: Job) -> int | None:
    """The seed the job runs with (drawn at submit when the request gave none; None only
    for jobs queued before that)."""
    seed = job.inputs.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None


def native_result(video: dict[str, Any], job: Job) -> dict[str, Any]:
    """The native dialect's result: the spec's ``{"video": {...}}`` and the seed used."""
    body: dict[str, Any] = {"video": video}
    seed = seed_of(job)
    if seed is not None:
        body["seed"] = seed
    return body


def result_bytes_b64(ctx: AppContext, job: Job) -> str:
    require_not_expired(job)
    if job.result_key is None:
        raise NotFound(f"Request {job.id} has no stored output.")
    return base64.b64encode(ctx.storage.get_bytes(job.result_key)).decode("ascii")


def video_file(ctx: AppContext, job: Job, base: str) -> dict[str, Any]:
    """The finished video as a file descriptor: a signed download URL and its metadata."""
    require_not_expired(job)
    if job.result_key is None:
        raise NotFound(f"Request {job.id} has no stored output.")
    size = job.result_meta.get("file_size")
    if not isinstance(size, int):  # outputs stored before sizes were recorded
        size = len(ctx.storage.get_bytes(job.result_key))
    return {
        "url": ctx.storage.signed_url(job.result_key, ctx.settings.storage.signed_url_ttl, base),
        "content_type": "video/mp4",
        "file_name": job.result_key.rsplit("/", 1)[-1],
        "file_size": size,
    }


def require_completed(job: Job) -> None:
    if job.state is not JobState.COMPLETED:
        status = job.wire_status.value
        if job.state is JobState.FAILED:
            raise Conflict(f"Request {job.id} is FAILED: {job.error or 'unknown error'}")
        raise Conflict(f"Request {job.id} is {status}; the result is available once COMPLETED.")
    require_not_expired(job)
