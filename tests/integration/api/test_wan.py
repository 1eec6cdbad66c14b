"""The wan engine behind the real service: `vidq serve` with tiny random-weight Wan 2.2
pipelines saved in diffusers layout, driven over HTTP; the MP4 is decoded."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.processes import run_cli, serve, vidq_env
from tests.support.wait import wait_status

WAN_POOLS = "wan22-t2v=wan,wan22-i2v=wan"


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vidq.engines.wan_configs import write_tiny_models

    path = tmp_path_factory.mktemp("models")
    write_tiny_models(path)
    return path


def test_t2v_over_http_makes_the_requested_video_with_the_seed(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = {"engines": WAN_POOLS, "models_dir": models_dir, "wan_dtype": "float32"}
    with serve(tmp_path / "data", pools="wan22-t2v", **settings) as server:
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

    from vidq.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'data' / 'vidq.db'}")
    try:
        job = store.get(int(rid))
        assert job is not None
        meta = job.result_meta
    finally:
        store.close()
    assert meta["engine"] == "wan" and meta["seed"] == 1234 and meta["steps"] == 4
    assert meta["lightning"] is True and len(meta["step_seconds"]) == 4


def test_models_check_reports_present_and_missing(tmp_path: Path, models_dir: Path) -> None:
    env = vidq_env(tmp_path / "data", models_dir=models_dir)
    out = run_cli(env, "models", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wan22-fast-t2v: ok" in out.stdout and "wan22-fast-i2v-fp8: ok" in out.stdout

    empty = tmp_path / "empty"
    (empty / "Wan2.2-T2V-A14B-Diffusers" / "vae").mkdir(parents=True)
    (empty / "Wan2.2-T2V-A14B-Diffusers" / "vae" / "config.json").write_text("{}")
    out = run_cli(vidq_env(tmp_path / "data", models_dir=empty), "models", "check")
    assert out.returncode == 1
    assert "wan22-fast-t2v: MISSING" in out.stdout
    assert f"present: {empty / 'Wan2.2-T2V-A14B-Diffusers' / 'vae'}" in out.stdout
    assert f"missing: {empty / 'Wan2.2-T2V-A14B-Diffusers' / 'transformer_2'}" in out.stdout
    assert "high_noise_model.safetensors" in out.stdout


def test_worker_refuses_to_start_when_weights_are_missing(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    env = vidq_env(tmp_path / "data", engines=WAN_POOLS, models_dir=empty)
    out = run_cli(env, "worker", "--burst", "--pools", "wan22-i2v")
    assert out.returncode == 2, out.stderr
    assert "refusing to start" in out.stderr and "wan22-fast-i2v" in out.stderr
    assert str(empty / "Wan2.2-I2V-A14B-Diffusers" / "model_index.json") in out.stderr

    env = vidq_env(tmp_path / "data", engines=WAN_POOLS)
    out = run_cli(env, "worker", "--burst", "--pools", "wan22-t2v")
    assert out.returncode == 2 and "VIDQ_MODELS_DIR is not set" in out.stderr
