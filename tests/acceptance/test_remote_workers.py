"""Remote workers end to end: `vidq serve` (API only) and `vidq worker --server --token`
processes whose environment and working directory hold no database URL, no storage
settings and no data dir; they reach only the API's /worker/v1 routes.

On SQLite the API stores blobs in its local folder (signed upload route of the API); on
PostgreSQL it stores them in S3 (SeaweedFS; presigned PUT and GET URLs). The faults are
in test_remote_faults.py.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
from tests.support.processes import Server, finished, serve
from tests.support.remote import remote_worker, submit, worker_token
from tests.support.wait import wait_status

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
