"""The preview writer (one per interval, atomic files, bounded size) and the latent
projection of Wan latents."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vidq.engines.previews import MAX_FRAMES, MAX_SIDE, PreviewWriter, encode, shrink
from vidq.engines.wan_preview import latent_rgb


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frames(n: int, h: int = 720, w: int = 1280) -> list[np.ndarray]:
    return [np.full((h, w, 3), i * 10 % 256, dtype=np.uint8) for i in range(n)]


def test_at_most_one_preview_per_interval_and_none_before_the_first(tmp_path: Path) -> None:
    clock, sent = Clock(), []
    writer = PreviewWriter(str(tmp_path / "p.webp"), 2.0, sent.append, clock)
    assert not writer.due()  # the first waits one interval
    writer.publish(_frames(3, 64, 64), 1)
    assert sent == [] and not (tmp_path / "p.webp").exists()
    clock.now += 2.0
    assert writer.due()
    writer.publish(_frames(3, 64, 64), 2)
    assert sent == [2] and (tmp_path / "p.webp").exists()
    clock.now += 1.9
    writer.publish(_frames(3, 64, 64), 3)
    assert sent == [2]
    clock.now += 0.2
    writer.publish(_frames(4, 64, 64), 4)
    assert sent == [2, 4] and writer.published == 2 and writer.seconds > 0
    assert list(tmp_path.iterdir()) == [tmp_path / "p.webp"]  # no partial file is left


def test_an_interval_of_zero_or_no_path_publishes_nothing(tmp_path: Path) -> None:
    clock, sent = Clock(), []
    for writer in (PreviewWriter(str(tmp_path / "p.webp"), 0.0, sent.append, clock),
                   PreviewWriter("", 1.0, sent.append, clock)):  # fmt: skip
        clock.now += 10
        assert not writer.due()
        writer.publish(_frames(2, 32, 32), 1)
    assert sent == [] and list(tmp_path.iterdir()) == []


def test_the_preview_is_small_and_moves() -> None:
    data = encode(_frames(81))  # 81 frames of 1280x720
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP" and max(img.size) == MAX_SIDE
        assert img.size == (256, 144) and img.n_frames <= MAX_FRAMES
        assert img.info["loop"] == 0
    assert len(data) < 200_000
    assert shrink(_frames(1)[0]).shape == (360, 640, 3)


def test_latents_become_one_rgb_frame_per_latent_frame() -> None:
    latents = torch.randn(1, 16, 5, 12, 20)
    frames = latent_rgb(latents)
    assert len(frames) == 5 and frames[0].shape == (12, 20, 3) and frames[0].dtype == np.uint8
    # the projection is linear per latent pixel: zero latents give the bias's colour
    (flat,) = latent_rgb(torch.zeros(1, 16, 1, 2, 2))
    assert flat[0, 0].tolist() == [104, 116, 85]  # ((bias + 1) * 127.5), rounded
    wide = latent_rgb(torch.randn(1, 48, 3, 4, 4))  # no published factors: grouped means
    assert len(wide) == 3 and wide[0].shape == (4, 4, 3)
