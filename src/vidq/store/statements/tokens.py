"""The statements of API tokens (``TokenStore``): only their sha256 is stored."""

from __future__ import annotations

from typing import ClassVar

from vidq.store.rows import TOKEN_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement


class TokenStatements(RoleStatements):
    """API tokens."""

    insert_token = Statement(f"""
        INSERT INTO tokens (owner, token_hash, max_priority, admin, max_queued, max_running,
            rate_per_minute, daily_video_seconds, daily_gpu_seconds, weight, worker, pools,
            name, expires_at, created_at)
        VALUES (:owner, :token_hash, :max_priority, :admin, :max_queued, :max_running,
            :rate_per_minute, :daily_video_seconds, :daily_gpu_seconds, :weight, :worker,
            :pools, :name, :expires_at, {{NOW}})
        RETURNING {TOKEN_COLUMNS}""")
    # Returns only the id, the token is read afterwards (``token_by_id``): SQLite 3.40's
    # RETURNING answers ``revoked_at IS NOT NULL`` wrongly under ``WHERE revoked_at IS NULL``.
    update_token = Statement("""
        UPDATE tokens SET max_priority = :max_priority, max_queued = :max_queued,
            max_running = :max_running, rate_per_minute = :rate_per_minute,
            daily_video_seconds = :daily_video_seconds, daily_gpu_seconds = :daily_gpu_seconds,
            weight = :weight
        WHERE id = :id AND revoked_at IS NULL
        RETURNING id""")
    token_by_id = Statement(f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = :id")
    token_by_hash = Statement(f"""
        SELECT {TOKEN_COLUMNS}, token_hash FROM tokens
        WHERE token_hash = :token_hash AND revoked_at IS NULL""")
    revoke_token = Statement("""
        UPDATE tokens SET revoked_at = {NOW} WHERE id = :id AND revoked_at IS NULL""")
    list_tokens = Statement(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id")
    list_user_tokens = Statement(
        f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE owner = :owner ORDER BY id"
    )
    revoke_user_token = Statement("""
        UPDATE tokens SET revoked_at = {NOW}
        WHERE id = :id AND owner = :owner AND revoked_at IS NULL""")
    # On PostgreSQL a transaction-scoped lock per user (the dialect's value), taken before
    # ``insert_user_token`` so that concurrent creates of one user see each other.
    lock_token_owner: ClassVar[Statement | None] = None
    # A user's own token, only while they hold fewer than :max_live live ones (the caller
    # takes ``lock_token_owner`` first).
    # Returns only the id, as ``update_token`` (SQLite's RETURNING quirk under a condition
    # on ``revoked_at``); the token is read afterwards.
    insert_user_token = Statement("""
        INSERT INTO tokens (owner, token_hash, name, expires_at, max_priority, admin,
            max_queued, max_running, rate_per_minute, daily_video_seconds, daily_gpu_seconds,
            weight, worker, pools, created_at)
        SELECT :owner, :token_hash, :name, :expires_at, :max_priority, :admin,
            :max_queued, :max_running, :rate_per_minute, :daily_video_seconds,
            :daily_gpu_seconds, :weight, :worker, NULL, {NOW}
        WHERE (SELECT count(*) FROM tokens WHERE owner = :owner AND revoked_at IS NULL
            AND (expires_at IS NULL OR expires_at > {NOW})) < :max_live
        RETURNING id""")
