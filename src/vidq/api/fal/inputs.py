"""A fal-dialect submit: the model a path names (a catalog model or one of fal's endpoint
ids, ``catalog.py``), its body in the native vocabulary, and the submit itself with what
fal's headers ask for. Shared by the queue submit (``queue.py``) and ``fal.run``
(``run.py``).

Every 422 names the field as the client sent it: a native field the mapping derived from a
fal field (``data_uri`` from ``image_url``, ``width`` from ``resolution``) is reported
under the fal name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pydantic
from fastapi import Request

from vidq.api.context import context
from vidq.api.fal.catalog import (
    APPS,
    FAL_NAMES,
    FalEndpoint,
    FieldClash,
    get_endpoint,
    native_names,
    to_native,
)
from vidq.api.parsing import headers
from vidq.api.parsing.body import submitted
from vidq.api.parsing.params import model_or_404
from vidq.api.services import submission
from vidq.catalog import Model, _Inputs, get_model, input_schema
from vidq.errors import InvalidInput, NotFound, plain_message
from vidq.jobs import Job
from vidq.store.base import SubmitStore, Token, UploadStore


class Invalid(Exception):
    """A 422 with several validation errors (``detail`` as FastAPI words them)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        self.detail = detail


@dataclasses.dataclass(frozen=True, slots=True)
class Target:
    """What a fal path names: the model, and the fal endpoint if it is an alias."""

    model: Model
    endpoint: FalEndpoint | None
    owner: str
    app: str  # the path segment after the owner in fal's request URLs

    def renamed(self, loc: list[str | int], names: dict[str, str]) -> list[str | int]:
        """``loc`` with a native field name replaced by the name the client sent."""
        if loc and isinstance(loc[0], str) and loc[0] in names:
            return [names[loc[0]], *loc[1:]]
        return loc


def target(owner: str, path: str) -> Target:
    """The model of ``/{owner}/{path}``: a fal endpoint id, else ``{owner}/{model id}``."""
    endpoint = get_endpoint(f"{owner}/{path}")
    if endpoint is not None:
        return Target(endpoint.model, endpoint, *endpoint.app)
    if "/" in path:
        raise NotFound(f"Unknown model '{owner[:50]}/{path[:100]}'.")
    return Target(model_or_404(path), None, owner, path)


def check_app(owner: str, app: str) -> None:
    """404 unless ``/{owner}/{app}/requests/...`` can name requests: a catalog model id,
    or the app of a fal endpoint id (``fal-ai/wan``). Request ids are global; the job's
    owner is checked by the store."""
    if get_model(app) is None and (owner.lower(), app.lower()) not in APPS:
        raise NotFound(f"Unknown model '{app[:100]}'.")


def _errors(exc: pydantic.ValidationError, names: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = list(e.get("loc", ()))
        if loc and isinstance(loc[0], str) and loc[0] in names:
            loc[0] = names[loc[0]]
        out.append(
            {"loc": ["body", *loc], "msg": plain_message(e.get("msg", "")), "type": e.get("type")}
        )
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """A validated submit: native inputs, and native -> client field names."""

    target: Target
    body: _Inputs
    names: dict[str, str]


async def prepare(request: Request, owner: str, path: str) -> Prepared:
    """Resolve, size-check, translate and validate a submit body (Invalid / InvalidInput
    naming the client's fields)."""
    where = target(owner, path)
    family = where.model.family
    data = await submitted(request, where.model, FAL_NAMES[family].keys())
    names: dict[str, str] = {}
    try:
        if where.endpoint is not None:
            try:
                fal_body = where.endpoint.schema.model_validate(data)
            except pydantic.ValidationError as exc:
                raise Invalid(_errors(exc, {})) from None
            data = to_native(where.endpoint, fal_body)
            names = where.endpoint.fal_names
        else:
            data, names = native_names(family, data)
    except FieldClash as exc:
        raise InvalidInput(exc.field, str(exc)) from None
    try:
        body = input_schema(where.model).model_validate(data)
    except pydantic.ValidationError as exc:
        raise Invalid(_errors(exc, names)) from None
    return Prepared(where, body, names)


async def submit(
    request: Request,
    prepared: Prepared,
    token: Token,
    store: SubmitStore,
    uploads: UploadStore,
    *,
    webhook_url: str | None,
) -> tuple[Job, bool]:
    """Submit a prepared body with what the request's headers ask for (priority,
    Idempotency-Key, deadlines): the queue route's submit and ``fal.run``'s, its 422s
    worded in the client's names. Returns (job, replayed)."""
    ctx = context(request)
    priority = headers.fal_priority(request.headers, prepared.body.priority)
    key = headers.idempotency_key(request.headers)
    due = headers.deadline(request.headers, ctx.settings, fal=True)
    try:
        return await submission.submit(
            ctx, store, uploads, prepared.target.model, prepared.body, token, dialect="fal",
            base=ctx.base_url(request), binary_output=True, priority=priority,
            idempotency_key=key, webhook_url=webhook_url, due=due,
        )  # fmt: skip
    except InvalidInput as exc:
        loc = prepared.target.renamed(exc.loc, prepared.names)
        if loc == exc.loc:
            raise
        raise InvalidInput(str(loc[0]), exc.reason, kind=exc.kind, loc=loc) from None
