"""A submit, in terms of the store: what both wire dialects' submit routes call
(``submit``), after they have read the request (``api/parsing/``).

A submit first replays an earlier one with the same Idempotency-Key, if there is one;
else it checks what needs no media (the priority against the token's maximum, no
reserved ``_`` fields) and draws the seed, hands the media to the intake
(``media/intake.py``: fetched or read from the caller's uploads, checked, stored as
blobs) and, in the intake's thread, inserts the job: its webhook with it, within the
token's limits. Nothing is queued (and no blob is left) if any input is bad.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
from typing import Any

import anyio.to_thread

from vidq.api.context import AppContext
from vidq.api.eta import work_units
from vidq.api.parsing.headers import Deadline
from vidq.api.services.uploads import OwnUploads
from vidq.catalog import Model, _Inputs, get_model, new_seed
from vidq.errors import Conflict, Gone, InvalidInput, NotFound
from vidq.jobs import Hold, Job, JobState, NewJob
from vidq.media.intake import StoredInputs
from vidq.media.sizing import Plan
from vidq.store.base import Cancel, JobStatus, SubmitStore, Token, UploadStore

log = logging.getLogger(__name__)


async def submit(
    ctx: AppContext,
    store: SubmitStore,
    uploads: UploadStore,
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
    """Queue a request to ``model`` (the module docstring); (the job, whether it replays
    an earlier submit). The job's INSERT registers its webhook too (worded for
    ``dialect``, with URLs under ``base``), so a submit that fails leaves neither."""
    if idempotency_key is not None:
        job = await anyio.to_thread.run_sync(replayed, store, model, token, idempotency_key)
        if job is not None:
            return job, True
    prio = body.priority if priority is None else priority
    inputs = _checked_inputs(body, token, prio)
    own = OwnUploads(uploads, ctx.storage, base, token.user, ctx.settings.limits.max_input_bytes)

    def enqueue(stored: StoredInputs) -> Job:
        new = NewJob(
            user=token.user,
            model_id=model.id,
            pool=model.pool,
            tier=int(model.tier),
            priority=prio,
            inputs=stored.inputs,
            binary_output=binary_output,
            max_attempts=ctx.settings.store.max_attempts,
            work_units=estimate_units(model, stored.inputs, stored.plan),
            idempotency_key=idempotency_key,
            webhook_url=webhook_url,
            webhook_dialect=dialect if webhook_url else None,
            webhook_base=base if webhook_url else None,
            max_running=token.quota.max_running,
            video_seconds=stored.plan.seconds,
            deadline_s=due.finish_s,
            start_s=due.start_s,
            start_error=due.start_error,
        )
        job = store.enqueue(new, token.quota)
        if job.inputs.get("_blobs") != stored.inputs.get("_blobs"):
            # A concurrent submit with this Idempotency-Key won the race: ours stored nothing.
            ctx.intake.discard(stored.blobs)
        _same_model(job, model)
        log.info(
            "request queued",
            extra={"request_id": job.id, "user": token.user, "model": model.id, "pool": model.pool},
        )
        return job

    return await ctx.intake.take(model.family, inputs, token.user, own, enqueue), False


def _checked_inputs(body: _Inputs, token: Token, priority: int) -> dict[str, Any]:
    """The request's inputs, with its priority and a seed: checked for what the schema
    cannot check and that needs no media (the token's maximum priority, reserved fields)."""
    if priority > token.max_priority:
        raise InvalidInput(
            "priority",
            f"priority {priority} is above this token's maximum of {token.max_priority}",
        )
    inputs = body.model_dump(mode="json", exclude_none=True)
    reserved = sorted(k for k in inputs if k.startswith("_"))
    if reserved:
        raise InvalidInput(reserved[0], "fields starting with '_' are reserved")
    inputs["priority"] = priority
    # Drawn once, here: stored with the inputs, every attempt (a retry, an operator's
    # retry) runs with it, and the answers about the request report it.
    inputs.setdefault("seed", new_seed())
    return inputs


def replayed(store: SubmitStore, model: Model, token: Token, key: str | None) -> Job | None:
    """The request an earlier submit with this Idempotency-Key created, if any (checked
    before any work, so a retried submit stores nothing twice)."""
    if key is None:
        return None
    job = store.find_by_idempotency_key(token.user, key)
    if job is not None:
        _same_model(job, model)
    return job


def _same_model(job: Job, model: Model) -> None:
    if job.model_id != model.id:
        raise Conflict(
            f"Idempotency-Key was already used for request {job.id} to model "
            f"'{job.model_id}'; use a new key for a different request."
        )


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
