"""Remote workers end to end: `vidq serve` (API only) and `vidq worker --server --token`
processes whose environment and working directory hold no database URL, no storage
settings and no data dir; they reach only the API's /worker/v1 routes.

On SQLite the API stores blobs in its local folder (signed upload route of the API); on
PostgreSQL it stores them in S3 (SeaweedFS; presigned PUT and GET URLs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, Server, probe_mp4, result_mp4, run_cli, serve, wait_status
from tests.media import b64, encode_image, moving_mp4, picture, tone, wav_bytes

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}


@pytest.fixture
def api(tmp_path: Path, e2e_backend: str, request: pytest.FixtureRequest) -> Iterator[Server]:
    """An API with no in-process workers: SQLite + local storage, or PostgreSQL + S3."""
    settings: dict[str, Any] = {"lease_seconds": 3, "reaper_interval": 0.5}
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID",)}
    if e2e_backend == "postgres":
        seaweed = request.getfixturevalue("seaweed")
        for key, value in seaweed.env().items():
            os.environ[key] = value
        settings["storage_url"] = f"s3://remote-{time.monotonic_ns() % 10**9}"
    try:
        with serve(tmp_path / "api", workers=0, **settings) as server:
            yield server
    finally:
        for key in list(os.environ):
            if key.startswith("AWS_") and key not in saved:
                del os.environ[key]


def worker_token(server: Server, *args: str) -> str:
    out = run_cli(server.env, "token", "create", "--user", "gpu-box", "--worker", *args)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def remote_worker(
    server: Server, token: str, cwd: Path, *args: str, **settings: str
) -> subprocess.Popen[bytes]:
    """`vidq worker --server --token` with no VIDQ_*/AWS_* variable but ``settings``, in an
    empty working directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDQ_", "AWS_", "PG"))}
    env["PYTHONPATH"] = str(ROOT / "src")
    env["VIDQ_LOG_LEVEL"] = "INFO"
    env.update({f"VIDQ_{k.upper()}": v for k, v in settings.items()})
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "vidq", "worker", "--server", server.url, "--token", token, *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def finished(proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """Wait for a worker to exit 0; its log."""
    _, err = proc.communicate(timeout=timeout)
    log = err.decode(errors="replace")
    assert proc.returncode == 0, log
    return log


def submit(client: httpx.Client, model: str, body: dict[str, Any]) -> str:
    r = client.post(f"/queue/{model}", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def test_every_family_on_a_remote_worker(api: Server, tmp_path: Path, e2e_backend: str) -> None:
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
    token = worker_token(api)
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


@pytest.fixture
def sqlite_only(e2e_backend: str) -> None:
    if e2e_backend != "sqlite":
        pytest.skip("one backend is enough here: the protocol is the same on both")


def test_killed_remote_worker_job_is_retried_and_completes_once(
    sqlite_only: None, api: Server, tmp_path: Path
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


def test_stopped_remote_worker_loses_the_job_cleanly(
    sqlite_only: None, api: Server, tmp_path: Path
) -> None:
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
    time.sleep(4)  # the woken worker's heartbeat is refused; it drops the attempt
    first.send_signal(signal.SIGTERM)
    log = finished(first, timeout=60)
    assert "lease lost" in log, log
    status = wait_status(client, T2V, rid, {"COMPLETED"})
    assert status["statusMessages"]["result_uri"].endswith("_00002.mp4")
    blobs = sorted(p.name for p in (api.data_dir / "blobs").rglob(f"{rid}_0_*"))
    assert len(blobs) == 1 and blobs[0].endswith("_00002.mp4"), blobs


def test_remote_worker_keeps_its_job_through_an_api_restart(
    sqlite_only: None, tmp_path: Path
) -> None:
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
