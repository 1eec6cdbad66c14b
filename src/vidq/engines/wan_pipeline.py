"""Loading and running Wan 2.2 diffusers pipelines: the parts the engine and the GPU
benchmark share.

- ``load_pipeline``: a pipeline from a local diffusers folder (never the network), with the
  Lightning LoRAs fused into both experts, optional fp8 experts, attention backend, VAE tiling.
- ``generate``: one video, timed per phase (text encoding, denoising steps, VAE decode),
  reporting progress after each step and after the decode.
- ``job_loras``: a request's LoRAs as peft adapters on the experts they name, for one
  job; removed when it ends, however it ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image

from vidq.engines.base import NO_PREVIEWS, LoraFile, Previews
from vidq.engines.wan_decoder import PreviewDecoder
from vidq.engines.wan_layout import WanWeights, missing_message
from vidq.engines.wan_preview import LATENT_FPS, latent_rgb
from vidq.errors import EngineUnavailable, InvalidLora
from vidq.media.sizing import crop_for

LIGHTNING_SHIFT = 5.0  # the flow shift the lightx2v 4-step LoRAs were distilled with
ATTENTION_BACKENDS = ("native", "flash", "sage")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

Pipe = Any  # WanPipeline | WanImageToVideoPipeline (diffusers is untyped)
StepReport = Callable[[int], None]  # steps done so far


@dataclasses.dataclass(frozen=True, slots=True)
class PipelineOptions:
    """How a pipeline is placed and tuned on this worker."""

    device: str = "auto"  # "auto": cuda when available, else cpu
    dtype: str = "bfloat16"
    attention: str = "native"  # native (PyTorch SDPA) | flash | sage
    vae_tiling: bool = False
    offload: bool = False  # diffusers model CPU offload, for GPUs too small for the model

    def torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)

    def torch_dtype(self) -> torch.dtype:
        if self.dtype not in DTYPES:
            raise EngineUnavailable(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}")
        return DTYPES[self.dtype]


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """One video to generate, already sized."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    steps: int
    guidance: float
    seed: int
    image: Image.Image | None = None  # first frame (I2V)
    last_image: Image.Image | None = None  # last frame (first+last frame)


@dataclasses.dataclass(frozen=True, slots=True)
class Generated:
    """Frames (T x H x W x 3, uint8) and where the time went."""

    frames: npt.NDArray[np.uint8]
    text_encode_s: float
    prepare_s: float  # from the pipeline call to the first step (I2V: encodes the image)
    step_s: list[float]
    decode_s: float


def offline() -> None:
    """Make every Hugging Face library refuse the network in this process."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["DIFFUSERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    tlog.set_verbosity_error()  # type: ignore[no-untyped-call]
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()  # type: ignore[no-untyped-call]


def load_pipeline(
    weights: WanWeights, options: PipelineOptions, *, fp8: bool, model_ids: list[str]
) -> Pipe:
    """Load ``weights`` from disk and prepare them (see ``prepare_pipeline``)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    if weights.missing():
        raise EngineUnavailable(missing_message(model_ids, weights))
    device = options.torch_device()
    if fp8:
        check_fp8(device)
    cls = WanImageToVideoPipeline if weights.family == "i2v" else WanPipeline
    pipe = cls.from_pretrained(
        str(weights.pipeline_dir), dtype=options.torch_dtype(), local_files_only=True
    )
    lora = None
    if weights.lora_high is not None and weights.lora_low is not None:
        lora = (weights.lora_high, weights.lora_low)
    return prepare_pipeline(pipe, options, lora=lora, fp8=fp8)


def prepare_pipeline(
    pipe: Pipe,
    options: PipelineOptions,
    *,
    lora: tuple[Path | dict[str, torch.Tensor], Path | dict[str, torch.Tensor]] | None,
    fp8: bool,
) -> Pipe:
    """Fuse the Lightning LoRAs (high-noise expert, low-noise expert), quantize the experts to
    fp8 if asked, set the attention backend and VAE tiling, and move to the device."""
    device = options.torch_device()
    if lora is not None:
        load_lightning(pipe, *lora)
    if fp8:
        quantize_fp8(pipe, device)
    set_attention(pipe, options.attention)
    if options.vae_tiling:
        pipe.vae.enable_tiling()
    pipe.set_progress_bar_config(disable=True)
    if options.offload and device.type == "cuda":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe


def load_lightning(
    pipe: Pipe, high: Path | dict[str, torch.Tensor], low: Path | dict[str, torch.Tensor]
) -> None:
    """Load the lightx2v 4-step LoRAs into both experts (the low-noise one with
    ``load_into_transformer_2=True``), fuse them, and switch to the Euler flow scheduler
    with the shift they were distilled at. Fusing keeps the steps as fast as the base model."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def source(x: Path | dict[str, torch.Tensor]) -> str | dict[str, torch.Tensor]:
        return str(x) if isinstance(x, Path) else dict(x)

    try:
        pipe.load_lora_weights(source(high), adapter_name="lightning")
        if getattr(pipe, "transformer_2", None) is not None:
            pipe.load_lora_weights(
                source(low), adapter_name="lightning_2", load_into_transformer_2=True
            )
    except (ValueError, KeyError, RuntimeError) as exc:
        raise EngineUnavailable(f"cannot load the Lightning LoRA: {exc}") from exc
    for expert in _experts(pipe):
        expert.fuse_lora(lora_scale=1.0)
        expert.unload_lora()
    pipe.scheduler = FlowMatchEulerDiscreteScheduler(shift=LIGHTNING_SHIFT)


JOB_ADAPTER = "vidq_job_"  # the prefix of a job's LoRA adapters


@dataclasses.dataclass
class LoraTiming:
    """Seconds a job's LoRAs took to load (read, check, inject, set scales) and unload."""

    load_s: float = 0.0
    unload_s: float = 0.0


@contextlib.contextmanager
def job_loras(pipe: Pipe, loras: Sequence[LoraFile]) -> Iterator[LoraTiming]:
    """Apply ``loras`` to ``pipe`` for the block: each one a peft adapter at its scale on
    the expert it names (``high``: ``transformer``, ``low``: ``transformer_2``, ``both``;
    a single-expert pipeline takes every LoRA on its one transformer). ``InvalidLora``
    naming the LoRA for a file that is not a safetensors LoRA fitting these experts. The
    adapters are removed when the block ends, raising or not, so the next job runs the
    base weights."""
    timing = LoraTiming()
    if not loras:
        yield timing
        return
    started = time.perf_counter()
    try:
        scales: dict[int, tuple[Any, list[str], list[float]]] = {}
        for lora in loras:
            state = _read_lora(lora)
            for expert, into_2 in _targets(pipe, lora.transformer):
                name = f"{JOB_ADAPTER}{lora.index}_{'low' if into_2 else 'high'}"
                _load_adapter(pipe, expert, lora, state, name, into_2)
                _, names, weights = scales.setdefault(id(expert), (expert, [], []))
                names.append(name)
                weights.append(lora.scale)
        for expert, names, weights in scales.values():
            expert.set_adapters(names, weights=weights)
        timing.load_s = time.perf_counter() - started
        yield timing
    finally:
        unloading = time.perf_counter()
        for expert in _experts(pipe):
            drop_job_adapters(expert)
        timing.unload_s = time.perf_counter() - unloading


def _read_lora(lora: LoraFile) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(lora.path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidLora(f"{lora.name}: not a safetensors file ({exc})") from exc
    if not state:
        raise InvalidLora(f"{lora.name}: the safetensors file holds no tensors")
    return state


def _targets(pipe: Pipe, transformer: str) -> list[tuple[Any, bool]]:
    """(expert, whether it is ``transformer_2``) for a LoRA's ``transformer`` field."""
    second = getattr(pipe, "transformer_2", None)
    if second is None or pipe.transformer is None:
        return [(pipe.transformer if pipe.transformer is not None else second, second is not None)]
    return {
        "high": [(pipe.transformer, False)],
        "low": [(second, True)],
        "both": [(pipe.transformer, False), (second, True)],
    }.get(transformer, [(pipe.transformer, False)])


def _load_adapter(
    pipe: Pipe,
    expert: Any,
    lora: LoraFile,
    state: dict[str, torch.Tensor],
    name: str,
    into_2: bool,
) -> None:
    """Load ``state`` into ``expert`` as adapter ``name``; InvalidLora if the keys or
    shapes do not fit (diffusers loads nothing, and says so only in a log line, when no
    key names one of the expert's layers: the adapter's absence tells)."""
    try:
        pipe.load_lora_weights(dict(state), adapter_name=name, load_into_transformer_2=into_2)
    except (ValueError, KeyError, RuntimeError, TypeError, AttributeError, IndexError) as exc:
        raise InvalidLora(
            f"{lora.name}: not a LoRA for this Wan model ({type(exc).__name__}: {str(exc)[:300]})"
        ) from exc
    if name not in (getattr(expert, "peft_config", None) or {}):
        raise InvalidLora(f"{lora.name}: not a LoRA for this Wan model (no key fits its layers)")


def drop_job_adapters(expert: Any) -> None:
    """Remove the job adapters of ``expert``; with no other adapter left, its peft layers
    too, so that it is the plain model again."""
    loaded = list(getattr(expert, "peft_config", None) or {})
    ours = [n for n in loaded if n.startswith(JOB_ADAPTER)]
    if not loaded:
        return
    if len(ours) == len(loaded):
        expert.unload_lora()
    else:
        expert.delete_adapters(ours)


def _experts(pipe: Pipe) -> list[Any]:
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def check_fp8(device: torch.device) -> None:
    """fp8 matmuls need an NVIDIA GPU of compute capability 8.9+ (Ada, Hopper, Blackwell)."""
    if device.type != "cuda":
        raise EngineUnavailable(
            f"fp8 models need an NVIDIA GPU with compute capability 8.9 or newer (Ada, Hopper); "
            f"this worker runs on {device.type}. Serve the -fp8 pools from a GPU worker, or "
            f"the bf16 pools (wan22-t2v, wan22-i2v) here."
        )
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        name = torch.cuda.get_device_name(device)
        raise EngineUnavailable(
            f"fp8 models need compute capability 8.9 or newer; {name} has {major}.{minor}"
        )
    try:
        import torchao  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailable("fp8 models need torchao: pip install 'vidq[fp8]'") from exc


def quantize_fp8(pipe: Pipe, device: torch.device) -> None:
    """Quantize both experts' linear layers to float8 (dynamic activations, per-row weights)
    with torchao; the text encoder and VAE stay in bf16."""
    check_fp8(device)
    from torchao.quantization import (  # type: ignore[import-not-found,unused-ignore]
        Float8DynamicActivationFloat8WeightConfig,
        PerRow,
        quantize_,
    )

    for expert in _experts(pipe):
        expert.to(device)
        quantize_(expert, Float8DynamicActivationFloat8WeightConfig(granularity=PerRow()))


def set_attention(pipe: Pipe, backend: str) -> None:
    if backend not in ATTENTION_BACKENDS:
        known = ", ".join(ATTENTION_BACKENDS)
        raise EngineUnavailable(f"unknown attention backend {backend!r}; known: {known}")
    if backend == "native":
        return
    try:
        for expert in _experts(pipe):
            expert.set_attention_backend(backend)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise EngineUnavailable(f"attention backend {backend!r} is not usable here: {exc}") from exc


def size_multiple(pipe: Pipe) -> int:
    """Sides must be multiples of this: VAE downsampling times the transformer patch."""
    expert = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
    return int(pipe.vae_scale_factor_spatial) * int(expert.config.patch_size[1])


def generate(
    pipe: Pipe,
    req: Request,
    on_step: StepReport,
    previews: Previews = NO_PREVIEWS,
    preview_decoder: PreviewDecoder | None = None,
) -> Generated:
    """Run text encoding, the denoising loop and the VAE decode for ``req``; after a step,
    show the latents so far on ``previews`` when one is due (``wan_preview``: projected, or
    through ``preview_decoder``)."""
    device = pipe._execution_device
    sync = _synchronizer(device)
    multiple = size_multiple(pipe)
    # Models with a coarser grid (TI2V-5B: 32) render a little larger, then crop to size.
    width = -(-req.width // multiple) * multiple
    height = -(-req.height // multiple) * multiple
    guidance = max(1.0, req.guidance)
    use_cfg = guidance > 1.0
    with torch.inference_mode():
        t0 = time.perf_counter()
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=req.prompt,
            negative_prompt=req.negative_prompt or "",
            do_classifier_free_guidance=use_cfg,
            device=device,
        )
        sync()
        text_s = time.perf_counter() - t0
        marks: list[float] = []
        first_call: list[float] = []

        def on_step_end(_pipe: Pipe, i: int, _t: Any, kw: dict[str, Any]) -> dict[str, Any]:
            sync()
            marks.append(time.perf_counter())
            on_step(i + 1)
            if "latents" in kw and previews.due():
                frames = latent_rgb(kw["latents"], preview_decoder)
                previews.publish(frames, i + 1, LATENT_FPS)
            return {}

        def on_expert_call(_module: Any, _args: Any) -> None:
            if not first_call:
                sync()
                first_call.append(time.perf_counter())

        kwargs: dict[str, Any] = {
            "prompt_embeds": prompt_embeds,
            "negative_prompt_embeds": negative_embeds,
            "height": height,
            "width": width,
            "num_frames": req.num_frames,
            "num_inference_steps": req.steps,
            "guidance_scale": guidance,
            "generator": torch.Generator("cpu").manual_seed(req.seed),
            "output_type": "latent",
            "callback_on_step_end": on_step_end,
        }
        if req.image is not None:
            kwargs["image"] = _cover(req.image, width, height)
            if req.last_image is not None:
                kwargs["last_image"] = _cover(req.last_image, width, height)
        hooks = [m.register_forward_pre_hook(on_expert_call) for m in _experts(pipe)]
        t1 = time.perf_counter()
        try:
            latents = pipe(**kwargs).frames
        finally:
            for hook in hooks:
                hook.remove()
        # Set-up before the first step (latents; for I2V the VAE encode of the image).
        start = first_call[0] if first_call else t1
        prepare_s = start - t1
        steps = [end - begin for begin, end in zip([start, *marks[:-1]], marks, strict=True)]
        t2 = time.perf_counter()
        frames = decode(pipe, latents)
        sync()
        decode_s = time.perf_counter() - t2
    frames = _crop(frames, req.width, req.height)
    return Generated(frames, text_s, prepare_s, steps, decode_s)


def decode(pipe: Pipe, latents: torch.Tensor) -> npt.NDArray[np.uint8]:
    """Latents -> uint8 RGB frames (T x H x W x 3), as the pipelines do for ``output_type``
    "np", without the float round trip."""
    vae = pipe.vae
    latents = latents.to(vae.device, vae.dtype)
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(latents)
    std = torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(latents)
    video = vae.decode(latents * std + mean, return_dict=False)[0]  # B C T H W in [-1, 1]
    video = torch.nan_to_num(video[0].float(), nan=0.0).clamp(-1, 1)
    frames = ((video + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0)
    result: npt.NDArray[np.uint8] = frames.cpu().numpy()
    return result


def _cover(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale ``image`` to cover width x height and center-crop (no distortion), resampling
    only the part shown, straight to the output size: memory is O(output) whatever the
    image's shape (a 1 x 20000 strip is never scaled up whole)."""
    crop = crop_for(image.width, image.height, None, (width, height))
    return image.convert("RGB").resize(crop.size, Image.Resampling.LANCZOS, box=crop.box)


def _crop(frames: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    h, w = frames.shape[1:3]
    if (w, h) == (width, height):
        return frames
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(frames[:, top : top + height, left : left + width])


def _synchronizer(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


class GPUOutOfMemory(RuntimeError):
    """The GPU ran out of memory for this video. Not an ``EngineError``: the attempt is
    retried, and ``restart_child`` makes the worker start a fresh engine process (so the
    next attempt begins with all GPU memory free)."""

    restart_child = True
