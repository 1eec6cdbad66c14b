"""Applies the Alembic migration history to a database URL (``vidq db upgrade``).

Every process that opens a store calls ``upgrade`` at start. When the database already
stands at ``HEAD`` it returns after one query, without loading Alembic and its scripts
(about a fifth of a CPU-second, paid by every `vidq worker`, `vidq serve` and `vidq token`
start); otherwise Alembic runs as before."""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest migration's revision (migrations/versions/): a unit test checks that it is
# Alembic's head, so a new migration fails the suite until this names it.
HEAD = "0016"


def sqlalchemy_url(url: str) -> str:
    """Our URLs (``sqlite:///``, ``postgresql://``) as SQLAlchemy wants them."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def current_revision(url: str) -> str | None:
    """The revision the database stands at; None when it has none yet (or no file) or
    when it cannot be read here, in which case Alembic finds out and says why."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.is_file():
            return None
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True)  # never creates it
        except sqlite3.Error:
            return None
        try:
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        return str(row[0]) if row else None
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as pg:
            found = pg.execute("SELECT version_num FROM alembic_version").fetchone()
    except psycopg.Error:
        return None
    return str(found[0]) if found else None


def up_to_date(url: str) -> bool:
    """Whether the database already stands at the newest revision (one query)."""
    return current_revision(url) == HEAD


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest). Safe to run from many
    processes at once: PostgreSQL takes an advisory lock (migrations/env.py), SQLite a
    lock file next to the database."""
    if revision == "head" and up_to_date(url):
        return
    from alembic import command

    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        lock_path = Path(url.removeprefix("sqlite:///") + ".migrate-lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                command.upgrade(alembic_config(url), revision)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    """Alembic's head, read from the migration scripts."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head
