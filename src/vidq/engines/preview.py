"""The CPU preview engine: deterministic real H.264 MP4s built from the inputs, no weights.

It is what the embedded default runs, so that everything but the neural network can be
used and tested anywhere. Every family is made from its inputs: T2V from the prompt
(palette, motion path and the prompt's text), I2V from the image (and the last frame),
S2V from the image and the audio, Foley from the video (see ``preview_media``). The same
inputs always give the same output. A request's LoRAs (fetched by the worker) are recorded
in the result (``loras``: hashes and scales), not applied: there are no weights.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from vidq.config import PreviewSettings
from vidq.engines.base import NO_PREVIEWS, EngineJob, EngineResult, Previews, Report, lora_meta
from vidq.engines.preview_media import conditioning_image, i2v_frames, s2v_frames, video_motion
from vidq.engines.previews import shrink
from vidq.errors import EngineError
from vidq.media.audio import SAMPLE_RATE, decode_audio, fit_length, foley_track
from vidq.media.decode import sniff
from vidq.media.sizing import Plan, image_plan, text_plan
from vidq.media.video import Frame, VideoMeta, probe_video, read_frames, write_mp4

FPS = 16
_NAMES = {
    "t2v": "Preview_T2V",
    "i2v": "Preview_I2V",
    "s2v": "Preview_S2V",
    "foley": "Preview_Foley",
}


class PreviewFailure(EngineError):
    """A failure asked for (``VIDQ_PREVIEW_FAIL_PROMPT``): the engine failed the request."""


class PreviewEngine:
    """Makes preview videos on the CPU (see module docstring)."""

    name = "preview"
    settings_type = PreviewSettings

    def __init__(self, settings: PreviewSettings, pools: Sequence[str] = ()) -> None:
        # Optional pause per step so that queued/in-progress states can be observed.
        self.step_seconds = settings.step_seconds
        self.fail_prompt = settings.fail_prompt  # a prompt holding it fails, on purpose

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job: EngineJob, report: Report, previews: Previews = NO_PREVIEWS) -> EngineResult:
        if job.family not in _NAMES:
            raise EngineError(f"the preview engine does not handle {job.family!r}")
        if self.fail_prompt and self.fail_prompt in str(job.inputs.get("prompt", "")):
            raise PreviewFailure(
                f"the preview engine fails requests whose prompt contains {self.fail_prompt!r} "
                "(VIDQ_PREVIEW_FAIL_PROMPT)"
            )
        out = Path(job.output_path)
        total = job.steps + 1  # denoising-like steps, then the encode
        meta: dict[str, object] = {"engine": "preview"}
        if job.family == "t2v":
            plan = text_plan(job.inputs)
            scene = _Scene(
                str(job.inputs.get("prompt", "")), plan.width, plan.height, job.inputs.get("seed")
            )
            frames: Iterator[Frame] = (scene.frame(i, plan.frames) for i in range(plan.frames))
            meta["seed"] = scene.seed
            self._encode(out, plan, frames, None, job.steps, report, previews)
        elif job.family == "i2v":
            plan = self._image_plan(job)
            first = conditioning_image(
                self._file(job, "data_uri"), plan, job.inputs.get("new_resolution")
            )
            last = None
            if "second_image_uri" in job.files:
                last = conditioning_image(
                    self._file(job, "second_image_uri"), plan, job.inputs.get("new_resolution")
                )
            meta["last_frame"] = last is not None
            frames = i2v_frames(first, last, plan.frames, str(job.inputs.get("prompt", "")))
            self._encode(out, plan, frames, None, job.steps, report, previews)
        elif job.family == "s2v":
            plan = self._image_plan(job)
            image = conditioning_image(
                self._file(job, "data_uri"), plan, job.inputs.get("new_resolution")
            )
            audio = self._audio(job)
            audio = fit_length(audio, round(plan.seconds * SAMPLE_RATE))
            frames = s2v_frames(image, audio, plan.frames, float(plan.fps))
            self._encode(out, plan, frames, audio, job.steps, report, previews)
        else:
            plan, frames, audio = self._foley(job)
            meta["background_music"] = bool(job.inputs.get("background_music"))
            self._encode(out, plan, frames, audio, job.steps, report, previews)
        report(total, total)
        meta.update(plan.as_json())
        if job.loras:  # accepted and recorded; a preview has no weights to apply them to
            meta["loras"] = lora_meta(job.loras)
        return EngineResult(name=_NAMES[job.family], meta=meta)

    # -- inputs ----------------------------------------------------------------------
    @staticmethod
    def _file(job: EngineJob, field: str) -> Path:
        if field not in job.files:
            raise EngineError(f"the input {field!r} was not stored with the request")
        return Path(job.files[field])

    def _image_plan(self, job: EngineJob) -> Plan:
        stored = job.inputs.get("_plan")
        if isinstance(stored, dict):
            return Plan.from_json(stored)
        with Image.open(self._file(job, "data_uri")) as img:  # jobs queued without a plan
            seconds = None
            if "audio_uri" in job.files:
                seconds = self._audio(job).shape[1] / SAMPLE_RATE
            return image_plan(job.inputs, img.width, img.height, seconds)

    def _audio(self, job: EngineJob) -> npt.NDArray[np.float32]:
        path = self._file(job, "audio_uri")
        fmt = sniff(_head(path))
        return decode_audio(path, fmt.demuxer if fmt else None, max_seconds=3600)

    def _foley(self, job: EngineJob) -> tuple[Plan, Iterator[Frame], npt.NDArray[np.float32]]:
        path = self._file(job, "data_uri")
        fmt = sniff(_head(path))
        demuxer = fmt.demuxer if fmt else None
        stored = job.inputs.get("_plan")
        if isinstance(stored, dict):
            plan = Plan.from_json(stored)
        else:
            vm: VideoMeta = probe_video(path, demuxer, max_frames=10**6)
            plan = Plan(vm.width - vm.width % 2, vm.height - vm.height % 2, vm.frames, vm.fps)
        motion = video_motion(path, demuxer, plan.frames)
        audio = foley_track(
            motion,
            float(plan.fps),
            str(job.inputs.get("prompt", "")),
            music=bool(job.inputs.get("background_music")),
        )
        frames = read_frames(path, demuxer, width=plan.width, height=plan.height)
        return plan, frames, audio

    # -- output ----------------------------------------------------------------------
    def _encode(
        self,
        out: Path,
        plan: Plan,
        frames: Iterator[Frame],
        audio: npt.NDArray[np.float32] | None,
        steps: int,
        report: Report,
        previews: Previews,
    ) -> None:
        write_mp4(
            out,
            self._stepped(frames, plan.frames, steps, report, previews),
            width=plan.width,
            height=plan.height,
            fps=plan.fps,
            audio=audio,
            sample_rate=SAMPLE_RATE,
        )

    def _stepped(
        self, frames: Iterator[Frame], count: int, steps: int, report: Report, previews: Previews
    ) -> Iterator[Frame]:
        """Pass frames through, reporting step k of ``steps`` as its share of frames is made,
        and showing the frames made so far on ``previews``."""
        done = 0
        made: list[Frame] = []  # shrunk copies, for the previews
        for i, frame in enumerate(frames):
            yield frame
            if previews is not NO_PREVIEWS:
                made.append(shrink(frame))
            reached = min(steps, math.floor((i + 1) * steps / max(1, count)))
            while done < reached:
                done += 1
                if self.step_seconds:
                    time.sleep(self.step_seconds)
                report(done, steps + 1)
                if previews.due():
                    previews.publish(made, done)
        while done < steps:
            done += 1
            report(done, steps + 1)


class _Scene:
    """A gradient that drifts, a disc on a prompt-chosen path, and the prompt's text.

    A frame is made from what its predecessors share: the gradient is converted to pixels
    once, the disc is computed in its bounding box only and the text's pixels are found
    once. The pixels are those of the plain formula over the whole frame (float32 colours
    truncated to bytes; ``tests/unit/test_preview_scene.py`` compares them), at a tenth of
    its cost (a 1280x720, 81-frame clip: 1.9 CPU-s of frames before, 0.2 after)."""

    def __init__(self, prompt: str, width: int, height: int, seed: int | None) -> None:
        digest = hashlib.sha256(f"{prompt}\0{seed}".encode()).digest()
        self.seed = seed if seed is not None else int.from_bytes(digest[:4], "big")
        self.width, self.height = width, height
        c1 = np.frombuffer(digest[4:7], dtype=np.uint8).astype(np.float32)
        c2 = np.frombuffer(digest[7:10], dtype=np.uint8).astype(np.float32)
        self.disc_color = np.frombuffer(digest[10:13], dtype=np.uint8).astype(np.float32)
        self.phase = digest[13] / 255 * 2 * np.pi
        self.speed = 0.5 + digest[14] / 255
        ramp = np.linspace(0.0, 1.0, width * 2, dtype=np.float32)[None, :, None]
        ramp = 0.5 - 0.5 * np.cos(ramp * 2 * np.pi)
        self.gradient = (c1 * (1 - ramp) + c2 * ramp).repeat(height, axis=0)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float32)
        self.text = _text_mask(prompt, width, height)
        self._pixels = self.gradient.astype(np.uint8)  # what each frame's astype would give
        self._disc = self.disc_color.astype(np.uint8)
        self._text_at = np.flatnonzero(self.text)

    def motion(self, index: int, count: int) -> tuple[int, float, float, float]:
        """Frame ``index`` of ``count``: the gradient's shift, the disc's centre and radius."""
        t = index / max(1, count - 1)
        angle = self.phase + t * 2 * np.pi * self.speed
        cx = self.width * (0.5 + 0.3 * np.cos(angle))
        cy = self.height * (0.5 + 0.3 * np.sin(angle * 1.3))
        return int(t * self.width), cx, cy, min(self.width, self.height) * 0.12

    def frame(self, index: int, count: int) -> Frame:
        shift, cx, cy, radius = self.motion(index, count)
        img = self._pixels[:, shift : shift + self.width].copy()
        # the disc's box, a pixel wider on each side than it can reach
        x0, x1 = max(0, int(cx - radius) - 1), min(self.width, int(cx + radius) + 2)
        y0, y1 = max(0, int(cy - radius) - 1), min(self.height, int(cy + radius) + 2)
        xx, yy = self.xx[y0:y1, x0:x1], self.yy[y0:y1, x0:x1]
        inside = (xx - cx) ** 2 + (yy - cy) ** 2 < radius**2
        img[y0:y1, x0:x1][inside] = self._disc
        img.reshape(-1, 3)[self._text_at] = 255
        frame: Frame = img
        return frame


def _text_mask(prompt: str, width: int, height: int) -> npt.NDArray[np.bool_]:
    canvas = Image.new("L", (width, height), 0)
    if prompt:
        size = max(10, height // 24)
        font = ImageFont.load_default(size=size)
        draw = ImageDraw.Draw(canvas)
        line, lines = "", []
        for word in prompt.split()[:60]:
            if draw.textlength(f"{line} {word}", font=font) > width * 0.9 and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        for i, text in enumerate(lines[:4]):
            draw.text((width * 0.05, height * 0.06 + i * size * 1.3), text, fill=255, font=font)
    return np.asarray(canvas) > 127


def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(16)
