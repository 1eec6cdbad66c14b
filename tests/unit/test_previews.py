"""The preview writer (one per interval, atomic files, bounded size), the latent
projection of Wan latents, and the tiny VAE decoder that loads TAEHV's weight files.

torch is imported by the tests that use it, not at the top: every xdist worker imports
every test module to collect it (about 1.5 CPU-s each for torch)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
from PIL import Image

from vidq.engines.previews import MAX_FRAMES, MAX_SIDE, PreviewWriter, encode, shrink
from vidq.errors import EngineUnavailable

if TYPE_CHECKING:
    from vidq.engines.wan_decoder import PreviewDecoder


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
    import torch

    from vidq.engines.wan_preview import latent_rgb

    latents = torch.randn(1, 16, 5, 12, 20)
    frames = latent_rgb(latents)
    assert len(frames) == 5 and frames[0].shape == (12, 20, 3) and frames[0].dtype == np.uint8
    # the projection is linear per latent pixel: zero latents give the bias's colour
    (flat,) = latent_rgb(torch.zeros(1, 16, 1, 2, 2))
    assert flat[0, 0].tolist() == [104, 116, 85]  # ((bias + 1) * 127.5), rounded
    wide = latent_rgb(torch.randn(1, 48, 3, 4, 4))  # no published factors: grouped means
    assert len(wide) == 3 and wide[0].shape == (4, 4, 3)


# -- the tiny VAE decoder (TAEHV's layout) -----------------------------------------------
def _taehv_file(path: Path, latent_channels: int = 16, patch: int = 1) -> PreviewDecoder:
    """A weight file laid out as TAEHV's published ones (encoder and decoder keys; the
    second and third temporal stages trained at stride 2: twice the rows), from a random
    decoder; returns that decoder as the file's rows it should use."""
    import torch
    from safetensors.torch import save_file

    from vidq.engines.wan_decoder import PreviewDecoder

    torch.manual_seed(0)
    made = PreviewDecoder(latent_channels, patch)
    state = {k: v.clone() for k, v in made.state_dict().items()}
    for i in (13, 19):
        key = f"decoder.{i}.conv.weight"
        state[key] = torch.cat([torch.randn_like(state[key]), state[key]])  # first frame, last
    state["encoder.0.weight"] = torch.randn(64, 3 * patch * patch, 3, 3)
    save_file(state, str(path))
    return made


@pytest.mark.parametrize(("channels", "patch", "size"), [(16, 1, (24, 40)), (48, 2, (48, 80))])
def test_a_taehv_weight_file_loads_and_decodes_one_frame_per_latent_frame(
    tmp_path: Path, channels: int, patch: int, size: tuple[int, int]
) -> None:
    import torch

    from vidq.engines.wan_decoder import PreviewDecoder
    from vidq.engines.wan_preview import latent_rgb

    made = _taehv_file(tmp_path / "taew.safetensors", channels, patch)
    loaded = PreviewDecoder.load(tmp_path / "taew.safetensors", torch.device("cpu"), torch.float32)
    assert (loaded.latent_channels, loaded.patch) == (channels, patch)
    latents = torch.randn(1, channels, 5, 12, 20)
    frames = loaded.frames(latents)
    assert len(frames) == 5 and frames[0].shape == (*size, 3) and frames[0].dtype == np.uint8
    # the temporal stages use the rows of the last frame: the same as the decoder they came from
    assert all(np.array_equal(a, b) for a, b in zip(frames, made.frames(latents), strict=True))
    # a frame's memory blocks see the frame before: frames differ from decoding each alone
    alone = loaded.frames(latents[:, :, 1:2])[0]
    assert not np.array_equal(alone, frames[1])
    assert np.array_equal(loaded.frames(latents[:, :, :1])[0], frames[0])  # no frame before
    assert len(latent_rgb(latents, loaded)) == 5


def test_a_file_that_is_no_taehv_decoder_is_refused_saying_why(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from vidq.engines.wan_decoder import PreviewDecoder

    cpu, f32 = torch.device("cpu"), torch.float32
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EngineUnavailable, match="not a readable safetensors file"):
        PreviewDecoder.load(tmp_path / "junk.safetensors", cpu, f32)
    save_file({"decoder.0.weight": torch.zeros(512, 16, 1, 1)}, str(tmp_path / "super.safetensors"))
    with pytest.raises(EngineUnavailable, match="_super decoders are not supported"):
        PreviewDecoder.load(tmp_path / "super.safetensors", cpu, f32)
    state = PreviewDecoder().state_dict()
    state["decoder.3.conv.0.weight"] = torch.zeros(256, 256, 3, 3)  # the wrong shape
    save_file(dict(state), str(tmp_path / "bent.safetensors"))
    with pytest.raises(EngineUnavailable, match="does not fit the TAEHV base decoder"):
        PreviewDecoder.load(tmp_path / "bent.safetensors", cpu, f32)
