"""Poster frames: the still a finished video is shown by in the web app's gallery, a JPEG
of the frame at a third of the video, at most ``POSTER_WIDTH`` pixels wide (PyAV's MJPEG
encoder: no image library needed)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from vidq.errors import InvalidInput
from vidq.media.video import small_on_one_thread

POSTER_WIDTH = 480  # at most this wide; never scaled up
_QUALITY = 4  # MJPEG qscale: 2 (best) .. 31; 4 keeps a 480 px still near 20-40 KB


def make_poster(video: Path, dst: Path, *, max_width: int = POSTER_WIDTH) -> None:
    """Write a JPEG still of ``video``'s frame at one third of its frames to ``dst``.
    Raises ``InvalidInput`` when the file has no decodable video frame."""
    try:
        with av.open(str(video)) as container:
            if not container.streams.video:
                raise InvalidInput("video", "the file has no video stream")
            stream = container.streams.video[0]
            small_on_one_thread(stream)
            target = max(stream.frames, 0) // 3  # 0 when the count is unknown: the first
            frame = None
            for index, decoded in enumerate(container.decode(stream)):
                frame = decoded
                if index >= target:
                    break
    except av.FFmpegError as exc:
        raise InvalidInput("video", f"cannot decode the video: {exc}") from exc
    if frame is None:
        raise InvalidInput("video", "the video has no frames")
    width = min(max_width, frame.width)
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    width -= width % 2
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height = width, height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qscale": str(_QUALITY)}
    encoder.flags |= av.codec.context.Flags.qscale
    still = frame.reformat(width=width, height=height, format="yuvj420p")
    still.pts = 0
    data = b"".join(bytes(p) for p in [*encoder.encode(still), *encoder.encode(None)])
    if not data:
        raise InvalidInput("video", "the poster frame did not encode")
    dst.write_bytes(data)
