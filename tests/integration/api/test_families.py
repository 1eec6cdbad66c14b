"""Every family end to end through `vidq serve` and the preview engine, with real media
made in the test, outputs decoded with PyAV."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.media import (
    audio_of,
    b64,
    cover,
    diff,
    encode_image,
    frames_of,
    moving_mp4,
    mp3_bytes,
    picture,
    probe_mp4,
    result_mp4,
    tone,
    wav_bytes,
)
from tests.support.stack import Stack, stack
from tests.support.wait import wait_status


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("families") / "data") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Stack) -> Iterator[httpx.Client]:
    with server.client(server.token("alice")) as c:
        yield c


def generate(client: httpx.Client, model: str, body: dict[str, Any]) -> tuple[str, bytes]:
    r = client.post(f"/queue/{model}", json=body)
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    status = wait_status(client, model, rid, {"COMPLETED", "FAILED"}, timeout=120)
    assert status["status"] == "COMPLETED", status
    tier = "premium" if model.endswith("-premium") else "pro" if model.endswith("-pro") else "free"
    assert f"/outputs/{tier}/" in status["statusMessages"]["result_uri"]
    assert status["statusMessages"]["result_uri"].split("/")[-1].startswith(f"{rid}_0_")
    return rid, result_mp4(client, model, rid)


def test_i2v_portrait_png_sizes_per_spec_and_starts_on_the_image(
    client: httpx.Client, tmp_path: Path
) -> None:
    img = picture(180, 320, seed=1)  # 9:16 portrait, like a selfie
    png = encode_image(img, "PNG")
    base = {"prompt": "she turns", "data_uri": b64(png), "duration": 1, "height": 256}
    _, best = generate(client, "wan22-fast-i2v", {**base, "use_best_resolution": True})
    _, plain = generate(client, "wan22-fast-i2v", base)
    info_best, info_plain = probe_mp4(best, tmp_path), probe_mp4(plain, tmp_path)
    # Short side = 256 with use_best_resolution; else height = 256 (144 -> 128, multiple of 32).
    assert (info_best.width, info_best.height, info_best.frames) == (256, 448, 17)
    assert (info_plain.width, info_plain.height, info_plain.frames) == (128, 256, 17)
    assert info_best.codec == "h264" and info_best.pix_fmt == "yuv420p"
    assert info_best.audio_codec is None
    frames = frames_of(best, tmp_path)
    assert diff(frames[0], cover(img, 256, 448)) < 4  # the first frame is the image
    assert diff(frames[-1], cover(img, 256, 448)) > 8  # and then it moves


def test_i2v_first_and_last_frame_from_jpeg_landscape(client: httpx.Client, tmp_path: Path) -> None:
    first, last = picture(320, 180, seed=2), picture(320, 180, seed=3)
    body = {
        "prompt": "day to night",
        "data_uri": b64(encode_image(first, "JPEG")),
        "second_image_uri": "data:image/jpeg;base64," + b64(encode_image(last, "JPEG")),
        "duration": 2,
        "min_height": 128,
    }
    _, video = generate(client, "wan22-fast-i2v-pro", body)
    info = probe_mp4(video, tmp_path)
    assert (info.width, info.height, info.frames) == (224, 128, 33)  # 227.6 -> 224
    frames = frames_of(video, tmp_path)
    want_first, want_last = cover(first, 224, 128), cover(last, 224, 128)
    assert diff(frames[0], want_first) < 5 and diff(frames[0], want_last) > 15
    assert diff(frames[-1], want_last) < 5 and diff(frames[-1], want_first) > 15
    middle = frames[16]
    assert diff(middle, want_first) > 5 and diff(middle, want_last) > 5


def test_i2v_new_resolution_sets_the_aspect(client: httpx.Client, tmp_path: Path) -> None:
    img = picture(200, 120, seed=4)
    body = {
        "prompt": "square",
        "data_uri": "data:image/webp;base64," + b64(encode_image(img, "PNG")),  # claim ignored
        "duration": 1,
        "height": 192,
        "new_resolution": "640x640",
    }
    _, video = generate(client, "wan22-fast-i2v", body)
    info = probe_mp4(video, tmp_path)
    assert (info.width, info.height) == (192, 192)
    assert diff(frames_of(video, tmp_path)[0], cover(img, 192, 192)) < 5


def test_s2v_wav_follows_the_audio_and_moves_with_its_loudness(
    client: httpx.Client, tmp_path: Path
) -> None:
    img = picture(160, 160, seed=5)
    signal = tone(2.0, silent_until=1.0)  # one second of silence, one of a tone
    body = {
        "prompt": "she sings",
        "data_uri": b64(encode_image(img, "PNG")),
        "audio_uri": b64(wav_bytes(signal)),
        "height": 128,
    }
    _, video = generate(client, "wan22-s2v-fast", body)
    info = probe_mp4(video, tmp_path)
    # No duration: the audio's 2 s decide (16*2+1 frames).
    assert (info.width, info.height, info.frames) == (128, 128, 33)
    assert info.audio_codec == "aac"
    assert info.audio_duration is not None and abs(info.audio_duration - 2.0) < 0.15
    frames = frames_of(video, tmp_path)
    still = cover(img, 128, 128)
    quiet = [diff(f, still) for f in frames[:15]]
    loud = [diff(f, still) for f in frames[18:]]
    assert max(quiet) < 4 < min(loud)
    sound = audio_of(video, tmp_path)
    rms_quiet = float(np.sqrt((sound[: 44100 * 9 // 10] ** 2).mean()))
    rms_loud = float(np.sqrt((sound[44100 * 11 // 10 : 44100 * 19 // 10] ** 2).mean()))
    assert rms_quiet < 0.01 and rms_loud > 0.2


def test_s2v_mp3_is_trimmed_to_duration(client: httpx.Client, tmp_path: Path) -> None:
    body = {
        "prompt": "talks",
        "data_uri": b64(encode_image(picture(240, 160, seed=6), "JPEG")),
        "audio_uri": "data:audio/mpeg;base64," + b64(mp3_bytes(tone(3.0))),
        "duration": 1,
        "height": 128,
        "use_best_resolution": True,
    }
    _, video = generate(client, "wan22-s2v-pro", body)
    info = probe_mp4(video, tmp_path)
    assert (info.width, info.height, info.frames) == (192, 128, 17)
    assert info.audio_codec == "aac"
    assert info.audio_duration is not None and abs(info.audio_duration - 17 / 16) < 0.15


def test_foley_keeps_the_frames_and_adds_sound(client: httpx.Client, tmp_path: Path) -> None:
    source = moving_mp4(tmp_path, 128, 96, 24, 12)
    _, video = generate(client, "hunyuan-foley", {"prompt": "footsteps", "data_uri": b64(source)})
    info = probe_mp4(video, tmp_path)
    assert (info.width, info.height, info.frames) == (128, 96, 24)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.audio_codec == "aac"
    assert info.audio_duration is not None and abs(info.audio_duration - 2.0) < 0.15
    ins, outs = frames_of(source, tmp_path), frames_of(video, tmp_path)
    assert max(diff(a, b) for a, b in zip(ins, outs, strict=True)) < 4
    sound = audio_of(video, tmp_path)
    assert float(np.sqrt((sound**2).mean())) > 0.02


def test_foley_background_music_adds_a_bed(client: httpx.Client, tmp_path: Path) -> None:
    still = b64(moving_mp4(tmp_path, 96, 64, 16, 8, still=True))
    levels = []
    for music in (False, True):
        body = {"prompt": "room", "data_uri": still, "background_music": music}
        _, video = generate(client, "hunyuan-foley-pro", body)
        sound = audio_of(video, tmp_path)
        assert abs(len(sound) / 44100 - 2.0) < 0.15
        levels.append(float(np.sqrt((sound**2).mean())))
    # A still video makes no effects; the music bed is clearly audible.
    assert levels[0] < 0.005 and levels[1] > 0.05


def test_media_inputs_are_stored_as_blobs_not_in_the_job_row(
    server: Stack, client: httpx.Client
) -> None:
    png = encode_image(picture(64, 64, seed=9), "PNG")
    r = client.post(
        "/queue/wan22-fast-i2v", json={"prompt": "x", "data_uri": b64(png), "duration": 1}
    )
    assert r.status_code == 200, r.text
    rid = int(r.json()["request_id"])
    with sqlite3.connect(server.data_dir / "vidq.db") as db:
        (raw,) = db.execute("SELECT inputs FROM jobs WHERE id = ?", (rid,)).fetchone()
    inputs = json.loads(raw)
    key = inputs["_blobs"]["data_uri"]
    assert inputs["data_uri"] == f"blob://{key}" and key.startswith("inputs/alice/")
    assert len(raw) < 2000
    assert (server.data_dir / "blobs" / "vidq" / key).read_bytes() == png
    assert inputs["_plan"]["width"] == 480 and inputs["_plan"]["height"] == 480
