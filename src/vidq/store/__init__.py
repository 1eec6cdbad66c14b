"""The job store: its ports by role, one SQL store over a driver chosen by URL.

Where things live: ``base`` the ports (one protocol per role, ``JobStore`` their union)
and their value objects; ``sql/`` every method, once, one module per role; ``statements/``
every SQL statement by name, one module per role, with the dialect overrides; ``driver``
what a driver provides; ``sqlite`` and ``postgres`` the drivers; ``rows`` row
conversion; ``positions`` cached queue positions; ``counters`` the job metric samples;
``migrate`` and ``migrations/`` the schema history."""

from __future__ import annotations

from pathlib import Path

from vidq.errors import StoreUnavailable
from vidq.store.base import JobStore, ReapResult, Token

__all__ = ["JobStore", "ReapResult", "Token", "open_store"]


def open_store(url: str, *, migrate: bool = True, fair_share: bool = True) -> JobStore:
    """The store for a database URL; applies migrations first unless told not to.
    ``fair_share``: claims take turns between users within a rank (``VIDQ_FAIR_SHARE``),
    else FIFO.

    StoreUnavailable if the database cannot be reached (callers may wait and retry)."""
    sqlite = url.startswith("sqlite:///")
    if sqlite:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    elif not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"unsupported database URL scheme: {url.split(':', 1)[0]!r}")
    if migrate:
        _migrate(url)
    if sqlite:
        from vidq.store.sqlite import SQLiteStore

        return SQLiteStore.from_url(url, fair_share=fair_share)
    from vidq.store.postgres import PostgresStore  # type: ignore[import-not-found,unused-ignore]

    store: JobStore = PostgresStore.from_url(url, fair_share=fair_share)
    return store


def _migrate(url: str) -> None:
    from vidq.store import migrate

    if migrate.up_to_date(url):
        return  # one query: Alembic and SQLAlchemy stay unloaded
    from sqlalchemy.exc import OperationalError

    try:
        migrate.upgrade(url)
    except OperationalError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
        raise StoreUnavailable(f"cannot migrate the database: {reason[:300]}") from exc
