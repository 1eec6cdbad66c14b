"""The ltx2 engine: LTX-2 text-to-video and image-to-video, with sound, through diffusers.

One pass of ``LTX2Pipeline`` (t2v) or ``LTX2ImageToVideoPipeline`` (i2v, the job's
``data_uri`` image as the first frame) denoises the video latents and the audio latents
together; the video VAE decodes the frames, the audio VAE a mel spectrogram and the vocoder
its waveform. The MP4 carries both: H.264 video, AAC audio at the vocoder's sample rate.

Weights come only from ``models_dir`` (layout in ``vidq.engines.ltx2_layout``); nothing is
downloaded. Both pipelines share one set of loaded components.

The pipeline's rules: sides are multiples of 32, the frame count is 8k+1 (the video VAE
compresses time 8x, keeping the first frame), the audio lasts frames / fps seconds.

Per-model engine options (``EngineJob.options``, from the models file), all optional:

- ``weights``: the folder under ``models_dir`` (default ``VIDQ_LTX2_WEIGHTS``, ``LTX-2``;
  another folder is loaded at its first job).
- ``distilled`` (default true): the step-distilled schedule LTX-2 publishes for its
  distilled checkpoint (``DISTILLED_SIGMA_VALUES``: 8 steps, guidance 1.0, no STG or
  modality guidance). The folder's transformer must then hold the distilled weights.
  false: ``steps`` (default: the job's, else 40) with the pipeline's guidance (video 3.0,
  audio 7.0, STG).
- ``guidance``: overrides the above (a request's ``guidance_scale`` overrides it).
- ``fps`` (default 24); ``width`` / ``height``: the default size (768 x 512).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from diffusers.pipelines.ltx2.utils import DISTILLED_SIGMA_VALUES
from PIL import Image, ImageOps, UnidentifiedImageError

from vidq.catalog import new_seed
from vidq.config import LTX2Settings
from vidq.engines.base import NO_PREVIEWS, EngineJob, EngineResult, Previews, Report
from vidq.engines.ltx2_layout import models_dir_of, usable
from vidq.engines.wan_pipeline import (
    GPUOutOfMemory,
    PipelineOptions,
    free_memory,
    offline,
    out_of_memory,
)
from vidq.errors import EngineError
from vidq.media.video import write_mp4

log = logging.getLogger(__name__)

SIDE_MULTIPLE = 32  # LTX2Pipeline.check_inputs: height and width divisible by 32
FRAME_MULTIPLE = 8  # the video VAE's temporal compression: 8k+1 frames
DEFAULT_FPS = 24.0  # LTX2Pipeline's frame_rate default
DEFAULT_SIZE = (768, 512)  # LTX2Pipeline's width, height defaults
DISTILLED_GUIDANCE = 1.0
FULL_STEPS = 40
FULL_GUIDANCE = 3.0  # the pipeline's video default; its audio guidance stays 7.0
MAX_TOKENS = 1024  # the prompt length LTX2Pipeline pads to (its max_sequence_length)
OUTPUT_NAMES = {"t2v": "LTX2_T2V", "i2v": "LTX2_I2V"}


@dataclasses.dataclass(frozen=True, slots=True)
class LTX2Request:
    """One video with sound to generate, already sized."""

    prompt: str
    negative_prompt: str | None
    width: int
    height: int
    num_frames: int
    fps: float
    steps: int
    guidance: float
    distilled: bool
    seed: int
    image: Image.Image | None = None  # the first frame (i2v)


def frames_for(duration: float, fps: float) -> int:
    """The 8k+1 frame count nearest ``duration`` seconds at ``fps`` (at least 9)."""
    blocks = max(1, round(duration * fps / FRAME_MULTIPLE))
    return blocks * FRAME_MULTIPLE + 1


def side(x: float) -> int:
    """A side rounded to the pipeline's multiple of 32 (at least 32)."""
    return max(SIDE_MULTIPLE, round(x / SIDE_MULTIPLE) * SIDE_MULTIPLE)


def i2v_size(
    inputs: dict[str, Any], image: Image.Image, default: tuple[int, int]
) -> tuple[int, int]:
    """Output size of an image-to-video job: ``width``/``height`` when both are given; one
    of them scales the image's aspect ratio; else the image's aspect ratio at the default
    size's area. Sides are multiples of 32."""
    w_in, h_in = inputs.get("width"), inputs.get("height")
    aspect = image.width / image.height
    if w_in and h_in:
        return side(float(w_in)), side(float(h_in))
    if h_in:
        return side(float(h_in) * aspect), side(float(h_in))
    if w_in:
        return side(float(w_in)), side(float(w_in) / aspect)
    area = default[0] * default[1]
    height = (area / aspect) ** 0.5
    return side(height * aspect), side(height)


class LTX2Engine:
    """LTX-2 with sound through diffusers (see module docstring)."""

    name = "ltx2"
    settings_type = LTX2Settings

    def __init__(self, settings: LTX2Settings, pools: Sequence[str] = ()) -> None:
        self.models_dir = models_dir_of(settings)
        self.default_folder = settings.weights
        self.options = PipelineOptions(
            settings.device, settings.dtype, "native", settings.vae_tiling, settings.offload
        )
        self.pools = tuple(pools)
        self._pipes: dict[str, Any] = {}  # weights folder -> LTX2Pipeline

    # -- lifecycle -------------------------------------------------------------------
    def load(self) -> None:
        """Load the default weights folder's pipeline (a clear EngineUnavailable when
        its files are missing)."""
        offline()
        self._pipeline(self.default_folder)

    def _pipeline(self, folder: str) -> Any:
        pipe = self._pipes.get(folder)
        if pipe is not None:
            return pipe
        weights = usable(self.models_dir, folder)
        device = self.options.torch_device()
        if device.type == "cuda":  # one 19B pipeline at a time on a GPU
            self._pipes.clear()
            free_memory()
        from diffusers import LTX2Pipeline

        started = time.perf_counter()
        pipe = LTX2Pipeline.from_pretrained(
            str(weights.pipeline_dir), dtype=self.options.torch_dtype()
        )
        if self.options.offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if self.options.vae_tiling:
            pipe.vae.enable_tiling()
        pipe.set_progress_bar_config(disable=True)
        log.info(
            "loaded the LTX-2 pipeline from %s in %.1f s",
            weights.pipeline_dir,
            time.perf_counter() - started,
        )
        self._pipes[folder] = pipe
        return pipe

    # -- one job ---------------------------------------------------------------------
    def run(self, job: EngineJob, report: Report, previews: Previews = NO_PREVIEWS) -> EngineResult:
        """Generate one video with its sound into ``job.output_path``."""
        if job.family not in OUTPUT_NAMES:
            raise EngineError(f"the ltx2 engine does not make {job.family!r} videos")
        options: dict[str, Any] = dict(getattr(job, "options", None) or {})
        request = self._request(job, options)
        try:
            return self._run(job, options, request, report)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            free_memory()
            raise GPUOutOfMemory(
                f"the GPU ran out of memory generating {request.width}x{request.height}, "
                f"{request.num_frames} frames ({exc.__class__.__name__}); the attempt is "
                "retried on a fresh engine process. Smaller sizes or shorter clips need less; "
                "VIDQ_LTX2_VAE_TILING=1 and VIDQ_LTX2_OFFLOAD=1 lower the peak."
            ) from exc

    def _run(
        self, job: EngineJob, options: dict[str, Any], request: LTX2Request, report: Report
    ) -> EngineResult:
        folder = str(options.get("weights") or self.default_folder)
        pipe = self._pipeline(folder)
        total = request.steps + 2  # denoising steps, the decodes (video, audio), the MP4
        report(0, total)
        started = time.perf_counter()
        step_ends: list[float] = []

        def on_step(_pipe: Any, i: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            step_ends.append(time.perf_counter())
            report(i + 1, total)
            return kwargs

        video, audio = self._call(pipe, request, on_step)
        decoded = time.perf_counter()
        report(request.steps + 1, total)
        frames = _frames(video)
        waveform = _waveform(audio)
        sample_rate = int(pipe.vocoder.config.output_sampling_rate)
        write_mp4(
            Path(job.output_path),
            iter(frames),
            width=request.width,
            height=request.height,
            fps=round(request.fps),
            audio=waveform,
            sample_rate=sample_rate,
        )
        encode_s = time.perf_counter() - decoded
        report(total, total)
        steps = np.diff([started, *step_ends]).tolist() if step_ends else []
        return EngineResult(
            name=OUTPUT_NAMES[job.family],
            meta={
                "engine": "ltx2",
                "model": f"LTX-2 ({folder})",
                "seed": request.seed,
                "steps": request.steps,
                "distilled": request.distilled,
                "guidance": request.guidance,
                "width": request.width,
                "height": request.height,
                "frames": request.num_frames,
                "fps": request.fps,
                "audio_sample_rate": sample_rate,
                "audio_seconds": round(waveform.shape[1] / sample_rate, 4),
                "step_seconds": [round(s, 4) for s in steps],
                "seconds": {
                    # the first step's time includes the prompt encoding and the latents
                    "first_step": round(steps[0], 4) if steps else 0.0,
                    "denoise": round(sum(steps[1:]), 4),
                    "decode": round(decoded - (step_ends[-1] if step_ends else started), 4),
                    "encode": round(encode_s, 4),
                },
            },
        )

    def _call(self, pipe: Any, request: LTX2Request, on_step: Any) -> tuple[Any, Any]:
        device = self.options.torch_device()
        generator = torch.Generator(device="cpu" if device.type == "mps" else device)
        generator.manual_seed(request.seed)
        kwargs: dict[str, Any] = {
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "width": request.width,
            "height": request.height,
            "num_frames": request.num_frames,
            "frame_rate": request.fps,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": generator,
            "output_type": "np",
            "return_dict": False,
            "callback_on_step_end": on_step,
            "max_sequence_length": min(MAX_TOKENS, int(pipe.tokenizer.model_max_length)),
        }
        if request.distilled:
            # the distilled checkpoint's schedule, without the extra guidance passes
            kwargs.update(
                sigmas=list(DISTILLED_SIGMA_VALUES),
                stg_scale=0.0,
                modality_scale=1.0,
                guidance_rescale=0.0,
                audio_guidance_scale=request.guidance,
                audio_stg_scale=0.0,
                audio_modality_scale=1.0,
                audio_guidance_rescale=0.0,
                spatio_temporal_guidance_blocks=None,
            )
        if request.image is not None:
            from diffusers import LTX2ImageToVideoPipeline

            i2v = LTX2ImageToVideoPipeline(**_components(pipe))
            i2v.set_progress_bar_config(disable=True)
            with torch.inference_mode():
                video, audio = i2v(image=request.image, **kwargs)
        else:
            with torch.inference_mode():
                video, audio = pipe(**kwargs)
        return video, audio

    def _request(self, job: EngineJob, options: dict[str, Any]) -> LTX2Request:
        inputs = job.inputs
        fps = _number(options.get("fps"), DEFAULT_FPS)
        distilled = bool(options.get("distilled", True))
        if distilled:
            steps = len(DISTILLED_SIGMA_VALUES)  # the schedule the distillation learned
            guidance = _number(options.get("guidance"), DISTILLED_GUIDANCE)
        else:
            steps = int(options.get("steps") or job.steps or FULL_STEPS)
            guidance = _number(options.get("guidance"), FULL_GUIDANCE)
        guidance = _number(inputs.get("guidance_scale"), guidance)
        default = (
            int(options.get("width") or DEFAULT_SIZE[0]),
            int(options.get("height") or DEFAULT_SIZE[1]),
        )
        seed = inputs.get("seed")
        if seed is None:
            seed = new_seed()
        image = None
        if job.family == "i2v":
            image = _open_image(job.files, "data_uri")
            width, height = i2v_size(inputs, image, default)
            image = ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
        else:
            width = side(float(inputs.get("width") or default[0]))
            height = side(float(inputs.get("height") or default[1]))
        return LTX2Request(
            prompt=str(inputs.get("prompt") or ""),
            negative_prompt=inputs.get("negative_prompt") or None,
            width=width,
            height=height,
            num_frames=frames_for(_number(inputs.get("duration"), 5.0), fps),
            fps=fps,
            steps=steps,
            guidance=guidance,
            distilled=distilled,
            seed=int(seed),
            image=image,
        )


def _components(pipe: Any) -> dict[str, Any]:
    """The loaded components of ``pipe`` that the image-to-video pipeline takes."""
    from diffusers import LTX2ImageToVideoPipeline

    accepted = inspect.signature(LTX2ImageToVideoPipeline.__init__).parameters
    return {k: v for k, v in pipe.components.items() if k in accepted}


def _frames(video: Any) -> npt.NDArray[np.uint8]:
    """The pipeline's ``np`` video (1 x T x H x W x 3, floats in [0, 1]) as uint8 frames."""
    array: npt.NDArray[np.float32] = np.asarray(video, dtype=np.float32)[0]
    frames: npt.NDArray[np.uint8] = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return frames


def _waveform(audio: Any) -> npt.NDArray[np.float32]:
    """The vocoder's output (1 x channels x samples) as float32 in [-1, 1]."""
    tensor = audio[0] if isinstance(audio, torch.Tensor | list) else np.asarray(audio)[0]
    if isinstance(tensor, torch.Tensor):
        tensor = tensor.float().cpu().numpy()
    return np.clip(np.asarray(tensor, dtype=np.float32), -1.0, 1.0)


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
