"""API tokens (``TokenStore``): stored as their sha256, with their limits and role."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from vidq.store.base import Quota, Token
from vidq.store.rows import token_from_row
from vidq.store.sql.core import Queries


class TokenQueries(Queries):
    """``TokenStore`` (see ``base.TokenStore``)."""

    def create_token(
        self,
        user: str,
        token_hash: str,
        max_priority: int,
        admin: bool,
        quota: Quota = Quota(),
        *,
        worker: bool = False,
        pools: Sequence[str] | None = None,
        name: str | None = None,
        expires_at: float | None = None,
    ) -> Token:
        row = self._row(
            self._sql.insert_token,
            owner=user, token_hash=token_hash, max_priority=max_priority, admin=admin,
            worker=worker, pools=",".join(pools) if pools else None, name=name,
            expires_at=expires_at,
            **dataclasses.asdict(quota),
        )  # fmt: skip
        assert row is not None
        return token_from_row(row)

    def create_user_token(
        self,
        user: str,
        token_hash: str,
        max_priority: int,
        quota: Quota,
        *,
        name: str,
        expires_at: float | None,
        max_live: int,
    ) -> Token | None:
        params = {
            "owner": user, "token_hash": token_hash, "name": name, "expires_at": expires_at,
            "max_priority": max_priority, "admin": False, "worker": False,
            "max_live": max_live, **dataclasses.asdict(quota),
        }  # fmt: skip
        with self.driver.transaction() as db:
            if self._sql.lock_token_owner is not None:
                db.row(self._sql.lock_token_owner, {"owner": user})
            made = db.row(self._sql.insert_user_token, params)
            row = db.row(self._sql.token_by_id, {"id": made["id"]}) if made else None
        return token_from_row(row) if row else None

    def update_token(self, token_id: int, max_priority: int, quota: Quota) -> Token | None:
        params = {"id": token_id, "max_priority": max_priority, **dataclasses.asdict(quota)}
        with self.driver.session() as db:
            if db.row(self._sql.update_token, params) is None:
                return None
            row = db.row(self._sql.token_by_id, {"id": token_id})
        return token_from_row(row) if row else None

    def get_token(self, token_id: int) -> Token | None:
        row = self._row(self._sql.token_by_id, id=token_id)
        return token_from_row(row) if row else None

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        row = self._row(self._sql.token_by_hash, token_hash=token_hash)
        return (token_from_row(row), row["token_hash"]) if row else None

    def revoke_token(self, token_id: int, user: str | None = None) -> bool:
        if user is None:
            return self._count(self._sql.revoke_token, id=token_id) == 1
        return self._count(self._sql.revoke_user_token, id=token_id, owner=user) == 1

    def list_tokens(self, user: str | None = None) -> list[Token]:
        if user is None:
            return [token_from_row(r) for r in self._rows(self._sql.list_tokens)]
        return [token_from_row(r) for r in self._rows(self._sql.list_user_tokens, owner=user)]
