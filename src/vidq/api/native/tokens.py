"""The caller's own API tokens and limits, on paths of neither dialect: ``GET /tokens``,
``POST /tokens`` (the new secret, shown once), ``DELETE /tokens/{id}`` and ``GET /limits``
(the calling token's limits and what the user's requests hold of them now). What the
requests used per day is ``GET /usage`` (``requests.py``). The web app's API keys page
is made of these."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, submit_store, token_store
from vidq.api.services.results import iso
from vidq.api.services.tokens import (
    create_own_token,
    limits_view,
    listed,
    revoke,
    token_view,
)
from vidq.store.base import (
    TOKEN_EXPIRY_DAYS_MAX,
    TOKEN_NAME_MAX,
    SubmitStore,
    Token,
    TokenStore,
)

router = APIRouter(tags=["tokens"])

TokenId = Annotated[int, Path(ge=1, le=2**62, description="The token's id (see GET /tokens).")]


class NewToken(BaseModel):
    """``POST /tokens``'s body."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=TOKEN_NAME_MAX)
    ] = Field(description="What you call this key, to tell it from your others.")
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=TOKEN_EXPIRY_DAYS_MAX,
        description="Refused after this many days (none: never).",
    )


@router.get("/tokens", summary="Your API tokens (never their secrets)")
async def list_tokens(
    token: Token = Depends(caller), store: TokenStore = Depends(token_store)
) -> Response:
    """Your tokens, newest first, revoked and expired ones included; ``current`` marks the
    one this request was made with."""

    def work() -> dict[str, Any]:
        mine = listed(store, token.user)
        return {"tokens": [{**token_view(t), "current": t.id == token.id} for t in mine]}

    return JSONResponse(await run_in_threadpool(work))


@router.post("/tokens", status_code=201, summary="Create an API token (its secret is shown once)")
async def create_token(
    body: NewToken,
    request: Request,
    token: Token = Depends(caller),
    store: TokenStore = Depends(token_store),
) -> Response:
    """A new token of your user with the limits of the token you call with, and never
    more: no admin or worker role, the same priority cap and quotas, and an expiry no later
    than its own. At most ``VIDQ_MAX_TOKENS_PER_USER`` live tokens per user (409 past it).
    The answer's ``token`` is the secret: it is not stored and cannot be shown again."""
    ctx = context(request)
    cap = ctx.settings.limits.max_tokens_per_user

    def work() -> dict[str, Any]:
        made, secret = create_own_token(
            store, token, body.name, body.expires_in_days, cap, ctx.store.now()
        )
        return {**token_view(made), "current": False, "token": secret}

    return JSONResponse(await run_in_threadpool(work), status_code=201)


@router.delete("/tokens/{token_id}", status_code=204, summary="Revoke one of your API tokens")
async def revoke_token(
    token_id: TokenId,
    request: Request,
    token: Token = Depends(caller),
    store: TokenStore = Depends(token_store),
) -> Response:
    """Refused from the next request on (by other API replicas within 2 s). Revoking the
    token you call with is allowed: it signs you out. Another user's id is 404."""
    ctx = context(request)
    await run_in_threadpool(revoke, store, ctx.auth, token_id, token.user)
    return Response(status_code=204)


@router.get("/limits", summary="Your token's limits and what your requests hold of them now")
async def get_limits(
    token: Token = Depends(caller), store: SubmitStore = Depends(submit_store)
) -> Response:
    """The calling token's limits (null: unlimited) and the user's counters they are
    checked against: requests queued and running, submits in the last minute, and video
    seconds and GPU-seconds of the requests submitted today (UTC)."""

    def work() -> dict[str, Any]:
        now = store.usage(token.user)
        return {
            "token_id": token.id,
            "expires_at": None if token.expires_at is None else iso(token.expires_at),
            "limits": limits_view(token),
            "usage": {
                "queued": now.queued,
                "running": now.running,
                "last_minute": now.last_minute,
                "video_seconds_today": round(now.video_seconds_today, 3),
                "gpu_seconds_today": round(now.gpu_seconds_today, 3),
            },
        }

    return JSONResponse(await run_in_threadpool(work))
