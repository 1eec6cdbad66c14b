"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.servers import PostgresServer, SeaweedServer, start_postgres, start_seaweed


@pytest.fixture(autouse=True)
def _clean_vidq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's VIDQ_* settings."""
    for name in list(os.environ):
        if name.startswith("VIDQ_"):
            monkeypatch.delenv(name, raising=False)
    yield


# --- real servers for the PostgreSQL and S3 adapters (tests/support/servers.py) ---------------


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the whole session; each test takes a fresh database."""
    server = start_postgres()
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


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """SeaweedFS with its S3 gateway on loopback, for the whole session."""
    server = start_seaweed()
    try:
        yield server
    finally:
        server.stop()
