"""Job stores: the JobStore protocol and its adapters, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from vidq.store.base import JobStore, ReapResult, Token
from vidq.store.migrate import upgrade

__all__ = ["JobStore", "ReapResult", "Token", "open_store"]


def open_store(url: str, *, migrate: bool = True) -> JobStore:
    """The adapter for a database URL; applies migrations first unless told not to."""
    if url.startswith("sqlite:///"):
        from vidq.store.sqlite import SQLiteStore

        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if migrate:
            upgrade(url)
        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql://", "postgres://")):
        from vidq.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

        if migrate:
            upgrade(url)
        store: JobStore = PostgresStore.from_url(url)
        return store
    raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
