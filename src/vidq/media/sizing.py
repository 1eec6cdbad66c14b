"""The spec's sizing rules: the output size and length of every family.

- T2V: ``width`` x ``height`` as given (multiples of 16), ``16*duration+1`` frames.
- I2V / S2V: the aspect comes from the image (after ``new_resolution``). The *anchor* is
  ``height``, else ``min_height``, else 480. Without ``use_best_resolution`` the video's
  height is the anchor; with it, the image's *short* side is. The other side is the exact
  aspect-derived length rounded **down to a multiple of 32** (Wan needs 16; 32 reproduces
  the spec's example), clamped to 128..1920, and the image is centre-cropped to the final
  aspect. A 9:16 portrait at 480: ``use_best_resolution`` -> 480x832 (480*16/9 = 853.3 ->
  832); without -> 256x480 (the spec's "270x480": 270 is not a valid Wan side).
- ``new_resolution`` resizes the input image before generation: ``"1280x720"`` makes it
  exactly that size (scaled to cover, centre-cropped: this also sets the aspect),
  ``"720p"`` scales it up so its short side is 720, an integer ``720`` so its height is
  720. ``"Np"`` and integers only ever upscale.
- S2V length: ``duration`` if given, else the audio's length rounded up to whole seconds
  (ignoring up to 0.1 s of encoder padding; 1..10); the audio is trimmed or padded with
  silence to the video.
- Foley: the input video's own size (rounded down to even sides for yuv420p), frame rate
  and frame count.

Memory is O(output), whatever the input's shape: ``new_resolution`` and the cover-fit to the
plan are both centre crops plus a scale, so ``crop_for`` folds them into one box of the
input that is resampled once, straight to the output size. No image of the size
``new_resolution`` names is ever made (a 1x50 image at ``"3840p"`` would be 3840x192000).
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from typing import Any

from vidq.catalog import (
    DURATION_MAX,
    DURATION_MIN,
    FPS,
    SIDE_MAX,
    SIDE_MIN,
    frame_count,
    parse_new_resolution,
)

ANCHOR_DEFAULT = 480
DERIVED_MULTIPLE = 32


@dataclasses.dataclass(frozen=True, slots=True)
class Crop:
    """How the input image becomes the conditioning image: the part ``box`` (left, top,
    right, bottom, in the input's pixels) resampled once to ``size`` (the output's)."""

    box: tuple[float, float, float, float]
    size: tuple[int, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The output of a request: size, frame rate, frame count."""

    width: int
    height: int
    frames: int
    fps: Fraction = Fraction(FPS)

    @property
    def seconds(self) -> float:
        return self.frames / float(self.fps)

    def as_json(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "frames": self.frames,
            "fps": [self.fps.numerator, self.fps.denominator],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        num, den = data["fps"]
        return cls(int(data["width"]), int(data["height"]), int(data["frames"]), Fraction(num, den))


def resolution_size(width: int, height: int, new_resolution: str | int | None) -> tuple[int, int]:
    """The size ``new_resolution`` gives a ``width`` x ``height`` image. Only its aspect is
    used (by the plan): the image itself is never made at this size (see ``crop_for``)."""
    if new_resolution is None:
        return width, height
    form, w, h = parse_new_resolution(new_resolution)
    if form == "exact":
        return w, h
    current = min(width, height) if form == "short" else height
    if current >= w:
        return width, height
    scale = w / current
    return round(width * scale), round(height * scale)


def _largest_box(width: float, height: float, aspect: float) -> tuple[float, float]:
    """The size of the largest box of ``aspect`` (width / height) in ``width`` x ``height``."""
    if width / height > aspect:
        return height * aspect, height
    return width, width / aspect


def crop_for(
    width: int, height: int, new_resolution: str | int | None, size: tuple[int, int]
) -> Crop:
    """The part of a ``width`` x ``height`` image shown at ``size`` (the plan's): an exact
    ``new_resolution`` keeps its aspect's centre, then the cover-fit keeps the output
    aspect's centre of that. Scaling in between changes nothing but resolution, so both
    crops are centred boxes of the input and the input is resampled once."""
    kept: tuple[float, float] = (width, height)
    if new_resolution is not None:
        form, w, h = parse_new_resolution(new_resolution)
        if form == "exact":
            kept = _largest_box(width, height, w / h)
    box_w, box_h = _largest_box(*kept, size[0] / size[1])
    left, top = (width - box_w) / 2, (height - box_h) / 2
    return Crop((left, top, left + box_w, top + box_h), size)


def _derived(length: float) -> int:
    side = math.floor(length / DERIVED_MULTIPLE) * DERIVED_MULTIPLE
    return min(SIDE_MAX, max(SIDE_MIN, side))


def image_video_size(
    image_w: int, image_h: int, anchor: int, use_best_resolution: bool
) -> tuple[int, int]:
    """Output (width, height) for an image of ``image_w`` x ``image_h`` (module docstring)."""
    if use_best_resolution and image_w < image_h:  # portrait: the width is the short side
        return anchor, _derived(anchor * image_h / image_w)
    if use_best_resolution and image_w == image_h:
        return anchor, anchor
    return _derived(anchor * image_w / image_h), anchor


def anchor_of(inputs: dict[str, Any]) -> int:
    return int(inputs.get("height") or inputs.get("min_height") or ANCHOR_DEFAULT)


def image_plan(
    inputs: dict[str, Any], image_w: int, image_h: int, audio_seconds: float | None = None
) -> Plan:
    """The plan of an I2V or S2V request whose first image is ``image_w`` x ``image_h``."""
    shown = resolution_size(image_w, image_h, inputs.get("new_resolution"))
    w, h = image_video_size(*shown, anchor_of(inputs), bool(inputs.get("use_best_resolution")))
    duration = inputs.get("duration")
    if duration is None:
        # Encoders pad audio by a few hundredths of a second: ignore up to 0.1 s over.
        seconds = math.ceil(audio_seconds - 0.1) if audio_seconds is not None else 5
        duration = min(DURATION_MAX, max(DURATION_MIN, seconds))
    return Plan(w, h, frame_count(int(duration)))


def text_plan(inputs: dict[str, Any]) -> Plan:
    return Plan(int(inputs["width"]), int(inputs["height"]), frame_count(int(inputs["duration"])))


def video_plan(width: int, height: int, fps: Fraction, frames: int) -> Plan:
    """Foley: the input video's own geometry, sides rounded down to even numbers."""
    return Plan(width - width % 2, height - height % 2, frames, fps)
