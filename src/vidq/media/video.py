"""MP4 encoding and video reading with PyAV (FFmpeg): H.264 yuv420p, AAC audio, faststart."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]  # H x W x 3, RGB

# Frames this small are encoded and decoded on one thread: the codec's threads cost more
# than they give there (128x128, 17 frames: 8 ms to encode on one thread, 17 ms with x264's
# default threads, on 2 cores; at 256x256 the wall time is the same on one; from 480x272
# its threads are faster). Decoding the first frames of a small clip: 0.8 ms against 1.6.
ONE_THREAD_PIXELS = 256 * 256


def small_on_one_thread(stream: av.video.stream.VideoStream) -> None:
    """Decode ``stream`` on one thread if its frames are small (``ONE_THREAD_PIXELS``);
    call before the first frame is decoded."""
    ctx = stream.codec_context
    if ctx.width * ctx.height <= ONE_THREAD_PIXELS:
        ctx.thread_count = 1


def write_mp4(
    path: Path,
    frames: Iterable[Frame],
    *,
    width: int,
    height: int,
    fps: int | Fraction,
    audio: npt.NDArray[np.float32] | None = None,
    sample_rate: int = 44100,
    crf: int = 20,
    threads: int | None = None,
) -> None:
    """Encode RGB frames (and optional mono/stereo float audio in [-1, 1], shape
    ``(channels, samples)``) into a browser-playable MP4 with the moov atom up front.
    ``threads``: the encoder's; by default one for small frames (``ONE_THREAD_PIXELS``)
    and x264's own choice for larger ones, which ``0`` asks for at any size."""
    with av.open(str(path), mode="w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        if threads is None:
            threads = 1 if width * height <= ONE_THREAD_PIXELS else 0
        stream.thread_count = threads
        stream.codec_context.time_base = 1 / Fraction(fps)
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


@dataclasses.dataclass(frozen=True, slots=True)
class VideoMeta:
    """What a video input holds."""

    width: int
    height: int
    fps: Fraction
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / float(self.fps)


def _open(source: bytes | Path, fmt: str | None) -> av.container.InputContainer:
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    return av.open(handle, mode="r", format=fmt)


def probe_video(source: bytes | Path, fmt: str | None, *, max_frames: int) -> VideoMeta:
    """Size, frame rate and frame count of the first video stream, counting packets
    (no full decode) and decoding the first frame to prove the stream is readable.
    ValueError if there is no video or it has more than ``max_frames`` frames."""
    with _open(source, fmt) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
        fps = Fraction(stream.average_rate or stream.guessed_rate or 0)
        if not width or not height or fps <= 0:
            raise ValueError("the video stream has no size or frame rate")
        frames = 0
        for packet in container.demux(stream):
            if packet.size:
                frames += 1
                if frames > max_frames:
                    raise ValueError(f"the video has more than {max_frames} frames")
    with _open(source, fmt) as container:
        small_on_one_thread(container.streams.video[0])
        if next(iter(container.decode(video=0)), None) is None:
            raise ValueError("the video stream holds no decodable frame")
    return VideoMeta(width=width, height=height, fps=fps.limit_denominator(1001), frames=frames)


def output_facts(path: Path) -> dict[str, Any] | None:
    """A finished video's size, frame rate and length, as the answers report them
    (``{width, height, fps, frames, seconds}``); None if it cannot be read."""
    try:
        meta = probe_video(path, None, max_frames=OUTPUT_FRAMES_MAX)
    except (ValueError, OSError, av.FFmpegError):
        return None
    return {
        "width": meta.width,
        "height": meta.height,
        "fps": round(float(meta.fps), 3),
        "frames": meta.frames,
        "seconds": round(meta.seconds, 3),
    }


# Far above any output (10 s at 60 fps is 600 frames): a bound on the probe, not a rule.
OUTPUT_FRAMES_MAX = 100_000


def read_frames(
    source: bytes | Path, fmt: str | None, *, width: int | None = None, height: int | None = None
) -> Iterator[Frame]:
    """The video's frames as RGB arrays, scaled to ``width`` x ``height`` if given."""
    with _open(source, fmt) as container:
        for frame in container.decode(video=0):
            if width and height:
                frame = frame.reformat(width=width, height=height)
            yield np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)


def is_browser_mp4(path: Path) -> bool:
    """Whether ``path`` is an MP4 with H.264 yuv420p video (and AAC audio, if any)."""
    try:
        with av.open(str(path)) as container:
            if "mp4" not in container.format.name.split(","):
                return False
            if not container.streams.video:
                return False
            video = container.streams.video[0].codec_context
            if video.name != "h264" or video.pix_fmt != "yuv420p":
                return False
            return all(a.codec_context.name == "aac" for a in container.streams.audio)
    except (av.FFmpegError, OSError):
        return False


def transcode_mp4(src: Path, dst: Path) -> None:
    """Re-encode any video file FFmpeg reads into a browser-playable MP4 (``write_mp4``),
    keeping its frame rate and first audio track."""
    with av.open(str(src)) as container:
        if not container.streams.video:
            raise ValueError(f"{src.name} has no video stream")
        stream = container.streams.video[0]
        fps = round(float(stream.average_rate or 16))
        frames: list[Frame] = [
            np.asarray(f.to_ndarray(format="rgb24"), dtype=np.uint8)
            for f in container.decode(stream)
        ]
    if not frames:
        raise ValueError(f"{src.name} has no video frames")
    audio, rate = _decode_audio(src)
    height, width = frames[0].shape[:2]
    even = [f[: height - height % 2, : width - width % 2] for f in frames]
    write_mp4(
        dst,
        iter(even),
        width=width - width % 2,
        height=height - height % 2,
        fps=max(1, fps),
        audio=audio,
        sample_rate=rate,
    )


def _decode_audio(src: Path) -> tuple[npt.NDArray[np.float32] | None, int]:
    with av.open(str(src)) as container:
        if not container.streams.audio:
            return None, 44100
        stream = container.streams.audio[0]
        rate = stream.codec_context.sample_rate or 44100
        layout = "stereo" if stream.codec_context.channels >= 2 else "mono"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        parts: list[npt.NDArray[np.float32]] = []
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().astype(np.float32))
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().astype(np.float32))
    if not parts:
        return None, rate
    return np.concatenate(parts, axis=1), rate
