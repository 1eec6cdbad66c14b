"""The test harness's in-process stack (tests/support/stack.py) is what `vidq serve` runs,
and the ``database`` fixture's check catches a server on the wrong job store."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stack import stack
from tests.support.stores import Database
from tests.support.wait import wait_status

SMALL = {"prompt": "a fox", "width": 128, "height": 128, "duration": 1}


def test_the_stack_serves_runs_and_uses_the_chosen_store(
    tmp_path: Path, database: Database
) -> None:
    with stack(tmp_path / "data", database=database) as s, s.client(s.token("alice")) as c:
        r = c.post("/queue/wan22-fast-t2v", json=SMALL)
        assert r.status_code == 200, r.text
        done = wait_status(c, "wan22-fast-t2v", r.json()["request_id"], {"COMPLETED"})
        assert done["statusMessages"]["result_uri"].startswith("s3://vidq/outputs/free/")
        workers = s.client(s.admin_token).get("/admin/workers").json()["workers"]
        assert [w["name"] for w in workers] == ["serve-0"]  # named as `vidq serve` names them
        assert (tmp_path / "data" / "vidq.db").exists() == (database.kind == "sqlite")


def test_a_postgres_run_on_sqlite_fails_the_check(tmp_path: Path, pg_url: str) -> None:
    """The bug this check exists for: a [postgres] test whose server used SQLite."""
    with stack(tmp_path / "data", workers=0) as s:  # no database given: SQLite
        with pytest.raises(AssertionError, match="postgres run"):
            Database("postgres", pg_url).check(s.data_dir, s.settings.resolved_database_url())
    with stack(tmp_path / "pg", workers=0, database=Database("postgres", pg_url)) as s:
        with pytest.raises(AssertionError):
            Database("sqlite").check(s.data_dir, s.settings.resolved_database_url())
