"""The wan engine on tiny random-weight Wan 2.2 pipelines, on the CPU, offline.

Jobs run through ``EngineProcess`` (the engine child the worker uses, one for the module);
the MP4s are decoded. The checks of one engine setting (fp8 on the CPU, the TI2V-5B base,
the preview decoder) build the engine in the test's own process (``in_process``,
tests/support/engines.py). The Lightning LoRA test checks the lightx2v key format lands in
both experts.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from tests.support.engines import run_here
from tests.support.media import probe_mp4
from tests.support.processes import ROOT
from vidq.config import WanSettings
from vidq.engines.base import Engine, EngineJob, LoraFile
from vidq.errors import EngineError
from vidq.worker.child import EngineFailed, EngineProcess

pytestmark = pytest.mark.slow  # torch on the CPU

POOLS = ["wan22-t2v", "wan22-i2v"]
InProcess = Callable[[str, WanSettings, list[str]], Engine]


def _settings(models_dir: Path, **kw: Any) -> WanSettings:
    return WanSettings(models_dir=models_dir, dtype="float32", device="cpu", **kw)


@pytest.fixture(scope="module")
def models_dir(tiny_wan_models: Path) -> Path:
    return tiny_wan_models


@pytest.fixture(scope="module")
def engine(models_dir: Path) -> Iterator[EngineProcess]:
    proc = EngineProcess("wan", _settings(models_dir), POOLS)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def _job(
    tmp: Path,
    name: str,
    family: str,
    inputs: dict[str, Any],
    loras: list[LoraFile] | None = None,
    **files: Path,
) -> EngineJob:
    return EngineJob(
        request_id=1,
        model_id=f"wan22-fast-{family}",
        family=family,
        variant="fast",
        inputs={"prompt": "a dog walks on the sea", "duration": 1, **inputs},
        files={k: str(v) for k, v in files.items()},
        output_path=str(tmp / f"{name}.mp4"),
        steps=4,
        loras=loras or [],
    )


def _run(engine: EngineProcess, job: EngineJob) -> tuple[dict[str, Any], list[list[int]]]:
    progress: list[list[int]] = []
    result = engine.run(job, lambda k, n: progress.append([k, n]), lambda: False)
    return result.meta, progress


def _frames(path: str) -> npt.NDArray[np.uint8]:
    with av.open(path) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def _image(path: Path, size: tuple[int, int], color: tuple[int, int, int]) -> Path:
    Image.new("RGB", size, color).save(path)
    return path


def test_t2v_size_frames_progress_and_seed(engine: EngineProcess, tmp_path: Path) -> None:
    job = _job(tmp_path, "a", "t2v", {"width": 128, "height": 144, "seed": 5})
    meta, progress = _run(engine, job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames, info.codec) == (128, 144, 17, "h264")
    # steps, then the VAE decode, then the MP4 encode: "k/6"
    assert progress[0] == [0, 6] and progress[-1] == [6, 6]
    assert [k for k, _ in progress] == sorted(k for k, _ in progress)
    assert meta["seed"] == 5 and meta["steps"] == 4 and len(meta["step_seconds"]) == 4
    assert set(meta["seconds"]) == {"text_encode", "prepare", "denoise", "decode", "encode"}

    _run(engine, _job(tmp_path, "b", "t2v", {"width": 128, "height": 144, "seed": 5}))
    _run(engine, _job(tmp_path, "c", "t2v", {"width": 128, "height": 144, "seed": 6}))
    a, b, c = (_frames(str(tmp_path / f"{n}.mp4")) for n in "abc")
    assert np.array_equal(a, b), "the same seed gives the same video"
    assert not np.array_equal(a, c), "another seed gives another video"

    unseeded, _ = _run(engine, _job(tmp_path, "d", "t2v", {"width": 128, "height": 128}))
    assert isinstance(unseeded["seed"], int) and 0 <= unseeded["seed"] < 2**32


def test_i2v_and_first_last_frame(engine: EngineProcess, tmp_path: Path) -> None:
    first = _image(tmp_path / "first.png", (176, 140), (220, 40, 40))
    last = _image(tmp_path / "last.png", (176, 140), (40, 40, 220))
    # No size given: the image's own, rounded to multiples of 16.
    job = _job(tmp_path, "i2v", "i2v", {"seed": 9}, data_uri=first)
    meta, _ = _run(engine, job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (176, 144, 17)
    assert meta["first_last_frame"] is False

    flf = _job(tmp_path, "flf", "i2v", {"seed": 9}, data_uri=first, second_image_uri=last)
    meta, _ = _run(engine, flf)
    assert meta["first_last_frame"] is True
    assert not np.array_equal(_frames(job.output_path), _frames(flf.output_path))

    sized = _job(tmp_path, "sized", "i2v", {"height": 128}, data_uri=first)
    _run(engine, sized)
    info = probe_mp4(Path(sized.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height) == (160, 128)  # 160.9 -> 160


def test_unreadable_image_is_a_clear_error(engine: EngineProcess, tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(EngineFailed) as err:
        _run(engine, _job(tmp_path, "bad", "i2v", {}, data_uri=bad))
    assert "data_uri: not a readable image" in err.value.message
    assert not err.value.retryable


def test_fp8_on_cpu_is_unavailable_with_a_clear_message(
    models_dir: Path, in_process: InProcess
) -> None:
    with pytest.raises(EngineError) as err:
        in_process("wan", _settings(models_dir), ["wan22-t2v-fp8"])
    assert "fp8 models need an NVIDIA GPU with compute capability 8.9" in str(err.value)
    assert "runs on cpu" in str(err.value)


def test_lightx2v_lora_is_fused_into_both_experts() -> None:
    import torch

    from tests.support.wan_models import build_pipeline, configs, lightx2v_lora
    from vidq.engines.wan_pipeline import LIGHTNING_SHIFT, load_lightning

    cfg = configs("t2v", tiny=True)
    pipe = build_pipeline("t2v", cfg)
    high, low = lightx2v_lora(cfg, seed=1), lightx2v_lora(cfg, seed=2)
    before = [
        e.blocks[1].ffn.net[0].proj.weight.detach().clone()
        for e in (pipe.transformer, pipe.transformer_2)
    ]
    load_lightning(pipe, high, low)
    after = [
        e.blocks[1].ffn.net[0].proj.weight.detach() for e in (pipe.transformer, pipe.transformer_2)
    ]
    for lora, old, new in zip((high, low), before, after, strict=True):
        up = lora["diffusion_model.blocks.1.ffn.0.lora_up.weight"].float()
        down = lora["diffusion_model.blocks.1.ffn.0.lora_down.weight"].float()
        # alpha == rank: the delta is exactly up @ down
        torch.testing.assert_close(new - old, up @ down, atol=1e-5, rtol=1e-3)
    assert pipe.scheduler.config.shift == LIGHTNING_SHIFT
    assert not any("lora" in n for n, _ in pipe.transformer_2.named_parameters())


def test_ti2v_5b_alternative_renders_on_its_grid_and_crops(
    tmp_path: Path, in_process: InProcess
) -> None:
    from tests.support.wan_models import write_tiny_ti2v

    write_tiny_ti2v(tmp_path / "models")
    engine = in_process("wan", _settings(tmp_path / "models", base="ti2v-5b"), POOLS)
    # 144 is not a multiple of TI2V-5B's 32-pixel grid: rendered at 160, cropped.
    t2v = _job(tmp_path, "t2v", "t2v", {"width": 128, "height": 144, "seed": 3})
    meta, progress = run_here(engine, t2v)
    info = probe_mp4(Path(t2v.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (128, 144, 17)
    assert meta["steps"] == 30 and meta["guidance"] == 5.0 and not meta["lightning"]
    assert progress[-1] == [32, 32]
    first = _image(tmp_path / "first.png", (128, 128), (10, 200, 10))
    i2v = _job(tmp_path, "i2v", "i2v", {"seed": 3}, data_uri=first)
    run_here(engine, i2v)
    info = probe_mp4(Path(i2v.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (128, 128, 17)
    flf = _job(tmp_path, "flf", "i2v", {}, data_uri=first, second_image_uri=first)
    with pytest.raises(EngineError, match="first\\+last frame needs the I2V-A14B"):
        run_here(engine, flf)


def test_gpu_out_of_memory_fails_the_attempt_retryably_with_a_fresh_child(
    models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from vidq.engines.wan import WanEngine
    from vidq.worker.child import describe

    engine = WanEngine(_settings(models_dir))

    def oom(*_args: Any) -> Any:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(engine, "_run", oom)
    job = _job(tmp_path, "oom", "t2v", {"width": 1280, "height": 720, "duration": 5})
    with pytest.raises(RuntimeError) as err:
        engine.run(job, lambda _k, _n: None)
    described = describe(err.value)
    assert described.retryable and described.restart
    assert "the GPU ran out of memory generating 1280x720, 81 frames" in described.message


_THIN = """
import resource, sys
from PIL import Image
from vidq.engines.wan_pipeline import _cover  # imports torch: cap what comes after it
with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
limit = size + 1536 * 1024 * 1024
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
out = _cover(Image.new("RGB", (1, 20000), (10, 200, 30)), 832, 480)
print(out.width, out.height, *out.getpixel((400, 200)))
"""


def test_a_thin_image_is_covered_in_bounded_memory() -> None:
    """Scaling a 1 x 20000 strip up whole to cover 832 x 480 would take ~41 GB; only the
    part shown is resampled (issue 12, row 2, for the wan engine too)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run([sys.executable, "-c", _THIN], env=env, capture_output=True,
                         text=True, timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["832", "480", "10", "200", "30"]


def test_previews_of_the_latents_are_published_each_due_step(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """With an interval shorter than a step, every denoising step publishes an animated
    WebP of its latents (one frame per latent frame: 17 video frames are 5), projected to
    RGB without the VAE; the run records what they cost it."""
    job = dataclasses.replace(
        _job(tmp_path, "previewed", "t2v", {"width": 160, "height": 128, "seed": 3}),
        preview_path=str(tmp_path / "preview.webp"),
        preview_interval_s=1e-6,
    )
    shown: list[tuple[int, list[Image.Image]]] = []

    def on_preview(path: Path, step: int) -> None:
        with Image.open(path) as img:
            frames = []
            for i in range(img.n_frames):
                img.seek(i)
                frames.append(img.convert("RGB").copy())
        shown.append((step, frames))

    result = engine.run(job, lambda k, n: None, lambda: False, on_preview)
    assert [step for step, _ in shown] == [1, 2, 3, 4]
    for _, frames in shown:
        assert len(frames) == 5 and frames[0].size == (20, 16)  # the latents' grid
    # the latents change from step to step, and so do their previews
    firsts = [np.asarray(frames[0]) for _, frames in shown]
    assert any(not np.array_equal(a, b) for a, b in itertools.pairwise(firsts))
    assert result.meta["previews"] == 4 and 0 < result.meta["preview_seconds"]
    # The video itself is the one made without previews (the same seed), up to the H.264
    # encoder, which is not bit-for-bit repeatable here: the same frames encoded twice in
    # one process differ in a few pixels.
    plain = _job(tmp_path, "plain", "t2v", {"width": 160, "height": 128, "seed": 3})
    engine.run(plain, lambda k, n: None, lambda: False)
    diff = np.abs(_frames(job.output_path).astype(int) - _frames(plain.output_path))
    assert diff.mean() < 0.5, diff.mean()


def test_a_configured_tiny_decoder_makes_the_previews(
    models_dir: Path, tmp_path: Path, in_process: InProcess
) -> None:
    """With VIDQ_WAN_PREVIEW_DECODER the previews come from the tiny VAE decoder (twice the
    latents' size: 40x32 for a 160x128 video) instead of the projection (20x16); a file
    that is not a decoder stops the engine from loading, saying so."""
    from safetensors.torch import save_file

    from vidq.engines.wan_decoder import PreviewDecoder

    weights = tmp_path / "taew2_1.safetensors"
    save_file(PreviewDecoder(16, 1).state_dict(), str(weights))
    engine = in_process("wan", _settings(models_dir, preview_decoder=weights), ["wan22-t2v"])
    job = dataclasses.replace(
        _job(tmp_path, "decoded", "t2v", {"width": 160, "height": 128, "seed": 3}),
        preview_path=str(tmp_path / "preview.webp"), preview_interval_s=1e-6,
    )  # fmt: skip
    sizes: list[tuple[int, int, int]] = []

    def on_preview(step: int) -> None:
        with Image.open(job.preview_path) as img:
            sizes.append((step, *img.size))

    run_here(engine, job, on_preview)
    assert sizes == [(1, 40, 32), (2, 40, 32), (3, 40, 32), (4, 40, 32)]
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    with pytest.raises(EngineError, match="VIDQ_WAN_PREVIEW_DECODER"):
        in_process("wan", _settings(models_dir, preview_decoder=tmp_path / "bad.safetensors"),
                   ["wan22-t2v"])  # fmt: skip


def _lora_file(
    path: Path, index: int = 0, scale: float = 1.0, transformer: str = "both"
) -> LoraFile:
    data = path.read_bytes()
    import hashlib

    return LoraFile(
        index=index, name=f"loras[{index}] (http://example.test/{path.name})", path=str(path),
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), scale=scale,
        transformer=transformer,
    )  # fmt: skip


def _random_lora(path: Path, seed: int, family: str = "t2v") -> Path:
    """A random LoRA for the tiny experts, in the lightx2v key format diffusers converts
    (``diffusion_model.blocks.N.self_attn.q.lora_down.weight`` ...), strong enough to
    change the frames."""
    from safetensors.torch import save_file

    from tests.support.wan_models import configs, lightx2v_lora

    save_file(lightx2v_lora(configs(family, tiny=True), scale=1.0, seed=seed), str(path))
    return path


def test_a_lora_applies_for_its_job_only(engine: EngineProcess, tmp_path: Path) -> None:
    lora = _random_lora(tmp_path / "style.safetensors", seed=21)
    size = {"width": 128, "height": 128, "seed": 17}

    def frames(name: str, loras: list[LoraFile]) -> tuple[npt.NDArray[np.uint8], dict[str, Any]]:
        meta, _ = _run(engine, _job(tmp_path, name, "t2v", size, loras))
        return _frames(str(tmp_path / f"{name}.mp4")), meta

    base, _ = frames("base", [])
    zero, zero_meta = frames("zero", [_lora_file(lora, scale=0.0)])
    full, full_meta = frames("full", [_lora_file(lora, scale=1.0)])
    high, _ = frames("high", [_lora_file(lora, scale=1.0, transformer="high")])
    after, after_meta = frames("after", [])
    assert np.array_equal(zero, base), "scale 0 gives the frames of no LoRA"
    assert not np.array_equal(full, base), "scale 1 changes the frames"
    assert not np.array_equal(high, full), "the high-noise expert alone differs from both"
    assert np.array_equal(after, base), "the next job without a LoRA runs the base weights"
    assert full_meta["loras"] == [
        {"sha256": _lora_file(lora).sha256, "bytes": lora.stat().st_size, "scale": 1.0,
         "transformer": "both"}
    ]  # fmt: skip
    assert "loras" not in after_meta and "lora_load" not in after_meta["seconds"]
    for meta in (zero_meta, full_meta):
        print(
            f"LoRA on the tiny Wan T2V pipeline (2 experts): load "
            f"{meta['seconds']['lora_load'] * 1000:.1f} ms, unload "
            f"{meta['seconds']['lora_unload'] * 1000:.1f} ms"
        )


def test_a_file_that_is_not_a_lora_for_wan_fails_the_job_naming_it(
    engine: EngineProcess, tmp_path: Path
) -> None:
    import torch
    from safetensors.torch import save_file

    wrong_keys = tmp_path / "wrong.safetensors"
    save_file({"unet.down.0.weight": torch.zeros(4, 4)}, str(wrong_keys))
    wrong_shape = tmp_path / "shape.safetensors"
    save_file(
        {
            "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 7),
            "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(7, 4),
        },
        str(wrong_shape),
    )
    not_safetensors = tmp_path / "notes.safetensors"
    not_safetensors.write_bytes(b"PK\x03\x04 this is a zip, not a LoRA")
    size = {"width": 128, "height": 128, "seed": 17}
    _run(engine, _job(tmp_path, "before", "t2v", size))
    for i, path in enumerate((wrong_keys, wrong_shape, not_safetensors)):
        good = _lora_file(_random_lora(tmp_path / "good.safetensors", seed=3), index=0)
        bad = _lora_file(path, index=1)
        with pytest.raises(EngineFailed) as err:
            _run(engine, _job(tmp_path, f"bad{i}", "t2v", size, [good, bad]))
        assert err.value.error_type == "InvalidLora" and not err.value.retryable
        assert f"loras[1] (http://example.test/{path.name})" in err.value.message
    # the good LoRA, loaded before the bad one, was removed with it
    _run(engine, _job(tmp_path, "after", "t2v", size))
    before, after = (_frames(str(tmp_path / f"{n}.mp4")) for n in ("before", "after"))
    assert np.array_equal(before, after)


def test_a_peft_trained_lora_in_diffusers_key_format_applies(
    engine: EngineProcess, tmp_path: Path
) -> None:
    """A LoRA as diffusers' own training scripts save it (peft's state dict, keys
    ``transformer.blocks.N.attn1.to_q.lora_A.weight``), made here on the tiny transformer."""
    import torch
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, get_peft_model_state_dict
    from safetensors.torch import save_file

    from tests.support.wan_models import configs

    torch.manual_seed(4)
    model = WanTransformer3DModel(**configs("t2v", tiny=True).transformer)
    model.add_adapter(
        LoraConfig(r=4, lora_alpha=4, init_lora_weights=False,
                   target_modules=["to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj"])
    )  # fmt: skip
    state = {
        f"transformer.{k}": v.contiguous() for k, v in get_peft_model_state_dict(model).items()
    }
    assert any(k.endswith("lora_A.weight") for k in state)
    save_file(state, str(tmp_path / "peft.safetensors"))
    size = {"width": 128, "height": 128, "seed": 17}
    _run(engine, _job(tmp_path, "base", "t2v", size))
    lora = _lora_file(tmp_path / "peft.safetensors", transformer="high")
    meta, _ = _run(engine, _job(tmp_path, "peft", "t2v", size, [lora]))
    _run(engine, _job(tmp_path, "after", "t2v", size))
    base, peft, after = (_frames(str(tmp_path / f"{n}.mp4")) for n in ("base", "peft", "after"))
    assert not np.array_equal(peft, base) and np.array_equal(after, base)
    assert meta["loras"][0]["transformer"] == "high"
