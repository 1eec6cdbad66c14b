"""LTX-2 end to end over the API: the models file's opt-in ``ltx2-t2v`` / ``ltx2-i2v`` ids,
served by a worker whose pools name them with the ltx2 engine on tiny random weights
(CPU), give MP4s with an H.264 video stream and an AAC audio stream: video with sound in
one pass. A default worker leaves those pools alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import b64, encode_image, picture, probe_mp4, result_mp4
from tests.support.stack import Stack, stack
from tests.support.wait import holds, wait_status

pytestmark = pytest.mark.slow  # torch on the CPU


@pytest.fixture(scope="module")
def ltx2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.support.ltx2_models import write_tiny_ltx2

    models = tmp_path_factory.mktemp("ltx2-models")
    write_tiny_ltx2(models)
    with stack(
        tmp_path_factory.mktemp("ltx2") / "data",
        pools="ltx2-t2v,ltx2-i2v", engines="ltx2-t2v=ltx2,ltx2-i2v=ltx2",
        models_dir=models, ltx2_dtype="float32", ltx2_device="cpu",
    ) as s:  # fmt: skip
        yield s


def test_text_and_image_to_video_with_sound(ltx2: Stack, tmp_path: Path) -> None:
    alice = ltx2.client(ltx2.token("alice"))
    t2v = alice.post(
        "/queue/ltx2-t2v",
        json={"prompt": "waves on a beach", "width": 256, "height": 256, "duration": 1,
              "seed": 7},
    )  # fmt: skip
    assert t2v.status_code == 200, t2v.text
    png = b64(encode_image(picture(320, 200), "PNG"))
    i2v = alice.post(
        "/queue/ltx2-i2v",
        json={"prompt": "the waves roll in", "data_uri": png, "width": 256, "height": 256,
              "duration": 1},
    )  # fmt: skip
    assert i2v.status_code == 200, i2v.text
    for model, rid in (("ltx2-t2v", t2v.json()["request_id"]),
                       ("ltx2-i2v", i2v.json()["request_id"])):  # fmt: skip
        done = wait_status(alice, model, rid, {"COMPLETED", "FAILED"}, timeout=300)
        assert done["status"] == "COMPLETED", done
        info = probe_mp4(result_mp4(alice, model, rid), tmp_path)
        assert info.codec == "h264" and info.audio_codec == "aac", info
        assert (info.width, info.height) == (256, 256)
        assert info.frames == 25  # 24 fps, 8k+1 frames: 1 s -> 25
        assert info.audio_duration is not None and 0.9 < info.audio_duration < 1.2


def test_a_side_off_the_models_grid_is_refused_naming_it(ltx2: Stack) -> None:
    alice = ltx2.client(ltx2.token("alice"))
    r = alice.post("/queue/ltx2-t2v", json={"prompt": "x", "width": 272, "height": 256})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "width"]


def test_a_default_worker_does_not_take_ltx2_jobs(tmp_path: Path) -> None:
    with stack(tmp_path / "data") as s:
        alice = s.client(s.token("alice"))
        rid = alice.post(
            "/queue/ltx2-t2v", json={"prompt": "x", "width": 256, "height": 256, "duration": 1}
        ).json()["request_id"]

        def queued() -> bool:
            body = alice.get(f"/queue/ltx2-t2v/requests/{rid}/status").json()
            return bool(body["status"] == "IN_QUEUE")

        holds(queued, 2.0, what="the ltx2 job to stay queued (its pool is opt-in)")
