"""Which job store a test runs on, chosen before its server or stack starts, and a check
that the running server really uses it.

The ``database`` fixture (tests/conftest.py) is a ``Database``: SQLite (the data folder's
file, the embedded default) or a fresh PostgreSQL database on the session's server. A
stack or a `vidq serve` started with it checks, once running, that it talks to that
database: on PostgreSQL, PostgreSQL itself is asked (``pg_stat_activity``) whether the
test's database has a client besides the checker, and the data folder must hold no SQLite
file; on SQLite, the file must be there. A PostgreSQL run that quietly used SQLite (as the
e2e layer's ``[postgres]`` runs once did) fails here.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Database:
    """A job store for a test: ``kind`` is "sqlite" or "postgres"; ``url`` the PostgreSQL
    database's (None: the data folder's SQLite file)."""

    kind: str
    url: str | None = None

    def settings(self) -> dict[str, Any]:
        """The ``VIDQ_*`` settings that select it (none for the embedded default)."""
        return {"database_url": self.url} if self.url else {}

    def check(self, data_dir: Path, used_url: str) -> None:
        """Assert that a server on ``data_dir`` whose settings resolve to ``used_url`` uses
        this database (see the module's docstring)."""
        sqlite_file = data_dir / "vidq.db"
        if self.kind == "sqlite":
            assert used_url.startswith("sqlite:///"), used_url
            assert Path(used_url.removeprefix("sqlite:///")).is_file(), used_url
            return
        assert self.kind == "postgres" and self.url, self
        assert used_url == self.url, f"a postgres run whose server uses {used_url}"
        assert not sqlite_file.exists(), f"a postgres run's server made {sqlite_file}"
        assert clients_of(self.url) >= 1, f"nothing is connected to {self.url}"


def clients_of(url: str) -> int:
    """How many sessions other than this one PostgreSQL has open on ``url``'s database."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    return int(row[0]) if row else 0


def mint_token(store: Any, user: str, max_priority: int, **options: Any) -> str:
    """A token minted on ``store`` as `vidq token create` makes one (that command has its
    own tests: tests/acceptance/test_cli_server.py): ``admin``, ``worker``, ``pools`` and
    the quota (``_QUOTA``)."""
    from vidq.api.auth import create_token
    from vidq.store.base import Quota

    quota = Quota(**{k: options.pop(k) for k in list(options) if k in _QUOTA})
    return create_token(store, user, max_priority, quota=quota, **options)


_QUOTA = (
    "max_queued",
    "max_running",
    "rate_per_minute",
    "daily_video_seconds",
    "daily_gpu_seconds",
    "weight",
)


@functools.cache
def _sqlite_template() -> Path:
    """An empty SQLite store at the head revision, migrated once per test process."""
    from vidq.store import migrate

    path = Path(tempfile.mkdtemp(prefix="vidq-template-")) / "vidq.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def seed_sqlite(data_dir: Path) -> None:
    """Give a new data folder the empty store a first start would make (a copy of one
    migrated once per test process), so that each stack or `vidq serve` on a new folder
    does not run every migration again (0.1 CPU-s in process, 0.5 with a process's
    Alembic import). Leaves a folder that has a store alone. A first start's own
    migrations stay tested where nothing seeds: the store contract suite (both dialects),
    the CLI tests (`vidq init`, `vidq db upgrade`) and the README's `vidq serve` on an empty
    folder (tests/acceptance/test_readme.py)."""
    target = data_dir / "vidq.db"
    if target.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".vidq.db.{os.getpid()}")
    shutil.copyfile(_sqlite_template(), partial)
    partial.rename(target)
