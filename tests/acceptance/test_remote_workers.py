"""Remote workers as processes: `vidq worker --server --token` processes whose
environment and working directory hold no database URL, no storage settings and no data
dir; they reach only the API's /worker/v1 routes. The API is the in-process stack (no
workers of its own), except where the API itself must restart.

- Every family on a remote worker, on SQLite with the API's local blobs (the signed upload
  route) and on PostgreSQL with S3 (SeaweedFS; presigned PUT and GET URLs).
- In trouble (SQLite and local storage; the protocol is the same on both): killed mid-job,
  stopped past the lease, the API restarted mid-job, a complete whose answer is lost, and
  tokens that may not start a worker.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_calls import submit
from tests.support.media import (
    b64,
    encode_image,
    moving_mp4,
    picture,
    probe_mp4,
    result_mp4,
    tone,
    wav_bytes,
)
from tests.support.processes import finished, run_cli, serve
from tests.support.remote import dropping_proxy, remote_worker, worker_token
from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import eventually, wait_status

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}


@pytest.fixture
def api(
    tmp_path: Path, database: Database, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Stack]:  # fmt: skip
    """An API with no workers of its own: SQLite + local storage, or PostgreSQL + S3."""
    settings: dict[str, Any] = {"lease_seconds": 3, "reaper_interval": 0.5}
    if database.kind == "postgres":
        seaweed = request.getfixturevalue("seaweed")
        for key, value in seaweed.env().items():
            monkeypatch.setenv(key, value)
        settings["storage_url"] = f"s3://remote-{time.monotonic_ns() % 10**9}"
    with stack(tmp_path / "api", workers=0, database=database, **settings) as server:
        yield server


def test_every_family_on_a_remote_worker(api: Stack, tmp_path: Path) -> None:
    client = api.client(api.token("alice"))
    image = b64(encode_image(picture(160, 160, seed=5), "PNG"))
    clip = b64(moving_mp4(tmp_path, 128, 96, 16, 16))
    jobs = {
        T2V: SMALL,
        "wan22-fast-i2v-pro": {"prompt": "turns", "data_uri": image, "duration": 1, "height": 128},
        "wan22-s2v-fast": {
            "prompt": "sings", "data_uri": image, "audio_uri": b64(wav_bytes(tone(1.0))),
            "height": 128,
        },
        "hunyuan-foley": {"prompt": "steps", "data_uri": clip},
    }  # fmt: skip
    rids = {model: submit(client, model, body) for model, body in jobs.items()}
    token = api.token("gpu-box", worker=True)
    cwd = tmp_path / "gpu-box"
    log = finished(remote_worker(api, token, cwd, "--burst"))
    assert token not in log and "signature=" not in log and "X-Amz-Signature" not in log
    assert list(cwd.iterdir()) == []  # no data dir, no database, nothing written here
    for model, rid in rids.items():
        status = wait_status(client, model, rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", (model, status)
        info = probe_mp4(result_mp4(client, model, rid), tmp_path)
        assert info.codec == "h264", model
        if model != "hunyuan-foley":
            assert info.height == 128, model
        else:
            assert (info.width, info.height, info.frames) == (128, 96, 16)
        if model in ("wan22-s2v-fast", "hunyuan-foley"):
            assert info.audio_codec == "aac", model
        uri = status["statusMessages"]["result_uri"]
        assert f"/{rid}_0_" in uri and uri.endswith("_00001.mp4")
    # The admin sees the remote worker with its pools' engines.
    admin = api.client(api.admin_token)
    workers = admin.get("/admin/workers").json()["workers"]
    assert any(w["engines"].get("wan22-t2v") == "preview" for w in workers), workers


# -- remote workers in trouble --------------------------------------------------------------
T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One API for the faults (the in-process stack, no workers of its own; SQLite and
    local storage): 3 s leases, a quick reaper."""
    data = tmp_path_factory.mktemp("remote-faults") / "api"
    with stack(data, workers=0, lease_seconds=3, reaper_interval=0.5) as server:
        yield server


def test_killed_remote_worker_job_is_retried_and_completes_once(
    shared: Stack, tmp_path: Path
) -> None:
    client = shared.client(shared.token("alice"))
    token = shared.token("gpu-box", worker=True)
    rid = submit(client, T2V, SMALL)
    first = remote_worker(shared, token, tmp_path / "w1", preview_step_seconds="0.5")
    wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    wait_status(client, T2V, rid, {"IN_QUEUE"}, timeout=30)  # the API's reaper retries it
    second = remote_worker(shared, token, tmp_path / "w2", "--burst")
    finished(second, timeout=120)
    status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"}, timeout=60)
    assert status["status"] == "COMPLETED", status
    assert status["statusMessages"]["result_uri"].endswith("_00002.mp4")  # the second attempt
    blobs = sorted(p.name for p in (shared.data_dir / "blobs").rglob(f"{rid}_0_*"))
    # the winning attempt's video and its poster frame, nothing of the other attempt
    assert len(blobs) == 2 and blobs[0].endswith("_00002.mp4"), blobs
    assert blobs[1].endswith("_00002.poster.jpg"), blobs


def test_stopped_remote_worker_loses_the_job_cleanly(shared: Stack, tmp_path: Path) -> None:
    """SIGSTOPped past its lease: the job goes to another worker; the first one, woken,
    is refused (its heartbeat is 409), keeps no result and leaves no object behind."""
    client = shared.client(shared.token("alice"))
    token = shared.token("gpu-box", worker=True)
    rid = submit(client, T2V, SMALL)
    first_log = tmp_path / "w1.log"
    first = remote_worker(shared, token, tmp_path / "w1", preview_step_seconds="0.4", log=first_log)
    wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
    first.send_signal(signal.SIGSTOP)
    try:
        wait_status(client, T2V, rid, {"IN_QUEUE"}, timeout=30)  # its lease (3 s) expired
        finished(remote_worker(shared, token, tmp_path / "w2", "--burst"))
        assert wait_status(client, T2V, rid, {"COMPLETED"}, timeout=60)
    finally:
        first.send_signal(signal.SIGCONT)
    # the woken worker's heartbeat (every 1 s) is refused; it drops the attempt and says so
    eventually(lambda: "lease lost" in first_log.read_text(), 30, what="the woken worker")
    first.send_signal(signal.SIGTERM)
    finished(first, timeout=60)
    log = first_log.read_text()
    assert "lease lost" in log, log
    status = wait_status(client, T2V, rid, {"COMPLETED"})
    assert status["statusMessages"]["result_uri"].endswith("_00002.mp4")
    blobs = sorted(p.name for p in (shared.data_dir / "blobs").rglob(f"{rid}_0_*"))
    # the winning attempt's video and its poster frame, nothing of the other attempt
    assert len(blobs) == 2 and blobs[0].endswith("_00002.mp4"), blobs
    assert blobs[1].endswith("_00002.poster.jpg"), blobs


def test_remote_worker_keeps_its_job_through_an_api_restart(tmp_path: Path) -> None:
    """`vidq serve` processes: the API goes away mid-job and comes back on its address."""
    with serve(tmp_path / "api", workers=0, lease_seconds=20, reaper_interval=0.5) as api:
        client = api.client(api.token("alice"))
        token = worker_token(api)
        rid = submit(client, T2V, SMALL)
        worker_log = tmp_path / "w.log"
        worker = remote_worker(
            api, token, tmp_path / "w", "--burst", preview_step_seconds="0.5", log=worker_log
        )
        wait_status(client, T2V, rid, {"IN_PROGRESS"}, timeout=60)
        port = api.url.rsplit(":", 1)[1]
        api.stop()  # the API goes away mid-job, until the worker has met the outage...
        saw = lambda: re.search(r"unreachable|retrying", worker_log.read_text())  # noqa: E731
        eventually(saw, 60, what="the worker to meet the outage")
        restarted = subprocess.Popen(  # ... and comes back on the same address
            [sys.executable, "-m", "vidq", "serve", "--port", port, "--workers", "0"],
            env=api.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            finished(worker, timeout=120)
            status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"}, timeout=60)
            assert status["status"] == "COMPLETED", status
            assert status["statusMessages"]["result_uri"].endswith("_00001.mp4")  # same attempt
        finally:
            restarted.send_signal(signal.SIGTERM)
            restarted.wait(30)


def test_a_lost_complete_answer_completes_once(shared: Stack, tmp_path: Path) -> None:
    client = shared.client(shared.token("alice"))
    rid = submit(client, T2V, SMALL)
    with dropping_proxy(shared.url, "/complete") as (url, seen):
        log = finished(
            remote_worker(url, shared.token("gpu-box", worker=True), tmp_path / "w", "--burst")
        )
    completes = [p for p in seen if p.endswith("/complete")]
    assert completes == [f"/worker/v1/jobs/{rid}/complete"] * 2, seen  # answer lost, retried
    assert "API call failed (RemoteProtocolError), retrying" in log, log
    status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"})
    assert status["status"] == "COMPLETED", status
    assert status["statusMessages"]["result_uri"].endswith("_00001.mp4")
    blobs = sorted(p.name for p in (shared.data_dir / "blobs").rglob(f"{rid}_0_*"))
    assert len(blobs) == 2 and blobs[1].endswith(".poster.jpg"), blobs  # the video, its poster


def test_worker_tokens_and_refused_starts(shared: Stack, tmp_path: Path) -> None:
    """`token create --worker --pools`, and a remote worker that may not start: a pool its
    token does not have, a user token."""
    out = run_cli(shared.env, "token", "create", "--user", "gpu-3", "--worker", "--pools", "nope")
    assert out.returncode == 2 and "unknown pools: nope" in out.stderr
    out = run_cli(shared.env, "token", "create", "--user", "gpu-3", "--pools", "wan22-t2v")
    assert out.returncode == 2 and "only worker tokens have pools" in out.stderr
    token = worker_token(shared, "--pools", "wan22-t2v")
    listed = run_cli(shared.env, "token", "list").stdout
    assert "gpu-box\t100\tworker(pools=wan22-t2v)\tactive" in listed, listed
    assert token not in listed
    refused = remote_worker(shared, token, tmp_path / "a", "--burst", "--pools", "wan22-s2v")
    _, err = refused.communicate(timeout=60)
    assert refused.returncode == 2 and "may not claim from wan22-s2v" in err.decode()
    user = remote_worker(shared, shared.token("alice"), tmp_path / "c", "--burst")
    _, err = user.communicate(timeout=60)
    assert user.returncode == 2 and "not a worker token" in err.decode(), err
