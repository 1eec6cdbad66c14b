"""Operators' view of every user's API tokens (admin tokens only; any other token gets
404, as an unknown route): ``GET /admin/tokens?user=`` and ``DELETE /admin/tokens/{id}``.
The same records and the same revocation as ``/tokens`` (``services/tokens.py``) and the
``vidq token`` commands."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.admin import admin
from vidq.api.context import context, token_store
from vidq.api.services.tokens import listed, revoke, token_view
from vidq.store.base import Token, TokenStore

router = APIRouter(tags=["admin"])


@router.get("/admin/tokens", summary="Every user's API tokens, or one user's (no secrets)")
async def list_tokens(
    user: str | None = Query(None, min_length=1, max_length=200, description="Only this user's."),
    token: Token = Depends(admin),
    store: TokenStore = Depends(token_store),
) -> Response:
    """Tokens newest first (at most 200), revoked and expired ones included, with their
    user, role and limits."""

    def work() -> dict[str, Any]:
        return {"tokens": [token_view(t, owner=True) for t in listed(store, user)]}

    return JSONResponse(await run_in_threadpool(work))


@router.delete("/admin/tokens/{token_id}", status_code=204, summary="Revoke any user's token")
async def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**62)],
    request: Request,
    token: Token = Depends(admin),
    store: TokenStore = Depends(token_store),
) -> Response:
    """Refused from the next request on (by other API replicas within 2 s); 404 if there
    is no live token with this id."""
    await run_in_threadpool(revoke, store, context(request).auth, token_id, None)
    return Response(status_code=204)
