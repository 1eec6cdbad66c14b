"""Request dependencies shared by the routers: the context, the caller, path checks."""

from __future__ import annotations

import re

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from vidq.api.auth import parse_authorization, require_user_role
from vidq.api.context import context
from vidq.catalog import Model, closest_model, get_model
from vidq.errors import InvalidRequestId, NotFound
from vidq.store.base import Token

_REQUEST_ID = re.compile(r"[0-9]{1,18}")


async def caller(request: Request) -> Token:
    """The authenticated user or admin token of this request (401 otherwise; 403 for a
    worker token, which may use only ``/worker/v1``)."""
    ctx = context(request)
    token = parse_authorization(request.headers.get("authorization"))
    hit = ctx.auth.cached(token)
    if hit is None:
        hit = await run_in_threadpool(ctx.auth.lookup, token)
    return require_user_role(hit)


def model_or_404(model_id: str) -> Model:
    """The model a path names; 404 otherwise, with the nearest model id if one is close
    (the one place both dialects resolve a model id)."""
    model = get_model(model_id)
    if model is None:
        near = closest_model(model_id)
        hint = f"; did you mean '{near}'?" if near else "."
        raise NotFound(f"Unknown model '{model_id[:100]}'{hint}")
    return model


def request_id(value: str) -> int:
    """A path's request id: a decimal number (400 otherwise)."""
    if not _REQUEST_ID.fullmatch(value):
        raise InvalidRequestId()
    return int(value)
