"""A submit, in terms of the store: what both wire dialects' submit routes call
(``submit``), after they have read the request (``api/parsing/``).

A submit first replays an earlier one with the same Idempotency-Key, if there is one;
else it checks what needs no media (the priority against the token's maximum, no
reserved ``_`` fields, the count of LoRAs and their URLs: never fetched here) and draws
the seed, hands the media to the intake (``media/intake.py``: fetched or read from the
caller's uploads, checked, stored as blobs) and, in the intake's thread, inserts the
job: its webhook with it, within the token's limits. Nothing is queued (and no blob is
left) if any input is bad.
"""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread

from vidq.api.context import AppContext
from vidq.api.eta import work_units
from vidq.api.parsing.headers import Deadline
from vidq.api.services.uploads import OwnUploads
from vidq.catalog import Model, _Inputs, input_schema, new_seed
from vidq.errors import Conflict, InvalidInput
from vidq.jobs import Job, NewJob
from vidq.media.fetch import check_url
from vidq.media.intake import StoredInputs
from vidq.media.sizing import Plan
from vidq.store.base import SubmitStore, Token, UploadStore

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
    await _check_loras(ctx, model, inputs)
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
            weight=token.quota.weight,
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


async def _check_loras(ctx: AppContext, model: Model, inputs: dict[str, Any]) -> None:
    """At most ``max_loras`` LoRAs, each ``path`` a URL the outbound policy of input URLs
    would fetch (its scheme and the addresses its host resolves to), and only for the
    families that take them (the schema checked the items). The API does not fetch them:
    the worker does, under the same policy, when it runs the job."""
    if "loras" in inputs and "loras" not in input_schema(model).model_fields:
        raise InvalidInput("loras", f"{model.id} takes no LoRAs (Wan text- and image-to-video do)")
    loras = inputs.get("loras") or []
    limit = ctx.settings.limits.max_loras
    if len(loras) > limit:
        raise InvalidInput(
            "loras", f"at most {limit} LoRAs per request (got {len(loras)})", loc=["loras"]
        )
    for i, lora in enumerate(loras):
        try:
            await check_url(f"loras[{i}].path", str(lora["path"]), ctx.intake.fetcher.policy)
        except InvalidInput as exc:
            raise InvalidInput(
                f"loras[{i}].path", exc.reason, kind=exc.kind, loc=["loras", i, "path"]
            ) from None


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
