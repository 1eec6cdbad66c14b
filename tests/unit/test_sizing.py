"""The spec's sizing rules (vidq.media.sizing)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tests.support.processes import ROOT
from vidq.catalog import parse_new_resolution
from vidq.engines.preview_media import conditioning_image
from vidq.media.sizing import (
    Plan,
    crop_for,
    image_plan,
    image_video_size,
    resolution_size,
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
    assert resolution_size(320, 180, "1280x720") == (1280, 720)
    assert resolution_size(320, 180, "640x640") == (640, 640)
    assert resolution_size(320, 180, "720p") == (1280, 720)  # short side 720
    assert resolution_size(180, 320, "720p") == (720, 1280)
    assert resolution_size(320, 180, 360) == (640, 360)  # height 360
    assert resolution_size(1920, 1080, "720p") == (1920, 1080)  # only upscales
    # The aspect of an exact new_resolution decides the video's aspect.
    assert image_plan({"duration": 1, "new_resolution": "640x640"}, 320, 180).width == 480


def test_foley_keeps_the_video_geometry() -> None:
    assert video_plan(129, 97, Fraction(30000, 1001), 50) == Plan(
        128, 96, 50, Fraction(30000, 1001)
    )
    plan = Plan(128, 96, 24, Fraction(12))
    assert Plan.from_json(plan.as_json()) == plan and plan.seconds == 2.0


# --- memory is O(output), whatever the input's shape ------------------------------------

_NEW_RESOLUTIONS = st.one_of(
    st.none(),
    st.builds(lambda w, h: f"{w}x{h}", st.integers(128, 3840), st.integers(128, 3840)),
    st.builds(lambda n: f"{n}p", st.integers(128, 3840)),
    st.integers(128, 3840),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(
    width=st.integers(1, 40_000),
    height=st.integers(1, 40_000),
    new_resolution=_NEW_RESOLUTIONS,
    anchor=st.sampled_from([None, 128, 480, 720, 1920]),
    best=st.booleans(),
)
def test_the_only_image_made_is_the_output(
    width: int, height: int, new_resolution: str | int | None, anchor: int | None, best: bool
) -> None:
    inputs: dict[str, object] = {"duration": 1, "use_best_resolution": best}
    if new_resolution is not None:
        inputs["new_resolution"] = new_resolution
    if anchor is not None:
        inputs["height"] = anchor
    plan = image_plan(inputs, width, height)
    assert 128 <= plan.width <= 1920 and 128 <= plan.height <= 1920
    crop = crop_for(width, height, new_resolution, (plan.width, plan.height))
    # One resample from a part of the input straight to the output: nothing else is made.
    assert crop.size == (plan.width, plan.height)
    left, top, right, bottom = crop.box
    eps = 1e-6 * max(width, height)
    assert -eps <= left < right <= width + eps and -eps <= top < bottom <= height + eps
    assert abs((left + right) - width) <= eps and abs((top + bottom) - height) <= eps  # centred
    assert math.isclose((right - left) / (bottom - top), plan.width / plan.height, rel_tol=1e-9)


def test_crop_keeps_the_exact_new_resolution_aspect_first() -> None:
    # 16:9 input, "640x640" keeps its centre square; a 16:9 output then shows the middle
    # 9/16 of that square's height (not the whole 16:9 input).
    crop = crop_for(1600, 900, "640x640", (320, 180))
    assert crop.box == pytest.approx((350.0, 196.875, 1250.0, 703.125))
    assert crop_for(1600, 900, None, (320, 180)).box == pytest.approx((0, 0, 1600, 900))


@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(
    width=st.integers(1, 60),
    height=st.integers(1, 60),
    new_resolution=_NEW_RESOLUTIONS,
)
def test_conditioning_image_is_the_plans_size(
    tmp_path_factory: pytest.TempPathFactory,
    width: int,
    height: int,
    new_resolution: str | int | None,
) -> None:
    path = tmp_path_factory.mktemp("img") / "in.png"
    Image.new("RGB", (width, height), (200, 40, 40)).save(path)
    inputs = {"duration": 1, "height": 128, "new_resolution": new_resolution}
    plan = image_plan(inputs, width, height)
    img = conditioning_image(path, plan, new_resolution)
    assert img.size == (plan.width, plan.height)
    assert np.abs(np.asarray(img, dtype=np.int16) - (200, 40, 40)).max() <= 2


_BOMB = """
import resource, sys
from pathlib import Path
limit = 1536 * 1024 * 1024  # the old plan for this image needed 2.9 GB in one image
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from vidq.engines.preview_media import conditioning_image
from vidq.media.sizing import image_plan
plan = image_plan({"new_resolution": "3840p", "duration": 1}, 1, 50)
img = conditioning_image(Path(sys.argv[1]), plan, "3840p")
# VmHWM, not ru_maxrss: the latter keeps the peak of the forked parent from before exec
with open("/proc/self/status") as f:
    peak_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(img.width, img.height, peak_kb // 1024)
"""


def test_a_1x50_png_at_3840p_is_conditioned_in_bounded_memory(tmp_path: Path) -> None:
    # Before: scaled to 3840x192000 first (8.56 GB in the engine child, issue 12).
    path = tmp_path / "thin.png"
    Image.new("RGB", (1, 50), (10, 120, 230)).save(path)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, "-c", _BOMB, str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    width, height, peak_mb = map(int, out.stdout.split())
    assert (width, height) == (128, 480)
    assert peak_mb < 300, peak_mb
