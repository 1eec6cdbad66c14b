"""The wan engine behind the service: the in-process stack with tiny random-weight Wan 2.2
pipelines saved in diffusers layout, driven over HTTP; the MP4 is decoded. `vidq models
check` and a worker refusing to start without weights: tests/acceptance/test_cli_server.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.stack import stack
from tests.support.wait import wait_status

pytestmark = pytest.mark.slow  # torch on the CPU

WAN_POOLS = "wan22-t2v=wan,wan22-i2v=wan"


@pytest.fixture(scope="module")
def models_dir(tiny_wan_models: Path) -> Path:
    return tiny_wan_models


def test_t2v_over_http_makes_the_requested_video_with_the_seed(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = {"engines": WAN_POOLS, "models_dir": models_dir, "wan_dtype": "float32"}
    with stack(tmp_path / "data", pools="wan22-t2v", **settings) as server:
        client = server.client(server.token("alice"))
        body = {"prompt": "a cat runs on grass", "width": 160, "height": 128, "duration": 1}
        r = client.post("/queue/wan22-fast-t2v", json={**body, "seed": 1234})
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"}, 180)
        assert status["status"] == "COMPLETED", status
        info = probe_mp4(result_mp4(client, "wan22-fast-t2v", rid), tmp_path)
        assert (info.width, info.height, info.frames) == (160, 128, 17)
        assert info.codec == "h264"
        job = server.store.get(int(rid))
        assert job is not None
        meta = job.result_meta
    assert meta["engine"] == "wan" and meta["seed"] == 1234 and meta["steps"] == 4
    assert meta["lightning"] is True and len(meta["step_seconds"]) == 4
