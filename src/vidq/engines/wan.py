"""The wan engine: Wan 2.2 text-to-video, image-to-video and first+last frame with diffusers.

Weights come only from ``models_dir`` (layout in ``vidq.engines.wan_layout``); nothing is
downloaded. Pipelines are loaded once per engine process and reused for every job:

- ``wan22-*-t2v*``: ``WanPipeline`` (Wan2.2 T2V-A14B, two experts split at the boundary
  ratio); ``wan22-*-i2v*``: ``WanImageToVideoPipeline`` (I2V-A14B), with ``last_image`` when
  the job has a ``second_image_uri``.
- Every catalog model is a "fast" model: the lightx2v Lightning LoRAs are fused into both
  experts, guidance 1.0, the catalog's steps (4; 8 with ``higher_quality_with_more_steps``).
- ``-fp8`` pools quantize the experts to float8 with torchao (GPUs of compute capability
  8.9+; a clear ``EngineUnavailable`` elsewhere).
- With ``base="ti2v-5b"`` both families run the single-expert TI2V-5B model instead, at
  ``TI2V_STEPS`` steps and guidance 5.0 (no Lightning LoRA exists in this layout for it).

A request's ``loras`` (fetched by the worker) are peft adapters on the experts they name
for that job only (``wan_pipeline.job_loras``), removed after it, whatever its end; a file
that is not a LoRA for this model fails the job (``InvalidLora``, not retried).

Progress is reported as steps, then the VAE decode, then the MP4 encode.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from vidq.catalog import (
    FPS,
    MODELS,
    SIDE_MAX,
    SIDE_MIN,
    SIDE_MULTIPLE,
    frame_count,
    new_seed,
)
from vidq.config import WanSettings
from vidq.engines.base import NO_PREVIEWS, EngineJob, EngineResult, Previews, Report, lora_meta
from vidq.engines.wan_decoder import PreviewDecoder
from vidq.engines.wan_layout import BASES, wan_weights
from vidq.engines.wan_pipeline import (
    GPUOutOfMemory,
    Pipe,
    PipelineOptions,
    Request,
    free_memory,
    generate,
    job_loras,
    load_pipeline,
    offline,
    out_of_memory,
)
from vidq.errors import EngineError, EngineUnavailable
from vidq.media.video import write_mp4

log = logging.getLogger(__name__)

TI2V_STEPS = (30, 50)  # TI2V-5B without a distilled LoRA: (default, higher quality)
TI2V_GUIDANCE = 5.0
LIGHTNING_GUIDANCE = 1.0
GUIDANCE_MAX = 10.0
OUTPUT_NAMES = {"t2v": "WanVideo2_2_T2V", "i2v": "WanVideo2_2_I2V"}


@dataclasses.dataclass(frozen=True, slots=True)
class _Key:
    """Which pipeline a job needs."""

    family: str  # "t2v" | "i2v"
    fp8: bool


def _key_for(family: str, variant: str) -> _Key:
    if family not in OUTPUT_NAMES:
        raise EngineError(f"the wan engine does not make {family!r} videos")
    return _Key(family, variant == "fp8")


class WanEngine:
    """Wan 2.2 through diffusers (see module docstring)."""

    name = "wan"
    settings_type = WanSettings

    def __init__(self, settings: WanSettings, pools: Sequence[str] = (), resident: int = 0) -> None:
        if settings.models_dir is None:
            raise EngineUnavailable("the wan engine needs model weights: set VIDQ_MODELS_DIR")
        if settings.base not in BASES:
            raise EngineUnavailable(
                f"unknown wan base {settings.base!r}; known: {', '.join(BASES)}"
            )
        self.models_dir = settings.models_dir
        self.base = settings.base
        self.options = PipelineOptions(
            settings.device,
            settings.dtype,
            settings.attention,
            settings.vae_tiling,
            settings.offload,
        )
        self.pools = tuple(pools)
        self.preview_decoder_path = settings.preview_decoder
        self.preview_decoder: PreviewDecoder | None = None  # loaded with the pipelines
        self.resident = resident  # pipelines kept loaded at once; 0: 1 on a GPU, all on CPU
        self._pipes: dict[_Key, Pipe] = {}

    # -- lifecycle -------------------------------------------------------------------
    def load(self) -> None:
        """Load the preview decoder, if one is configured (first: a file that is not one
        fails the load in a moment, not after the pipelines' weights), then the pipelines
        of the pools this worker serves (on a GPU: the first one; others are swapped in
        when a job needs them)."""
        offline()
        if self.preview_decoder_path is not None:
            self.preview_decoder = PreviewDecoder.load(
                self.preview_decoder_path, self.options.torch_device(), self.options.torch_dtype()
            )
            log.info("loaded the preview decoder %s", self.preview_decoder_path)
        keys: list[_Key] = []
        for pool in self.pools:
            model = next((m for m in MODELS.values() if m.pool == pool), None)
            if model is not None and model.family.value in OUTPUT_NAMES:
                key = _key_for(model.family.value, model.variant)
                if key not in keys:
                    keys.append(key)
        for key in keys[: self._max_resident()]:
            self._pipeline(key)

    def _max_resident(self) -> int:
        if self.resident > 0:
            return self.resident
        return 1 if self.options.torch_device().type == "cuda" else 1_000

    def _pipeline(self, key: _Key) -> Pipe:
        pipe = self._pipes.get(key)
        if pipe is not None:
            return pipe
        while len(self._pipes) >= self._max_resident():
            evicted = next(iter(self._pipes))
            del self._pipes[evicted]
            free_memory()
            log.info("unloaded wan pipeline %s", evicted)
        weights = wan_weights(self.models_dir, key.family, self.base)
        ids = sorted(
            m.id
            for m in MODELS.values()
            if m.family.value == key.family and (m.variant == "fp8") == key.fp8
        )
        started = time.perf_counter()
        pipe = load_pipeline(weights, self.options, fp8=key.fp8, model_ids=ids)
        log.info(
            "loaded wan pipeline %s from %s in %.1f s",
            key,
            weights.pipeline_dir,
            time.perf_counter() - started,
        )
        self._pipes[key] = pipe
        return pipe

    # -- one job ---------------------------------------------------------------------
    def run(self, job: EngineJob, report: Report, previews: Previews = NO_PREVIEWS) -> EngineResult:
        """Generate one video into ``job.output_path``, showing its latents on ``previews``."""
        key = _key_for(job.family, job.variant)
        request = self._request(job)
        try:
            return self._run(job, key, request, report, previews)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            free_memory()
            raise GPUOutOfMemory(
                f"the GPU ran out of memory generating {request.width}x{request.height}, "
                f"{request.num_frames} frames ({exc.__class__.__name__}); the attempt is "
                "retried on a fresh engine process. Smaller sizes or shorter clips need less; "
                "VIDQ_WAN_VAE_TILING=1 and VIDQ_WAN_OFFLOAD=1 lower the peak."
            ) from exc

    def _run(
        self, job: EngineJob, key: _Key, request: Request, report: Report, previews: Previews
    ) -> EngineResult:
        pipe = self._pipeline(key)
        total = request.steps + 2  # denoising steps, the VAE decode, the MP4 encode
        report(0, total)
        with job_loras(pipe, job.loras) as lora_timing:
            out = generate(
                pipe, request, lambda done: report(done, total), previews, self.preview_decoder
            )
        report(request.steps + 1, total)
        started = time.perf_counter()
        write_mp4(
            Path(job.output_path),
            iter(out.frames),
            width=request.width,
            height=request.height,
            fps=FPS,
        )
        encode_s = time.perf_counter() - started
        report(total, total)
        return EngineResult(
            name=OUTPUT_NAMES[key.family],
            meta={
                "engine": "wan",
                "model": f"Wan2.2-{key.family.upper()}-"
                + ("A14B" if self.base == "a14b" else "5B"),
                "seed": request.seed,
                "steps": request.steps,
                "guidance": request.guidance,
                "fp8": key.fp8,
                "lightning": self.base == "a14b",
                "width": request.width,
                "height": request.height,
                "frames": request.num_frames,
                "fps": FPS,
                "first_last_frame": request.last_image is not None,
                "step_seconds": [round(s, 4) for s in out.step_s],
                "seconds": {
                    "text_encode": round(out.text_encode_s, 4),
                    "prepare": round(out.prepare_s, 4),
                    "denoise": round(sum(out.step_s), 4),
                    "decode": round(out.decode_s, 4),
                    "encode": round(encode_s, 4),
                    **(
                        {
                            "lora_load": round(lora_timing.load_s, 4),
                            "lora_unload": round(lora_timing.unload_s, 4),
                        }
                        if job.loras
                        else {}
                    ),
                },
                **({"loras": lora_meta(job.loras)} if job.loras else {}),
            },
        )

    def _request(self, job: EngineJob) -> Request:
        inputs = job.inputs
        duration = int(inputs.get("duration") or 5)
        higher = bool(inputs.get("higher_quality_with_more_steps"))
        if self.base == "a14b":
            steps, default_guidance = job.steps, LIGHTNING_GUIDANCE
        else:
            steps, default_guidance = TI2V_STEPS[int(higher)], TI2V_GUIDANCE
        guidance = _number(inputs.get("guidance_scale"), default_guidance)
        seed = inputs.get("seed")
        if seed is None:  # a job queued before the submit drew every request's seed
            seed = new_seed()
        image = last = None
        if job.family == "i2v":
            image = _open_image(job.files, "data_uri")
            if "second_image_uri" in job.files:
                if self.base != "a14b":
                    raise EngineError(
                        "first+last frame needs the I2V-A14B model; this worker runs TI2V-5B"
                    )
                last = _open_image(job.files, "second_image_uri")
            width, height = i2v_size(inputs, image)
        else:
            width, height = int(inputs.get("width") or 1280), int(inputs.get("height") or 720)
        return Request(
            prompt=str(inputs.get("prompt") or ""),
            negative_prompt=inputs.get("negative_prompt") or None,
            width=width,
            height=height,
            num_frames=frame_count(duration),
            steps=steps,
            guidance=min(GUIDANCE_MAX, max(1.0, guidance)),
            seed=int(seed),
            image=image,
            last_image=last,
        )


def _number(value: Any, default: float) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _open_image(files: dict[str, str], field: str) -> Image.Image:
    path = files.get(field)
    if path is None:
        raise EngineError(f"{field}: the input image did not reach the worker")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise EngineError(f"{field}: not a readable image ({exc})") from exc


def i2v_size(inputs: dict[str, Any], image: Image.Image) -> tuple[int, int]:
    """Output size of an image-to-video job: ``width``/``height`` when both are given; one
    of them scales the image's aspect ratio; else the image's own size. Sides are rounded to
    multiples of 16 and kept within the catalog's limits, preserving the aspect ratio."""
    w_in, h_in = inputs.get("width"), inputs.get("height")
    aspect = image.width / image.height
    if w_in and h_in:
        width, height = float(w_in), float(h_in)
    elif h_in:
        width, height = float(h_in) * aspect, float(h_in)
    elif w_in:
        width, height = float(w_in), float(w_in) / aspect
    else:
        width, height = float(image.width), float(image.height)
    shrink = min(1.0, SIDE_MAX / max(width, height))
    grow = max(1.0, SIDE_MIN / min(width * shrink, height * shrink))
    scale = shrink * grow

    def side(x: float) -> int:
        rounded = round(x * scale / SIDE_MULTIPLE) * SIDE_MULTIPLE
        return int(min(SIDE_MAX, max(SIDE_MIN, rounded)))

    return side(width), side(height)
