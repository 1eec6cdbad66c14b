"""Every e2e test runs once per job-store backend: SQLite (the embedded default) and
PostgreSQL (a fresh database on the session's server). ``E2E_BACKENDS`` (comma-separated,
default ``sqlite,postgres``) narrows the list. Tests that choose their own
``database_url`` (the scale-out and fault tests), or whose store makes no difference (the
browser tests of the web app, which exercise the page; the admin CLI, which speaks only
HTTP), run once, as ``[own]`` (SQLite unless they choose)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support import processes as helpers

BACKENDS = [b.strip() for b in os.environ.get("E2E_BACKENDS", "sqlite,postgres").split(",")]
_OWN_BACKEND = (
    "tests/acceptance/test_scaleout.py",
    "tests/acceptance/test_faults.py",
    "tests/acceptance/test_webapp.py",
    "tests/acceptance/test_cli_admin.py",
    "tests/acceptance/test_cli_inputs.py",
    "tests/acceptance/test_remote_workers_faults.py",
    "tests/acceptance/test_cli_server.py",
    "tests/acceptance/test_config_cli.py",
    "tests/acceptance/test_packaging.py",
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "e2e_backend" in metafunc.fixturenames:
        own = str(metafunc.definition.path).endswith(_OWN_BACKEND)
        metafunc.parametrize("e2e_backend", ["own"] if own else BACKENDS)


@pytest.fixture(autouse=True)
def e2e_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The job store this test's vidq processes use (through helpers.DEFAULT_SETTINGS)."""
    backend: str = request.param
    saved = dict(helpers.DEFAULT_SETTINGS)
    if backend == "postgres":
        helpers.DEFAULT_SETTINGS["database_url"] = request.getfixturevalue("pg_url")
    try:
        yield backend
    finally:
        helpers.DEFAULT_SETTINGS.clear()
        helpers.DEFAULT_SETTINGS.update(saved)
