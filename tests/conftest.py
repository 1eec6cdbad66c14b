"""Fixtures and rules shared by every test layer (CONTRIBUTING.md, "Tests").

- Every test starts without the developer's ``VIDQ_*`` settings.
- ``pg_server``/``pg_url`` and ``seaweed`` start a real PostgreSQL and a real S3 server
  (SeaweedFS) once per session (tests/support/servers.py); a test that uses them is
  marked ``postgres``/``s3`` by itself, so ``-m "not postgres"`` leaves them out.
- ``database`` runs a test once on SQLite and once on PostgreSQL, the store chosen before
  any server starts (tests/support/stores.py); only the tests whose behaviour the store
  decides ask for it.
- ``tiny_wan_models`` is a folder of tiny random-weight Wan pipelines, written once per
  run and shared by every xdist worker (building one takes seconds of torch).
- ``in_process`` builds an engine in the test's process (tests/support/engines.py).
- Each layer's tests carry the layer's marker (``unit``, ``integration``, ``acceptance``).
- In CI (``CI`` set, as ``.ci/run`` does) a skipped test fails the run: a missing tool
  must not pass for a green run (tests/support/tools.py).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.servers import PostgresServer, SeaweedServer, start_postgres, start_seaweed
from tests.support.stores import Database
from tests.support.tools import ToolMissing, in_ci, missing

_LAYERS = ("unit", "integration", "acceptance")
_TESTS = Path(__file__).parent


@pytest.fixture(autouse=True)
def _clean_vidq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's VIDQ_* settings."""
    for name in list(os.environ):
        if name.startswith("VIDQ_"):
            monkeypatch.delenv(name, raising=False)
    yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its layer, and with ``postgres``/``s3`` when it uses those
    servers' fixtures."""
    for item in items:
        parts = Path(str(item.path)).relative_to(_TESTS).parts
        if parts and parts[0] in _LAYERS:
            item.add_marker(parts[0])
        names = getattr(item, "fixturenames", ())
        if "pg_server" in names or "pg_url" in names:
            item.add_marker("postgres")
        if "seaweed" in names:
            item.add_marker("s3")
    items[:] = _longest_files_first(items)


@pytest.hookimpl(optionalhook=True)  # xdist's hook: absent with -p no:xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` with the files that mostly wait down one lane and those that
    import torch down another (tests/support/lanes.py)."""
    if config.getoption("dist") != "loadfile":
        return None
    from tests.support.lanes import LaneScheduling

    return LaneScheduling(config, log)


def _longest_files_first(items: list[pytest.Item]) -> list[pytest.Item]:
    """The items file by file, the files likely to take longest first: those with a
    ``slow`` test, then by layer (acceptance, integration, unit), then by number of tests.
    ``make test`` hands whole files to its xdist workers in this order
    (``--dist loadfile --no-loadscope-reorder``): a long file started last would keep one
    worker busy after the others have finished."""
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(Path(str(item.path)), []).append(item)

    def weight(entry: tuple[Path, list[pytest.Item]]) -> tuple[bool, int, int]:
        path, tests = entry
        slow = any(t.get_closest_marker("slow") for t in tests)
        parts = path.relative_to(_TESTS).parts
        layer = _LAYERS[::-1].index(parts[0]) if parts[0] in _LAYERS else len(_LAYERS)
        return (not slow, layer, -len(tests))

    return [item for _, tests in sorted(by_file.items(), key=weight) for item in tests]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI, a skip is a failure (with its reason)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which must run everything: {reason}"


_SKIPPED_IN_CI: list[str] = []


def pytest_collectreport(report: pytest.CollectReport) -> None:
    """In CI, a module skipped as it is collected (``importorskip``) fails the run too."""
    if report.skipped and in_ci():
        _SKIPPED_IN_CI.append(report.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and in_ci() and not hasattr(report, "wasxfail"):
        _SKIPPED_IN_CI.append(report.nodeid)  # (also seen by xdist's controller)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _SKIPPED_IN_CI and exitstatus == pytest.ExitCode.OK:
        print(f"\nCI: {len(_SKIPPED_IN_CI)} skipped, which CI counts as failed:")
        for nodeid in _SKIPPED_IN_CI:
            print(f"  {nodeid}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- real servers for the PostgreSQL and S3 adapters (tests/support/servers.py) -------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session; each test takes a fresh database."""
    try:
        server = start_postgres()
    except ToolMissing as exc:
        missing(str(exc))
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL."""
    if not pg_server.running():
        pg_server.start()  # a fault test may have left it stopped
    return pg_server.create_database()


@pytest.fixture
def pg_head_url(pg_server: PostgresServer) -> str:
    """The URL of a fresh database at the head revision (a copy of one migrated once): what
    a first start would leave, for tests that are not about the migrations."""
    if not pg_server.running():
        pg_server.start()
    return pg_server.create_database(migrated=True)


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """SeaweedFS with its S3 gateway on loopback, for the whole session."""
    try:
        server = start_seaweed()
    except ToolMissing as exc:
        missing(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tiny_wan_models(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Path:
    """Tiny random-weight Wan 2.2 T2V and I2V pipelines with their LoRAs, in the layout
    the engine reads; read-only for the tests. Under xdist the run's workers share one
    copy: the first to get the lock writes it, the others wait and find it."""
    root = tmp_path_factory.getbasetemp()
    if hasattr(request.config, "workerinput"):  # an xdist worker (none with -p no:xdist)
        root = root.parent  # the run's folder, shared by its workers
    path = root / "tiny-wan-models"
    with (root / "tiny-wan-models.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            from tests.support.wan_models import write_tiny_models

            partial = root / "tiny-wan-models.partial"
            write_tiny_models(partial)
            partial.rename(path)
    return path


@pytest.fixture
def in_process(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, Any, list[str]], Any]:
    """``in_process(name, settings, pools)``: engine ``name`` built and loaded in this
    process (``engines.build``). What loading sets in the environment is put back after
    the test, so the processes later tests start do not inherit it."""
    from tests.support import engines  # PIL and numpy: for the tests that use it

    for key in engines.HF_ENV:
        monkeypatch.delenv(key, raising=False)
    return engines.build


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Database:
    """The job store of a test that runs on both: SQLite, then a fresh PostgreSQL database
    at the head revision (as the SQLite file a stack or server is seeded with). Chosen
    here, before the test starts a stack or a server; pass it to ``stack()`` or
    ``serve()``, which check that the running server uses it."""
    if request.param == "postgres":
        return Database("postgres", request.getfixturevalue("pg_head_url"))
    return Database("sqlite")


@pytest.fixture
def storage_kind(database: Database, request: pytest.FixtureRequest) -> dict[str, Any]:
    """The blob store beside ``database``: local storage on SQLite, S3 (SeaweedFS) on
    PostgreSQL, so both kinds get covered."""
    if database.kind != "postgres":
        return {}
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    mp = request.getfixturevalue("monkeypatch")
    for key, value in seaweed.env().items():
        mp.setenv(key, value)
    return {"storage_url": f"s3://ret-{time.monotonic_ns() % 10**9}"}
