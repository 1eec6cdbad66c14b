"""The CPU preview engine: deterministic real H.264 MP4s built from the inputs, no weights.

It is what the embedded default runs, so that everything but the neural network can be
used and tested anywhere. Content is derived from the prompt (palette, motion path and the
prompt's text drawn over it); the same inputs always give the same frames.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from vidq.engines.base import EngineJob, EngineResult, Report
from vidq.errors import EngineError
from vidq.media.video import Frame, write_mp4

FPS = 16


class PreviewEngine:
    """Makes preview videos on the CPU (see module docstring)."""

    name = "preview"

    def __init__(self, step_seconds: float = 0.0) -> None:
        # Optional pause per step so that queued/in-progress states can be observed.
        self.step_seconds = step_seconds

    def load(self) -> None:
        """Nothing to load."""

    def run(self, job: EngineJob, report: Report) -> EngineResult:
        inputs = job.inputs
        if job.family != "t2v":
            raise EngineError(f"the preview engine does not handle {job.family!r} yet")
        width, height = int(inputs["width"]), int(inputs["height"])
        duration = int(inputs["duration"])
        n_frames = FPS * duration + 1
        total = job.steps + 1  # denoising-like steps, then the encode
        scene = _Scene(str(inputs.get("prompt", "")), width, height, inputs.get("seed"))
        frames: list[Frame] = []
        per_step = -(-n_frames // job.steps)
        for step in range(job.steps):
            frames.extend(
                scene.frame(i, n_frames)
                for i in range(step * per_step, min(n_frames, (step + 1) * per_step))
            )
            if self.step_seconds:
                time.sleep(self.step_seconds)
            report(step + 1, total)
        write_mp4(Path(job.output_path), iter(frames), width=width, height=height, fps=FPS)
        report(total, total)
        return EngineResult(
            name="Preview_T2V",
            meta={"engine": "preview", "frames": n_frames, "fps": FPS, "seed": scene.seed},
        )


class _Scene:
    """A gradient that drifts, a disc on a prompt-chosen path, and the prompt's text."""

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

    def frame(self, index: int, count: int) -> Frame:
        t = index / max(1, count - 1)
        shift = int(t * self.width)
        img = self.gradient[:, shift : shift + self.width].copy()
        angle = self.phase + t * 2 * np.pi * self.speed
        cx = self.width * (0.5 + 0.3 * np.cos(angle))
        cy = self.height * (0.5 + 0.3 * np.sin(angle * 1.3))
        radius = min(self.width, self.height) * 0.12
        inside = (self.xx - cx) ** 2 + (self.yy - cy) ** 2 < radius**2
        img[inside] = self.disc_color
        img[self.text] = 255.0
        frame: Frame = img.astype(np.uint8)
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
