"""Live previews, as an engine child writes them: the video so far as a small animated WebP.

An engine shows its frames on ``Previews`` (``engines/base.py``); in the child that is a
``PreviewWriter``, which publishes at most one preview per interval: it shrinks the frames
(at most ``MAX_SIDE`` pixels on the long side, at most ``MAX_FRAMES`` of them, evenly
spread), encodes them as one animated WebP (looping, at the video's pace), writes it over
the job's preview file (a new file renamed into place, so a reader never sees half of
one) and tells the worker, which publishes it to the job's status.

Why an animated WebP: a browser shows it in an ``<img>`` (the status's signed URL), it
moves like the video, and at this size it is a few tens of kilobytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from io import BytesIO
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

MAX_SIDE = 256  # pixels on the long side
MAX_FRAMES = 16
MAX_BYTES = 2 << 20  # a preview is never larger (the worker protocol refuses more)
FPS = 16  # the pace of the videos vidq makes


class PreviewWriter:
    """``Previews`` for one job in an engine child: writes ``path``, then ``sent(step)``."""

    def __init__(
        self,
        path: str,
        interval_s: float,
        sent: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path) if path else None
        self.interval_s = interval_s
        self.sent = sent
        self.clock = clock
        # The first preview waits one interval too: a job shorter than that shows none.
        self._next = clock() + interval_s
        self.published = 0
        # What previews cost the run: from a ``due`` that said yes (the engine then makes
        # the frames: a latent projection, a copy) to the end of ``publish``.
        self.seconds = 0.0
        self._asked: float | None = None

    def due(self) -> bool:
        if self.path is None or self.interval_s <= 0 or self.clock() < self._next:
            return False
        if self._asked is None:
            self._asked = time.perf_counter()
        return True

    def publish(self, frames: Sequence[npt.NDArray[np.uint8]], step: int, fps: float = FPS) -> None:
        if not frames or not self.due():
            return
        assert self.path is not None and self._asked is not None
        started, self._asked = self._asked, None
        data = encode(frames, fps)
        if len(data) <= MAX_BYTES:
            partial = self.path.with_name(self.path.name + ".part")
            partial.write_bytes(data)
            os.replace(partial, self.path)
            self.published += 1
            self.sent(step)
        self.seconds += time.perf_counter() - started
        self._next = self.clock() + self.interval_s


def encode(frames: Sequence[npt.NDArray[np.uint8]], fps: float = FPS) -> bytes:
    """``frames`` (H x W x 3 RGB, ``fps`` of them a second) as a looping animated WebP,
    shrunk to ``MAX_SIDE`` and at most ``MAX_FRAMES`` frames, each shown for as long as the
    frames it stands for."""
    stride = max(1, -(-len(frames) // MAX_FRAMES))
    chosen = frames[::stride]
    height, width = chosen[0].shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    size = (max(2, round(width * scale)), max(2, round(height * scale)))
    images = [_image(f, size) for f in chosen]
    out = BytesIO()
    images[0].save(
        out, format="WEBP", save_all=True, append_images=images[1:], loop=0,
        duration=round(1000 * stride / fps), quality=60, method=0,
    )  # fmt: skip
    return out.getvalue()


def shrink(frame: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """A cheap smaller copy of a frame to keep for later previews (every n-th pixel, no
    larger than twice ``MAX_SIDE``): an engine that keeps its frames for previews keeps
    these, not the full-size ones."""
    step = max(1, max(frame.shape[:2]) // (2 * MAX_SIDE))
    return np.ascontiguousarray(frame[::step, ::step, :3])


def _image(frame: npt.NDArray[np.uint8], size: tuple[int, int]) -> Image.Image:
    img = Image.fromarray(np.ascontiguousarray(frame[..., :3]), "RGB")
    return img if img.size == size else img.resize(size, Image.Resampling.BILINEAR)
