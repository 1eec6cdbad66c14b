"""Real media made in the tests: images (Pillow), WAV (stdlib wave), MP3 and MP4 (PyAV);
and what a user would check of a result: its MP4 decoded (``probe_mp4``)."""

from __future__ import annotations

import base64
import dataclasses
import io
import struct
import time
import wave
import zlib
from fractions import Fraction
from pathlib import Path

import av
import httpx
import numpy as np
from PIL import Image

from vidq.media.video import write_mp4


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth, recognisable RGB picture (gradients and a block), distinct per seed."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rng = np.random.default_rng(seed)
    a, b, c = rng.uniform(0.5, 2.0, 3)
    img = np.stack(
        [
            127 + 120 * np.sin(xx / width * np.pi * a + seed),
            127 + 120 * np.cos(yy / height * np.pi * b + seed),
            127 + 120 * np.sin((xx + yy) / (width + height) * np.pi * c),
        ],
        axis=-1,
    )
    x0, y0 = int(width * 0.2), int(height * 0.3)
    img[y0 : y0 + height // 5, x0 : x0 + width // 4] = (255 * (seed % 2), 30, 200)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def encode_image(img: Image.Image, fmt: str) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def tone(seconds: float, rate: int = 22050, *, silent_until: float = 0.0) -> np.ndarray:
    """A 440 Hz tone (float in [-1, 1]), silent for the first ``silent_until`` seconds."""
    t = np.arange(int(seconds * rate)) / rate
    signal = 0.6 * np.sin(2 * np.pi * 440 * t)
    signal[t < silent_until] = 0.0
    return signal.astype(np.float32)


def wav_bytes(signal: np.ndarray, rate: int = 22050) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((signal * 32767).astype("<i2").tobytes())
    return out.getvalue()


def mp3_bytes(signal: np.ndarray, rate: int = 22050) -> bytes:
    """MP3 through FFmpeg's libmp3lame (PyAV)."""
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=rate)
        stream.layout = "mono"
        for start in range(0, len(signal), 1152):
            frame = av.AudioFrame.from_ndarray(
                signal[None, start : start + 1152].astype(np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def moving_mp4(
    tmp: Path, width: int, height: int, frames: int, fps: int, *, still: bool = False
) -> bytes:
    """An H.264 MP4 of ``picture`` with a white square moving across it (or standing still)."""
    base = np.asarray(picture(width, height, seed=7))
    images = []
    for i in range(frames):
        img = base.copy()
        x = 0 if still else int(i / max(1, frames - 1) * (width - width // 4))
        img[height // 3 : height // 3 + height // 4, x : x + width // 4] = 255
        images.append(img)
    path = tmp / f"in-{time.monotonic_ns()}.mp4"
    write_mp4(path, iter(images), width=width, height=height, fps=Fraction(fps))
    return path.read_bytes()


def png_header_bomb(width: int, height: int) -> bytes:
    """A valid-looking PNG whose header claims ``width`` x ``height`` (tiny IDAT)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def png_bad_filter(width: int, height: int) -> bytes:
    """A PNG with all its pixel data (grey), whose last row names an unknown filter: it
    fails in the decoder, after the image's memory is taken."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    rows = (b"\x00" + bytes(width)) * (height - 1) + b"\x09" + bytes(width)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


def frames_of(data: bytes, tmp: Path) -> list[np.ndarray]:
    path = tmp / f"out-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def audio_of(data: bytes, tmp: Path) -> np.ndarray:
    """The output's audio track as mono float samples (44.1 kHz)."""
    path = tmp / f"aud-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    parts = []
    with av.open(str(path)) as c:
        resampler = av.AudioResampler(format="fltp", layout="mono", rate=44100)
        for frame in c.decode(audio=0):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray()[0])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def cover(img: Image.Image, width: int, height: int) -> np.ndarray:
    """What the engine's first frame should look like: scaled to cover, centre-cropped."""
    scale = max(width / img.width, height / img.height)
    size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)).convert("RGB"))


def diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference per channel value (0..255)."""
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


@dataclasses.dataclass
class VideoInfo:
    width: int
    height: int
    frames: int
    duration: float
    codec: str
    pix_fmt: str
    audio_codec: str | None
    audio_duration: float | None


def probe_mp4(data: bytes, tmp: Path) -> VideoInfo:
    """Decode an MP4 with PyAV and report what a user would check."""
    path = tmp / f"probe-{time.monotonic_ns()}.mp4"
    path.write_bytes(data)
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = sum(1 for _ in c.decode(video=0))
        a = c.streams.audio[0] if c.streams.audio else None
        audio_dur = float(a.duration * a.time_base) if a is not None and a.duration else None
        return VideoInfo(
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=frames,
            duration=frames / float(v.average_rate or Fraction(16)),
            codec=v.codec_context.name,
            pix_fmt=v.codec_context.pix_fmt or "",
            audio_codec=a.codec_context.name if a is not None else None,
            audio_duration=audio_dur,
        )


def result_mp4(client: httpx.Client, model: str, rid: str) -> bytes:
    r = client.get(f"/queue/{model}/requests/{rid}")
    assert r.status_code == 200, r.text
    data_uri = r.json()["video"]["data_uri"]
    if data_uri.startswith("http"):
        got = httpx.get(data_uri, timeout=30)
        assert got.status_code == 200
        return got.content
    return base64.b64decode(data_uri)
