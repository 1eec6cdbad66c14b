"""Remote workers in trouble, end to end on SQLite and local storage (the protocol is the
same on PostgreSQL and S3: test_remote_workers.py): killed mid-job, stopped past the
lease, the API restarted mid-job, a complete whose answer is lost."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import Server, finished, run_cli, serve
from tests.support.remote import dropping_proxy, remote_worker, submit, worker_token
from tests.support.wait import wait_status

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One API (no in-process workers) for the module: 3 s leases, a quick reaper."""
    data = tmp_path_factory.mktemp("remote-faults") / "api"
    with serve(data, workers=0, lease_seconds=3, reaper_interval=0.5) as server:
        yield server


def test_killed_remote_worker_job_is_retried_and_completes_once(
    api: Server, tmp_path: Path
) -> None:
    client = api.client(api.token("alice"))
    token = worker_token(api)
    rid = submit(client, T2V, SMALL)
    first = remote_worker(api, token, tmp_path / "w1", preview_step_seconds="0.5")
    wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_status(client, T2V, rid, {"IN_QUEUE"}, timeout=30)  # the API's reaper retries it
    second = remote_worker(api, token, tmp_path / "w2", "--burst")
    finished(second, timeout=120)
    status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"}, timeout=60)
    assert status["status"] == "COMPLETED", status
    assert status["statusMessages"]["result_uri"].endswith("_00002.mp4")  # the second attempt
    blobs = sorted(p.name for p in (api.data_dir / "blobs").rglob(f"{rid}_0_*"))
    assert len(blobs) == 1 and blobs[0].endswith("_00002.mp4"), blobs


def test_stopped_remote_worker_loses_the_job_cleanly(api: Server, tmp_path: Path) -> None:
    """SIGSTOPped past its lease: the job goes to another worker; the first one, woken,
    is refused (its heartbeat is 409), keeps no result and leaves no object behind."""
    client = api.client(api.token("alice"))
    token = worker_token(api)
    rid = submit(client, T2V, SMALL)
    first = remote_worker(api, token, tmp_path / "w1", preview_step_seconds="0.4")
    wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
    first.send_signal(signal.SIGSTOP)
    try:
        wait_status(client, T2V, rid, {"IN_QUEUE"}, timeout=30)  # its lease (3 s) expired
        finished(remote_worker(api, token, tmp_path / "w2", "--burst"))
        assert wait_status(client, T2V, rid, {"COMPLETED"}, timeout=60)
    finally:
        first.send_signal(signal.SIGCONT)
    time.sleep(2)  # the woken worker's heartbeat (every 1 s) is refused; it drops the attempt
    first.send_signal(signal.SIGTERM)
    log = finished(first, timeout=60)
    assert "lease lost" in log, log
    status = wait_status(client, T2V, rid, {"COMPLETED"})
    assert status["statusMessages"]["result_uri"].endswith("_00002.mp4")
    blobs = sorted(p.name for p in (api.data_dir / "blobs").rglob(f"{rid}_0_*"))
    assert len(blobs) == 1 and blobs[0].endswith("_00002.mp4"), blobs


def test_remote_worker_keeps_its_job_through_an_api_restart(tmp_path: Path) -> None:
    with serve(tmp_path / "api", workers=0, lease_seconds=20, reaper_interval=0.5) as api:
        client = api.client(api.token("alice"))
        token = worker_token(api)
        rid = submit(client, T2V, SMALL)
        worker = remote_worker(api, token, tmp_path / "w", "--burst", preview_step_seconds="0.5")
        wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
        port = api.url.rsplit(":", 1)[1]
        api.stop()  # the API goes away mid-job...
        restarted = subprocess.Popen(  # ... and comes back on the same address
            [sys.executable, "-m", "vidq", "serve", "--port", port, "--workers", "0"],
            env=api.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            log = finished(worker, timeout=120)
            assert "unreachable" in log or "retrying" in log, log  # it did see the outage
            status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"}, timeout=60)
            assert status["status"] == "COMPLETED", status
            assert status["statusMessages"]["result_uri"].endswith("_00001.mp4")  # same attempt
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)


def test_a_lost_complete_answer_completes_once(api: Server, tmp_path: Path) -> None:
    client = api.client(api.token("alice"))
    rid = submit(client, T2V, SMALL)
    with dropping_proxy(api.url, "/complete") as (url, seen):
        log = finished(remote_worker(url, worker_token(api), tmp_path / "w", "--burst"))
    completes = [p for p in seen if p.endswith("/complete")]
    assert completes == [f"/worker/v1/jobs/{rid}/complete"] * 2, seen  # answer lost, retried
    assert "API call failed (RemoteProtocolError), retrying" in log, log
    status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"})
    assert status["status"] == "COMPLETED", status
    assert status["statusMessages"]["result_uri"].endswith("_00001.mp4")
    blobs = sorted(p.name for p in (api.data_dir / "blobs").rglob(f"{rid}_0_*"))
    assert len(blobs) == 1, blobs


def test_worker_tokens_and_refused_starts(api: Server, tmp_path: Path) -> None:
    """`token create --worker --pools`, and a remote worker that may not start: a pool its
    token does not have, a user token."""
    out = run_cli(api.env, "token", "create", "--user", "gpu-3", "--worker", "--pools", "nope")
    assert out.returncode == 2 and "unknown pools: nope" in out.stderr
    out = run_cli(api.env, "token", "create", "--user", "gpu-3", "--pools", "wan22-t2v")
    assert out.returncode == 2 and "only worker tokens have pools" in out.stderr
    token = worker_token(api, "--pools", "wan22-t2v")
    listed = run_cli(api.env, "token", "list").stdout
    assert "gpu-box\t100\tworker(pools=wan22-t2v)\tactive" in listed, listed
    assert token not in listed
    refused = remote_worker(api, token, tmp_path / "a", "--burst", "--pools", "wan22-s2v")
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "may not claim from wan22-s2v" in err.decode()
    user = remote_worker(api, api.token("alice"), tmp_path / "c", "--burst")
    _, err = user.communicate(timeout=60)
    assert user.returncode == 2 and "not a worker token" in err.decode(), err
