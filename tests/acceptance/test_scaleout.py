"""The scale-out shape: `vidq worker` processes on a real PostgreSQL and a real S3 server
(SeaweedFS) beside an API with no workers of its own (the in-process stack; `vidq serve`
processes on PostgreSQL and S3 run in test_faults.py's fleet), driven over HTTP: jobs
landing in S3 from a worker on another process, readiness, a database outage (the API's
503s, a worker riding it out) and SIGTERM's drain; `vidq db upgrade` on PostgreSQL."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.processes import run_cli, vidq_env
from tests.support.servers import PostgresServer, SeaweedServer
from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import eventually, holds, wait_status
from vidq.store.migrate import head_revision

MODEL = "wan22-fast-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}

pytestmark = [pytest.mark.postgres, pytest.mark.s3]


@pytest.fixture
def aws_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in seaweed.env().items():
        monkeypatch.setenv(key, value)


@pytest.fixture
def cluster(tmp_path: Path, pg_head_url: str, aws_env: None) -> Iterator[Stack]:
    """An API with no workers of its own on PostgreSQL + S3."""
    bucket = f"e2e-{time.monotonic_ns() % 10**9}"
    with stack(
        tmp_path / "api",
        workers=0,
        database=Database("postgres", pg_head_url),
        storage_url=f"s3://{bucket}",
        lease_seconds=3,
        reaper_interval=0.5,
    ) as server:
        yield server


def test_db_upgrade_on_postgres(tmp_path: Path, pg_url: str) -> None:
    env = vidq_env(tmp_path, database_url=pg_url)
    out = run_cli(env, "db", "upgrade")
    assert out.returncode == 0, out.stderr
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    assert row is not None and row[0] == head_revision()
    assert run_cli(env, "db", "upgrade").returncode == 0  # idempotent


def test_job_runs_on_a_remote_worker_and_lands_in_s3(cluster: Stack, tmp_path: Path) -> None:
    client = cluster.client(cluster.token("alice"))
    r = client.post(f"/queue/{MODEL}", json=SMALL)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    assert wait_status(client, MODEL, rid, {"IN_QUEUE"})["queue_position"] == 0
    worker = cluster.worker_process("--burst")
    assert worker.wait(120) == 0
    status = wait_status(client, MODEL, rid, {"COMPLETED", "FAILED"})
    assert status["status"] == "COMPLETED", status
    uri = status["statusMessages"]["result_uri"]
    assert uri.startswith("s3://") and f"/outputs/free/{rid}_0_" in uri
    info = probe_mp4(result_mp4(client, MODEL, rid), tmp_path)
    assert (info.width, info.height, info.codec) == (128, 128, "h264")
    # Binary output mode: a presigned URL served by the S3 server itself.
    r = client.post(f"/queue/{MODEL}", json=SMALL, headers={"x-pipelet-output": "binary"})
    rid2 = r.json()["request_id"]
    assert cluster.worker_process("--burst").wait(120) == 0
    wait_status(client, MODEL, rid2, {"COMPLETED"})
    body = client.get(f"/queue/{MODEL}/requests/{rid2}").json()
    url = body["video"]["data_uri"]
    assert url.startswith("http://127.0.0.1:") and "X-Amz-Signature" in url
    assert probe_mp4(httpx.get(url, timeout=30).content, tmp_path).width == 128
    # Other users see 404.
    other = cluster.client(cluster.token("bob"))
    assert other.get(f"/queue/{MODEL}/requests/{rid}/status").status_code == 404


def test_ready_health_and_admin_queues(cluster: Stack) -> None:
    assert httpx.get(f"{cluster.url}/health").json() == {"status": "ok"}
    ready = httpx.get(f"{cluster.url}/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok", "storage": "ok"}
    user = cluster.client(cluster.token("alice"))
    for _ in range(3):
        assert user.post(f"/queue/{MODEL}", json=SMALL).status_code == 200
    assert user.get("/admin/queues").status_code == 404  # not an admin
    admin = cluster.client(cluster.admin_token)
    pools = admin.get("/admin/queues").json()["pools"]
    assert pools["wan22-t2v"] == {
        **{"queued": 3, "workers": 0, "running": 0, "completed": 0, "failed": 0},
        **{"paused": False},
        **{"median_wait_s": None, "median_run_s": None},
    }
    worker = cluster.worker_process("--burst")
    assert worker.wait(120) == 0
    queues = admin.get("/admin/queues").json()
    pool = queues["pools"]["wan22-t2v"]
    assert (pool["queued"], pool["workers"], pool["running"], pool["completed"]) == (0, 1, 0, 3)
    assert pool["median_wait_s"] > 0 and pool["median_run_s"] > 0
    assert queues["window_s"] == 3600 and queues["failures"] == []


def test_database_outage_is_503_then_recovers(
    cluster: Stack, pg_server: PostgresServer, tmp_path: Path
) -> None:
    client = cluster.client(cluster.token("alice"))
    rid = client.post(f"/queue/{MODEL}", json=SMALL).json()["request_id"]
    fresh = httpx.Client(base_url=cluster.url, timeout=30)
    pg_server.stop()
    try:
        ready = httpx.get(f"{cluster.url}/ready", timeout=30)
        assert ready.status_code == 503 and ready.headers["retry-after"]
        assert ready.json()["checks"]["storage"] == "ok"
        assert ready.json()["checks"]["database"] != "ok"
        for call in (
            lambda: client.post(f"/queue/{MODEL}", json=SMALL),
            lambda: client.get(f"/queue/{MODEL}/requests/{rid}/status"),
            lambda: client.put(f"/queue/{MODEL}/requests/{rid}/cancel"),
            # An uncached token makes the auth dependency itself hit the database.
            lambda: fresh.get(
                f"/queue/{MODEL}/requests/{rid}/status",
                headers={"Authorization": "Bearer vq_unknown"},
            ),
        ):
            r = call()
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] and "detail" in r.json()
    finally:
        pg_server.start()
    eventually(  # the pool reconnects within seconds
        lambda: httpx.get(f"{cluster.url}/ready", timeout=30).status_code == 200,
        15,
        interval=0.2,
        what="the API to recover",
    )
    assert client.get(f"/queue/{MODEL}/requests/{rid}/status").status_code == 200
    assert cluster.worker_process("--burst").wait(120) == 0
    assert wait_status(client, MODEL, rid, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    with psycopg.connect(cluster.env["VIDQ_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT attempt FROM jobs WHERE id = %s", (int(rid),)).fetchone()
    assert row == (1,)


def test_worker_rides_out_a_database_outage(
    cluster: Stack, pg_server: PostgresServer, tmp_path: Path
) -> None:
    client = cluster.client(cluster.token("alice"))
    worker = cluster.worker_process(poll_interval=0.2)
    admin = cluster.client(cluster.admin_token)
    try:
        # connected and idle: it has registered with the database
        eventually(lambda: admin.get("/admin/workers").json()["workers"], 30, what="the worker")
        pg_server.stop()
        holds(lambda: worker.poll() is None, 3, what="the worker to ride out the outage")
        pg_server.start()

        def submitted() -> httpx.Response | None:
            r = client.post(f"/queue/{MODEL}", json=SMALL)
            assert r.status_code in (200, 503), r.text
            return r if r.status_code == 200 else None

        r = eventually(submitted, 60, interval=0.2, what="a submit once the database is back")
        rid = r.json()["request_id"]
        assert wait_status(client, MODEL, rid, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0


def test_sigterm_finishes_the_current_job(cluster: Stack) -> None:
    client = cluster.client(cluster.token("alice"))
    rid = client.post(f"/queue/{MODEL}", json=SMALL).json()["request_id"]
    worker = cluster.worker_process(preview_step_seconds=0.5)
    wait_status(client, MODEL, rid, {"IN_PROGRESS"})
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(120) == 0
    assert client.get(f"/queue/{MODEL}/requests/{rid}/status").json()["status"] == "COMPLETED"


def test_sigterm_past_the_drain_budget_releases_the_job(cluster: Stack) -> None:
    client = cluster.client(cluster.token("alice"))
    rid = client.post(f"/queue/{MODEL}", json=SMALL).json()["request_id"]
    worker = cluster.worker_process(preview_step_seconds=2, drain_seconds=0.5)
    wait_status(client, MODEL, rid, {"IN_PROGRESS"})
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    status = client.get(f"/queue/{MODEL}/requests/{rid}/status").json()
    assert status["status"] == "IN_QUEUE" and status["queue_position"] == 0
    # Released, not failed: the next worker runs it, and no attempt was spent: as many are
    # left as after a first attempt (the released one was given back; the run that
    # completed has a number, and an output key, of its own).
    assert cluster.worker_process("--burst").wait(120) == 0
    assert wait_status(client, MODEL, rid, {"COMPLETED", "FAILED"})["status"] == "COMPLETED"
    with psycopg.connect(cluster.env["VIDQ_DATABASE_URL"]) as conn:
        row = conn.execute(
            "SELECT max_attempts - attempt, attempt FROM jobs WHERE id = %s", (int(rid),)
        ).fetchone()
    assert row == (2, 2)
