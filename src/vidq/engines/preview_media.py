"""Frames and sound of the preview engine's media families, derived from the inputs.

- I2V: the conditioning image (``new_resolution``, then cover-fit to the plan) is frame 0;
  a slow zoom and pan moves over it. With a last frame the clip cross-fades (smoothstep)
  from the zooming first image to the last image, which is exactly the final frame.
- S2V: the image pulses (zoom and brightness) with the audio's loudness per frame: silence
  leaves the image still; the input audio is the output's AAC track.
- Foley: the input video's frames as they are; per-frame motion (mean change between
  frames) drives the level of generated effects; ``background_music`` adds a chord bed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from vidq.media.audio import SAMPLE_RATE, Audio, loudness
from vidq.media.decode import IMAGE_FORMATS
from vidq.media.sizing import Plan, crop_for
from vidq.media.video import Frame, read_frames


def conditioning_image(path: Path, plan: Plan, new_resolution: str | int | None) -> Image.Image:
    """The input image as the engine conditions on it: EXIF orientation applied, then the
    part that ``new_resolution`` and the cover-fit keep, resampled once to the plan's size
    (``sizing.crop_for``): nothing bigger than the input or the output is made."""
    with Image.open(path, formats=IMAGE_FORMATS) as raw:
        img = ImageOps.exif_transpose(raw).convert("RGB")
    crop = crop_for(img.width, img.height, new_resolution, (plan.width, plan.height))
    return img.resize(crop.size, Image.Resampling.LANCZOS, box=crop.box)


def _zoom(img: Image.Image, factor: float, drift: tuple[float, float]) -> Frame:
    """The image seen ``factor`` times closer, the view centre moved by ``drift`` (of the
    free margin); factor 1 is the image itself."""
    if factor <= 1.0001:
        return np.asarray(img, dtype=np.uint8)
    w, h = img.size
    cw, ch = w / factor, h / factor
    cx = w / 2 + drift[0] * (w - cw) / 2
    cy = h / 2 + drift[1] * (h - ch) / 2
    box = (cx - cw / 2, cy - ch / 2, cx + cw / 2, cy + ch / 2)
    return np.asarray(img.resize((w, h), Image.Resampling.BILINEAR, box=box), dtype=np.uint8)


def _drift(prompt: str) -> tuple[float, float]:
    digest = hashlib.sha256(prompt.encode()).digest()
    return (digest[0] / 127.5 - 1.0, digest[1] / 127.5 - 1.0)


def i2v_frames(
    first: Image.Image, last: Image.Image | None, frames: int, prompt: str
) -> Iterator[Frame]:
    """Zoom and pan over ``first``; cross-fade into ``last`` if given."""
    drift = _drift(prompt)
    for i in range(frames):
        t = i / max(1, frames - 1)
        a = _zoom(first, 1.0 + 0.15 * t, (drift[0] * t, drift[1] * t))
        if last is None:
            yield a
            continue
        s = t * t * (3 - 2 * t)  # smoothstep: frame 0 is first, the last frame is last
        b = _zoom(last, 1.0 + 0.15 * (1 - t), (-drift[0] * (1 - t), -drift[1] * (1 - t)))
        mixed = a.astype(np.float32) * (1 - s) + b.astype(np.float32) * s
        yield np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def s2v_frames(image: Image.Image, audio: Audio, frames: int, fps: float) -> Iterator[Frame]:
    """The image pulsing with the audio's loudness (zoom up to 12%, brightness up to 20%)."""
    level = loudness(audio, SAMPLE_RATE, fps, frames)
    # A short release so the motion follows the sound's envelope, not its every sample.
    smooth = np.zeros_like(level)
    acc = 0.0
    for i, value in enumerate(level):
        acc = max(float(value), acc * 0.7)
        smooth[i] = acc
    for i in range(frames):
        amount = float(smooth[i])
        frame = _zoom(image, 1.0 + 0.12 * amount, (0.0, 0.0))
        if amount > 0.001:
            frame = np.clip(frame.astype(np.float32) * (1.0 + 0.2 * amount), 0, 255).astype(
                np.uint8
            )
        yield frame


def video_motion(path: Path, fmt: str | None, frames: int) -> npt.NDArray[np.float32]:
    """Per-frame motion of a video in [0, 1]: mean absolute change from the previous frame
    (on a 64x36 thumbnail), relative to the clip's largest change (taken as at least 1%,
    so a still video stays silent)."""
    motion = np.zeros(max(1, frames), dtype=np.float32)
    previous: npt.NDArray[np.float32] | None = None
    for i, thumb in enumerate(read_frames(path, fmt, width=64, height=36)):
        if i >= len(motion):
            break
        current = thumb.astype(np.float32) / 255.0
        if previous is not None:
            motion[i] = float(np.abs(current - previous).mean())
        previous = current
    if len(motion) > 1:
        motion[0] = motion[1]
    scaled: npt.NDArray[np.float32] = np.clip(motion / max(float(motion.max()), 0.01), 0, 1)
    return scaled.astype(np.float32)
