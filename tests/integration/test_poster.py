"""Poster frames (``media/poster.py``) from real MP4s encoded and decoded with PyAV: the
frame at a third of the video, scaled down to at most 480 px wide (never up), as a JPEG;
a file that is no video is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidq.errors import InvalidInput
from vidq.media.poster import make_poster
from vidq.media.video import write_mp4


def _video(path: Path, width: int, height: int, frames: int) -> Path:
    """Each frame one flat grey, 8 levels apart: a still's level says which frame it is."""
    shades = [np.full((height, width, 3), 8 * i, np.uint8) for i in range(frames)]
    write_mp4(path, shades, width=width, height=height, fps=16)
    return path


def test_the_poster_is_the_frame_at_a_third_scaled_to_480(tmp_path: Path) -> None:
    video = _video(tmp_path / "wide.mp4", 1280, 720, 30)
    still = tmp_path / "wide.jpg"
    make_poster(video, still)
    img = Image.open(still)
    assert img.format == "JPEG" and img.size == (480, 270)
    level = np.asarray(img.convert("L"), dtype=np.float32).mean()
    assert abs(level - 8 * 10) < 4, level  # frame 10 of 30
    assert still.stat().st_size < 60_000


def test_a_small_or_portrait_video_is_never_scaled_up(tmp_path: Path) -> None:
    for width, height in ((224, 128), (128, 224)):
        still = tmp_path / f"{width}.jpg"
        make_poster(_video(tmp_path / f"{width}.mp4", width, height, 3), still)
        assert Image.open(still).size == (width, height)


def test_a_file_that_is_no_video_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with pytest.raises(InvalidInput):
        make_poster(bad, tmp_path / "bad.jpg")
    assert not (tmp_path / "bad.jpg").exists()
