"""The wan engine behind the service: the in-process stack with tiny random-weight Wan 2.2
pipelines saved in diffusers layout, driven over HTTP; the MP4 is decoded. `vidq models
check` and a worker refusing to start without weights: tests/acceptance/test_cli_server.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.stack import Stack, stack
from tests.support.wait import wait_status

pytestmark = pytest.mark.slow  # torch on the CPU

WAN_POOLS = "wan22-t2v=wan,wan22-i2v=wan"


@pytest.fixture(scope="module")
def wan(tiny_wan_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One stack for the module (its worker loads the tiny pipelines once), allowed to
    fetch from loopback over http (the local-testing fetch settings) for the LoRA test."""
    settings = {
        "engines": WAN_POOLS, "models_dir": tiny_wan_models, "wan_dtype": "float32",
        "fetch_allow_http": "true", "fetch_allow_networks": "127.0.0.1/32",
    }  # fmt: skip
    data = tmp_path_factory.mktemp("wan") / "data"
    with stack(data, pools="wan22-t2v", **settings) as server:
        yield server


def test_t2v_over_http_makes_the_requested_video_with_the_seed(tmp_path: Path, wan: Stack) -> None:
    server = wan
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


def test_loras_over_http_are_fetched_applied_and_a_bad_one_fails_once(
    tmp_path: Path, wan: Stack
) -> None:
    """A request's LoRA is served by a loopback server (reachable only with the
    local-testing fetch settings), fetched by the worker, applied by the wan engine; a
    file that is not a LoRA for Wan fails its job at the first attempt, naming it."""
    import hashlib

    from safetensors.torch import save_file

    from tests.support.loopback import loopback_http
    from tests.support.wan_models import configs, lightx2v_lora

    save_file(lightx2v_lora(configs("t2v", tiny=True), scale=1.0, seed=5), tmp_path / "s.bin")
    lora = (tmp_path / "s.bin").read_bytes()
    routes = {"/style.safetensors": (200, {}, lora), "/notes.txt": (200, {}, b"hello" * 50)}
    server = wan
    with loopback_http(routes) as (base, hits):
        client = server.client(server.token("alice"))
        body = {"prompt": "a cat", "width": 128, "height": 128, "duration": 1, "seed": 3}
        good = [{"path": f"{base}/style.safetensors", "scale": 0.8, "transformer": "low"}]
        ok = client.post("/queue/wan22-fast-t2v", json={**body, "loras": good})
        bad = client.post(
            "/queue/wan22-fast-t2v", json={**body, "loras": [{"path": f"{base}/notes.txt"}]}
        )
        assert ok.status_code == bad.status_code == 200, (ok.text, bad.text)
        done = wait_status(
            client, "wan22-fast-t2v", ok.json()["request_id"], {"COMPLETED", "FAILED"}, 180
        )
        assert done["status"] == "COMPLETED", done
        result = client.get(f"/queue/wan22-fast-t2v/requests/{ok.json()['request_id']}").json()
        assert result["loras"] == [
            {"sha256": hashlib.sha256(lora).hexdigest(), "bytes": len(lora), "scale": 0.8,
             "transformer": "low"}
        ]  # fmt: skip
        failed = wait_status(
            client, "wan22-fast-t2v", bad.json()["request_id"], {"COMPLETED", "FAILED"}, 180
        )
        assert failed["status"] == "FAILED"
        job = server.store.get(int(bad.json()["request_id"]))
        assert job is not None and job.attempt == 1 and job.error_type == "InvalidLora"
        assert job.error is not None and f"loras[0] ({base}/notes.txt)" in job.error
        assert "not a safetensors file" in job.error
        fal = client.get(f"/queue/vidq/wan22-fast-t2v/requests/{bad.json()['request_id']}")
        assert fal.status_code == 422 and fal.json()["error_type"] == "InvalidLora", fal.text
        assert "/notes.txt" in hits
