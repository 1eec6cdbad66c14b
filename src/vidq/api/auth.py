"""Bearer/Key token authentication. Tokens are stored as sha256 hashes and compared in
constant time; they never appear in logs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Sequence

from vidq.errors import Forbidden, Unauthorized
from vidq.store.base import Quota, Token, TokenStore

TOKEN_PREFIX = "vq_"


def new_token() -> str:
    """A fresh random API token (shown to its owner once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    store: TokenStore,
    user: str,
    max_priority: int = 100,
    admin: bool = False,
    quota: Quota = Quota(),
    *,
    worker: bool = False,
    pools: Sequence[str] | None = None,
    name: str | None = None,
    expires_at: float | None = None,
) -> str:
    """Create a token for ``user`` with these limits (``worker``: a worker token for
    ``pools``, None: every pool), named ``name``, refused from ``expires_at`` (database
    time; None: never); returns the token (only its hash is stored)."""
    token = new_token()
    store.create_token(
        user, hash_token(token), max_priority, admin, quota, worker=worker, pools=pools,
        name=name, expires_at=expires_at,
    )  # fmt: skip
    return token


def require_user_role(token: Token) -> Token:
    """``token`` if it may use the user and admin routes; a worker token may not (403)."""
    if token.worker:
        raise Forbidden("A worker token may use only the /worker/v1 routes.")
    return token


def parse_authorization(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <t>`` (or fal's ``Key <t>``) header."""
    if not header:
        raise Unauthorized()
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() not in ("bearer", "key") or not value.strip():
        raise Unauthorized()
    return value.strip()


class Authenticator:
    """Resolves tokens to their records, with a short cache: a revocation through this
    API process (``forget``) takes effect on the next request, one through another replica
    or the CLI within ``ttl_s``, and so does an expiry."""

    def __init__(self, store: TokenStore, ttl_s: float = 2.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Token]] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> Token | None:
        hit = self._cache.get(hash_token(token))
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        return None

    def forget(self, token_id: int) -> None:
        """Drop the token ``token_id`` from the cache (it was just revoked here)."""
        with self._lock:
            for digest in [d for d, (_, t) in self._cache.items() if t.id == token_id]:
                del self._cache[digest]

    def lookup(self, token: str) -> Token:
        """The live token record; Unauthorized if unknown, revoked or expired."""
        digest = hash_token(token)
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        found = self.store.token_by_hash(digest)
        if found is None or not hmac.compare_digest(found[1], digest):
            raise Unauthorized()
        if found[0].expired:
            raise Unauthorized(
                f"This token expired at {_utc(found[0].expires_at)}: create a new one."
            )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[digest] = (time.monotonic() + self.ttl_s, found[0])
        return found[0]


def _utc(when: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when or 0))
