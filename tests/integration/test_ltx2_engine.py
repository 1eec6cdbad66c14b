"""The ltx2 engine on a tiny random-weight LTX-2 pipeline, on the CPU, offline.

Jobs run through ``EngineProcess`` (the engine child the worker uses, one for the module);
the other weights folder is checked on an engine built in the test's process
(``in_process``, tests/support/engines.py). The MP4s are decoded with PyAV: an H.264 video
stream of the pipeline's size and 8k+1 frames, and an AAC audio stream as long as the video.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from tests.support.engines import run_here
from tests.support.media import picture, probe_mp4
from vidq.config import LTX2Settings
from vidq.engines.base import Engine, EngineJob
from vidq.worker.child import EngineFailed, EngineProcess

pytestmark = pytest.mark.slow  # torch on the CPU

POOLS = ["ltx2-t2v", "ltx2-i2v"]


def _settings(models_dir: Path) -> LTX2Settings:
    return LTX2Settings(models_dir=models_dir, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.support.ltx2_models import write_tiny_ltx2

    path = tmp_path_factory.mktemp("tiny-ltx2-models")
    write_tiny_ltx2(path)
    return path


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Iterator[EngineProcess]:
    proc = EngineProcess("ltx2", _settings(models_dir), POOLS)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _job(tmp: Path, name: str, family: str, inputs: dict[str, Any], **files: Path) -> EngineJob:
    return EngineJob(
        request_id=1,
        model_id=f"ltx2-{family}",
        family=family,
        variant="",
        inputs={"prompt": "a cat runs on the sea", "duration": 1, "seed": 7, **inputs},
        files={k: str(v) for k, v in files.items()},
        output_path=str(tmp / f"{name}.mp4"),
        steps=8,
    )


def _run(engine: EngineProcess, job: EngineJob) -> tuple[dict[str, Any], list[list[int]]]:
    progress: list[list[int]] = []
    result = engine.run(job, lambda k, n: progress.append([k, n]), lambda: False)
    return result.meta, progress


def _decode(path: str) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """Every video frame (T x H x W x 3) and the audio samples (channels x samples)."""
    with av.open(path) as c:
        video = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])
    with av.open(path) as c:
        audio = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=-1)
    return video, audio.astype(np.float32)


def _check_av(path: str, tmp: Path, size: tuple[int, int], frames: int) -> None:
    info = probe_mp4(Path(path).read_bytes(), tmp)
    assert (info.width, info.height, info.frames) == (*size, frames)
    assert info.codec == "h264"
    assert info.audio_codec == "aac"
    assert info.audio_duration is not None
    video_s = frames / 24
    # The causal audio VAE drops up to one latent step (4 mel frames of 10 ms); AAC pads
    # its last 1024-sample frame.
    assert video_s - 0.06 <= info.audio_duration <= video_s + 0.06, (info, video_s)


def test_t2v_makes_h264_video_with_aac_sound(engine: EngineProcess, tmp_path: Path) -> None:
    job = _job(tmp_path, "t2v", "t2v", {"width": 100, "height": 60})
    meta, progress = _run(engine, job)
    # sides rounded to the pipeline's multiple of 32; 1 s at 24 fps -> 8k+1 = 25 frames
    _check_av(job.output_path, tmp_path, (96, 64), 25)
    assert meta["frames"] == 25 and meta["fps"] == 24.0
    assert meta["audio_sample_rate"] == 24000
    assert meta["seed"] == 7
    assert progress[0][0] == 0 and progress[-1][0] == progress[-1][1]
    assert [k for k, _ in progress] == sorted(k for k, _ in progress)
    _, audio = _decode(job.output_path)
    assert audio.shape[0] == 2  # stereo
    assert float(np.abs(audio).max()) > 1e-4  # the generated waveform, not silence


def test_the_seed_reproduces_and_another_seed_differs(
    engine: EngineProcess, tmp_path: Path
) -> None:
    first = _job(tmp_path, "a", "t2v", {"width": 64, "height": 64})
    again = _job(tmp_path, "b", "t2v", {"width": 64, "height": 64})
    other = _job(tmp_path, "c", "t2v", {"width": 64, "height": 64, "seed": 8})
    for job in (first, again, other):
        _run(engine, job)
    v1, a1 = _decode(first.output_path)
    v2, a2 = _decode(again.output_path)
    v3, a3 = _decode(other.output_path)
    # x264 does not encode these noise-like frames bit for bit the same twice (its threads),
    # so the same seed is compared as "the same picture", another seed as "another one".
    same, different = _mean_diff(v1, v2), _mean_diff(v1, v3)
    assert same < 2.0 and different > 5 * same + 5.0, (same, different)
    assert a1.shape == a2.shape and float(np.abs(a1 - a2).max()) < 1e-3
    assert float(np.abs(a1 - a3).max()) > 1e-2


def _mean_diff(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_i2v_starts_from_the_image_with_sound(engine: EngineProcess, tmp_path: Path) -> None:
    image = tmp_path / "first.png"
    picture(160, 96, seed=3).save(image)
    job = _job(tmp_path, "i2v", "i2v", {"duration": 2, "height": 96}, data_uri=image)
    meta, _ = _run(engine, job)
    # the image's 5:3 aspect at height 96 -> 160 x 96; 2 s at 24 fps -> 49 frames
    _check_av(job.output_path, tmp_path, (160, 96), 49)
    assert meta["frames"] == 49
    # the image conditions the video: another image, same seed and prompt, another video
    other = tmp_path / "other.png"
    picture(160, 96, seed=4).save(other)
    again = _job(tmp_path, "i2v-other", "i2v", {"duration": 2, "height": 96}, data_uri=other)
    _run(engine, again)
    v1, _ = _decode(job.output_path)
    v2, _ = _decode(again.output_path)
    assert _mean_diff(v1, v2) > 5.0


def test_i2v_without_its_image_is_a_clear_error(engine: EngineProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(EngineFailed) as err:
        _run(engine, _job(tmp_path, "bad", "i2v", {}, data_uri=bad))
    assert "data_uri: not a readable image" in err.value.message
    assert not err.value.retryable


def test_a_missing_weights_folder_is_unavailable_at_load(tmp_path: Path) -> None:
    proc = EngineProcess("ltx2", _settings(tmp_path), POOLS)
    with pytest.raises(EngineFailed) as err:
        proc.start()
    assert err.value.error_type == "EngineUnavailable"
    assert "weights for LTX-2" in err.value.message
    assert f"missing: {tmp_path / 'LTX-2' / 'model_index.json'}" in err.value.message
    assert "missing: " + str(tmp_path / "LTX-2" / "transformer") in err.value.message


def test_no_models_dir_is_unavailable(tmp_path: Path) -> None:
    proc = EngineProcess("ltx2", LTX2Settings(device="cpu"), POOLS)
    with pytest.raises(EngineFailed, match="the ltx2 engine needs model weights"):
        proc.start()


def test_the_weights_setting_names_another_folder(
    tmp_path: Path, in_process: Callable[[str, LTX2Settings, list[str]], Engine]
) -> None:
    from tests.support.ltx2_models import write_tiny_ltx2

    write_tiny_ltx2(tmp_path, "LTX-2-finetune")
    settings = LTX2Settings(
        models_dir=tmp_path, weights="LTX-2-finetune", dtype="float32", device="cpu"
    )
    job = _job(tmp_path, "ft", "t2v", {"width": 64, "height": 64})
    meta, _ = run_here(in_process("ltx2", settings, POOLS), job)
    assert meta["model"] == "LTX-2 (LTX-2-finetune)"
    _check_av(job.output_path, tmp_path, (64, 64), 25)


def test_a_weights_folder_outside_the_models_dir_is_refused(tmp_path: Path) -> None:
    settings = LTX2Settings(models_dir=tmp_path, weights="../elsewhere", device="cpu")
    proc = EngineProcess("ltx2", settings, POOLS)
    with pytest.raises(EngineFailed, match="must be a folder name under the models dir"):
        proc.start()
