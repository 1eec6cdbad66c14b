"""The spec's sizing rules (vidq.media.sizing)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from vidq.catalog import parse_new_resolution
from vidq.media.sizing import (
    Plan,
    image_plan,
    image_video_size,
    resize_for,
    text_plan,
    video_plan,
)


def test_the_spec_example_portrait_selfie() -> None:
    # A 9:16 image at 480: use_best_resolution -> 480x832; without -> height 480.
    assert image_video_size(1080, 1920, 480, True) == (480, 832)
    assert image_video_size(1080, 1920, 480, False) == (256, 480)  # 270 -> 256 (x32, down)


@pytest.mark.parametrize(
    ("image", "anchor", "best", "want"),
    [
        ((1920, 1080), 720, False, (1280, 720)),
        ((1920, 1080), 720, True, (1280, 720)),  # landscape: the short side is the height
        ((1920, 1080), 480, False, (832, 480)),  # 853.3 -> 832: Wan's own 480p size
        ((1000, 1000), 480, True, (480, 480)),
        ((1000, 1000), 480, False, (480, 480)),
        ((640, 480), 480, False, (640, 480)),
        ((480, 640), 480, True, (480, 640)),
        ((100, 1000), 480, False, (128, 480)),  # 48 -> clamped to 128
        ((100, 1000), 480, True, (480, 1920)),  # 4800 -> clamped to 1920
    ],
)
def test_image_video_size(
    image: tuple[int, int], anchor: int, best: bool, want: tuple[int, int]
) -> None:
    w, h = image_video_size(*image, anchor, best)
    assert (w, h) == want
    assert w % 16 == 0 and h % 16 == 0


def test_anchor_is_height_then_min_height_then_480() -> None:
    assert image_plan({"duration": 1}, 1000, 1000).height == 480
    assert image_plan({"duration": 1, "min_height": 256}, 1000, 1000).height == 256
    assert image_plan({"duration": 1, "min_height": 256, "height": 320}, 1000, 1000).height == 320


def test_duration_gives_16_per_second_plus_one_frames() -> None:
    assert image_plan({"duration": 5}, 640, 480).frames == 81
    assert text_plan({"width": 320, "height": 192, "duration": 2}) == Plan(320, 192, 33)


@pytest.mark.parametrize(
    ("seconds", "frames"), [(2.0, 33), (2.04, 33), (2.3, 49), (0.2, 17), (30.0, 161), (None, 81)]
)
def test_s2v_length_follows_the_audio_without_duration(seconds: float | None, frames: int) -> None:
    assert image_plan({}, 640, 480, seconds).frames == frames
    assert image_plan({"duration": 1}, 640, 480, seconds).frames == 17


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("1280x720", ("exact", 1280, 720)),
        (" 640 X 640 ", ("exact", 640, 640)),
        ("720p", ("short", 720, 720)),
        (720, ("height", 720, 720)),
        ("1080", ("height", 1080, 1080)),
    ],
)
def test_new_resolution_forms(value: str | int, want: tuple[str, int, int]) -> None:
    assert parse_new_resolution(value) == want


@pytest.mark.parametrize("value", ["big", "720i", "10x10", "5000x100", 64, True, "x720"])
def test_new_resolution_rejects(value: str | int) -> None:
    with pytest.raises(ValueError, match="new_resolution"):
        parse_new_resolution(value)


def test_new_resolution_effects() -> None:
    assert resize_for(320, 180, "1280x720").cropped == (1280, 720)
    assert resize_for(320, 180, "640x640").cropped == (640, 640)
    assert resize_for(320, 180, "720p").cropped == (1280, 720)  # short side 720
    assert resize_for(180, 320, "720p").cropped == (720, 1280)
    assert resize_for(320, 180, 360).cropped == (640, 360)  # height 360
    assert resize_for(1920, 1080, "720p").cropped == (1920, 1080)  # only upscales
    # The aspect of an exact new_resolution decides the video's aspect.
    assert image_plan({"duration": 1, "new_resolution": "640x640"}, 320, 180).width == 480


def test_foley_keeps_the_video_geometry() -> None:
    assert video_plan(129, 97, Fraction(30000, 1001), 50) == Plan(
        128, 96, 50, Fraction(30000, 1001)
    )
    plan = Plan(128, 96, 24, Fraction(12))
    assert Plan.from_json(plan.as_json()) == plan and plan.seconds == 2.0
