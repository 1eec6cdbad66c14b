"""Applies the Alembic migration history to a database URL (``vidq db upgrade``)."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")


def sqlalchemy_url(url: str) -> str:
    """Our URLs (``sqlite:///``, ``postgresql://``) as SQLAlchemy wants them."""
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", sqlalchemy_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database to ``revision`` (default: the newest). Safe to run from many
    processes at once: PostgreSQL takes an advisory lock (migrations/env.py), SQLite a
    lock file next to the database."""
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
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head
