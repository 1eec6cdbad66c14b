"""Audio with PyAV and numpy: decode any input format to float samples, measure loudness,
and synthesise the preview engine's sound (effects that follow motion, a music bed)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt

SAMPLE_RATE = 44100
Audio = npt.NDArray[np.float32]  # (channels, samples), float in [-1, 1]


def decode_audio(
    source: bytes | Path, fmt: str | None, *, max_seconds: float, rate: int = SAMPLE_RATE
) -> Audio:
    """Every sample of the first audio stream, resampled to ``rate`` (mono or stereo).
    ValueError if there is no audio, or it is longer than ``max_seconds``."""
    handle = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    limit = int(max_seconds * rate) + 1
    parts: list[Audio] = []
    total = 0
    with av.open(handle, mode="r", format=fmt) as container:
        if not container.streams.audio:
            raise ValueError("no audio stream")
        stream = container.streams.audio[0]
        channels = stream.codec_context.channels or 1
        layout = "mono" if channels == 1 else "stereo"
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                parts.append(out.to_ndarray().astype(np.float32))
                total += out.samples
            if total > limit:
                raise ValueError(f"audio is longer than {max_seconds:g} s")
        for out in resampler.resample(None):
            parts.append(out.to_ndarray().astype(np.float32))
            total += out.samples
    if total == 0:
        raise ValueError("the audio stream holds no samples")
    if total > limit:
        raise ValueError(f"audio is longer than {max_seconds:g} s")
    return np.concatenate(parts, axis=1)


def fit_length(audio: Audio, samples: int) -> Audio:
    """Trim or pad (with silence) to exactly ``samples``."""
    if audio.shape[1] >= samples:
        return audio[:, :samples]
    pad = np.zeros((audio.shape[0], samples - audio.shape[1]), dtype=np.float32)
    return np.concatenate([audio, pad], axis=1)


def loudness(audio: Audio, rate: int, fps: float, frames: int) -> npt.NDArray[np.float32]:
    """RMS loudness per video frame, scaled to [0, 1] by the clip's loudest frame
    (silence stays 0: the scale never goes below a quiet -40 dBFS)."""
    mono = audio.mean(axis=0)
    per = rate / fps
    out = np.zeros(frames, dtype=np.float32)
    for i in range(frames):
        window = mono[int(i * per) : int((i + 1) * per)]
        if window.size:
            out[i] = float(np.sqrt(np.mean(window.astype(np.float64) ** 2)))
    peak = max(float(out.max()), 0.01)
    scaled: npt.NDArray[np.float32] = np.clip(out / peak, 0.0, 1.0).astype(np.float32)
    return scaled


def foley_track(
    motion: npt.NDArray[np.float32],
    fps: float,
    prompt: str,
    *,
    music: bool,
    rate: int = SAMPLE_RATE,
) -> Audio:
    """Stereo sound for a clip: filtered noise whose level follows per-frame ``motion``
    (0..1), coloured by the prompt; with ``music`` a soft chord progression underneath."""
    digest = hashlib.sha256(prompt.encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
    samples = max(1, round(len(motion) / fps * rate))
    t = np.arange(samples, dtype=np.float64) / rate
    # Effects: noise through a moving-average low-pass whose width the prompt picks.
    noise = rng.standard_normal(samples)
    width = 2 + digest[8] % 24
    smooth = np.convolve(noise, np.ones(width) / width, mode="same")
    smooth /= max(float(np.abs(smooth).max()), 1e-9)
    level = np.interp(t * fps, np.arange(len(motion)), motion)
    left = 0.6 * smooth * level
    right = 0.6 * np.roll(smooth, 37) * level
    if music:
        root = 110.0 * 2 ** (digest[9] % 12 / 12)
        chords = ((0, 4, 7), (5, 9, 12), (7, 11, 14), (0, 4, 7))
        bar = 2.0
        bed = np.zeros(samples)
        for k, chord in enumerate(chords * int(t[-1] // (bar * 4) + 1)):
            span = (t >= k * bar) & (t < (k + 1) * bar)
            if not span.any():
                continue
            for semitone in chord:
                bed[span] += np.sin(2 * np.pi * root * 2 ** (semitone / 12) * t[span])
        bed *= 0.08
        left, right = left + bed, right + bed
    return np.clip(np.stack([left, right]), -1.0, 1.0).astype(np.float32)
