"""Users' own API tokens (``/tokens``, ``/admin/tokens``, the web app's API keys page):
create one that inherits the caller's limits and never more, list them without secrets,
revoke one so that it is refused on the next request."""

from __future__ import annotations

import logging
from typing import Any

from vidq.api.auth import Authenticator, hash_token, new_token
from vidq.api.services.results import iso
from vidq.errors import Conflict, NotFound
from vidq.store.base import Token, TokenStore

log = logging.getLogger(__name__)

DAY_S = 86_400.0
LIST_MAX = 200  # a user's tokens listed, newest first (live ones are capped far below)


def create_own_token(
    store: TokenStore,
    caller: Token,
    name: str,
    expires_in_days: int | None,
    max_live: int,
    now: float,
) -> tuple[Token, str]:
    """A new token for the caller's user, with the caller's limits (``max_priority``,
    quotas, weight) and neither the admin nor the worker role; it expires after
    ``expires_in_days`` (``now``: the database clock) and never after the caller's own
    token. Returns its record and its secret (shown once); Conflict past ``max_live``."""
    expires_at = None if expires_in_days is None else now + expires_in_days * DAY_S
    if caller.expires_at is not None:
        expires_at = min(expires_at or caller.expires_at, caller.expires_at)
    secret = new_token()
    made = store.create_user_token(
        caller.user, hash_token(secret), caller.max_priority, caller.quota,
        name=name, expires_at=expires_at, max_live=max_live,
    )  # fmt: skip
    if made is None:
        raise Conflict(
            f"You already have {max_live} live API keys, the most allowed: revoke one "
            "(or let one expire) before creating another."
        )
    log.info("token created", extra={"user": caller.user, "token_id": made.id})
    return made, secret


def revoke(store: TokenStore, auth: Authenticator, token_id: int, user: str | None) -> None:
    """Revoke ``token_id`` (``user``: only theirs, else NotFound as if it did not exist;
    None: an operator's, any user's); this API process refuses it from the next request."""
    if not store.revoke_token(token_id, user):
        raise NotFound(f"API key {token_id} not found (or already revoked).")
    auth.forget(token_id)
    log.info("token revoked", extra={"user": user, "token_id": token_id})


def listed(store: TokenStore, user: str | None) -> list[Token]:
    """``user``'s tokens (None: everyone's), newest first, at most ``LIST_MAX``."""
    return store.list_tokens(user)[::-1][:LIST_MAX]


def token_view(t: Token, *, owner: bool = False) -> dict[str, Any]:
    """A token as the API shows it: never its secret (only its hash is stored)."""
    role = "admin" if t.admin else "worker" if t.worker else "user"
    return {
        "id": t.id,
        **({"user": t.user} if owner else {}),
        "name": t.name,
        "role": role,
        "created_at": iso(t.created_at),
        "expires_at": None if t.expires_at is None else iso(t.expires_at),
        "state": "revoked" if t.revoked else "expired" if t.expired else "active",
        "limits": limits_view(t),
    }


def limits_view(t: Token) -> dict[str, Any]:
    """A token's limits (None: unlimited), named as ``vidq token update`` names them."""
    q = t.quota
    return {
        "max_priority": t.max_priority,
        "max_queued": q.max_queued,
        "max_running": q.max_running,
        "rate_per_minute": q.rate_per_minute,
        "daily_video_seconds": q.daily_video_seconds,
        "daily_gpu_seconds": q.daily_gpu_seconds,
        "weight": q.weight,
    }
