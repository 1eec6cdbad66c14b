"""MP4 encoding (``media/video.py``'s ``write_mp4``) with real FFmpeg, read back with PyAV:
the moov atom up front (faststart, what a browser needs to start playing), H.264 yuv420p,
the facts the answers report, and the encoder's threads: one for small frames, x264's own
choice from ``ONE_THREAD_PIXELS`` on. x264 writes its settings into the stream (an SEI
message, ``options: ... threads=N ...``), which is where the test reads them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import av
import numpy as np
import pytest

from vidq.media.video import ONE_THREAD_PIXELS, output_facts, write_mp4


def _encode(path: Path, width: int, height: int, frames: int = 9) -> bytes:
    shades = [np.full((height, width, 3), 15 * i, np.uint8) for i in range(frames)]
    write_mp4(path, shades, width=width, height=height, fps=16)
    return path.read_bytes()


def _x264_threads(data: bytes) -> int:
    found = re.search(rb"x264 - core .*? threads=(\d+) ", data)
    assert found, "no x264 settings in the stream"
    return int(found.group(1))


@pytest.mark.parametrize(
    ("width", "height", "one_thread"),
    [(128, 128, True), (256, 256, True), (480, 272, False)],
)  # fmt: skip
def test_small_frames_are_encoded_on_one_thread_and_larger_on_x264s_threads(
    tmp_path: Path, width: int, height: int, one_thread: bool
) -> None:
    """On one thread a 128x128 clip encodes in half the CPU time, and as fast (2 cores);
    from 480x272 x264's threads are faster. The threshold is the product of the sides."""
    assert (width * height <= ONE_THREAD_PIXELS) == one_thread
    threads = _x264_threads(_encode(tmp_path / "v.mp4", width, height))
    alone = (os.cpu_count() or 1) == 1  # x264's own choice on one core is one thread
    assert (threads == 1) == (one_thread or alone), threads


def test_the_video_is_browser_playable_and_its_facts_read_back(tmp_path: Path) -> None:
    data = _encode(tmp_path / "v.mp4", 160, 128, frames=17)
    assert data.index(b"moov") < data.index(b"mdat")  # faststart
    with av.open(str(tmp_path / "v.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
    assert output_facts(tmp_path / "v.mp4") == {
        "width": 160, "height": 128, "fps": 16.0, "frames": 17, "seconds": 1.062,
    }  # fmt: skip
