"""MP4 encoding with PyAV (FFmpeg): H.264 yuv420p, AAC audio, faststart."""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]  # H x W x 3, RGB


def write_mp4(
    path: Path,
    frames: Iterable[Frame],
    *,
    width: int,
    height: int,
    fps: int,
    audio: npt.NDArray[np.float32] | None = None,
    sample_rate: int = 44100,
    crf: int = 20,
) -> None:
    """Encode RGB frames (and optional mono/stereo float audio in [-1, 1], shape
    ``(channels, samples)``) into a browser-playable MP4 with the moov atom up front."""
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        stream.codec_context.time_base = Fraction(1, fps)
        astream = None
        if audio is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "stereo" if audio.shape[0] == 2 else "mono"
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if astream is not None and audio is not None:
            _encode_audio(container, astream, audio, sample_rate)


def _encode_audio(
    container: av.container.OutputContainer,
    astream: av.audio.stream.AudioStream,
    audio: npt.NDArray[np.float32],
    sample_rate: int,
) -> None:
    layout = "stereo" if audio.shape[0] == 2 else "mono"
    chunk = 1024
    data = np.clip(audio, -1.0, 1.0).astype(np.float32)
    for start in range(0, data.shape[1], chunk):
        part = np.ascontiguousarray(data[:, start : start + chunk])
        frame = av.AudioFrame.from_ndarray(part, format="fltp", layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start
        for packet in astream.encode(frame):
            container.mux(packet)
    for packet in astream.encode():
        container.mux(packet)
