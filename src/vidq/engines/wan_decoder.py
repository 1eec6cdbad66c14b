"""A tiny VAE decoder for sharper live previews of Wan latents, when its weights are
configured (``VIDQ_WAN_PREVIEW_DECODER``).

The design is TAEHV's (github.com/madebyollin/taehv, MIT): a small convolutional decoder
trained to turn a video model's latents (as the diffusion model sees them, no mean or std
applied) into RGB frames in [0, 1], with "memory" blocks that also see the previous frame
and optional 2x temporal and spatial upsampling between its three stages. Its published
weight files are ``taew2_1.safetensors`` (the Wan 2.1 VAE's 16 channels: the A14B models)
and ``taew2_2.safetensors`` (the 5B model's 48 channels, 2x2 pixel patches). This module
builds the base decoder with the layer layout of those files, so that they load as they are,
and runs it for previews: no temporal upsampling (one frame per latent frame: each
temporal stage's weights keep the outputs for its last frame, as TAEHV's own cheap-preview
mode does) and one 2x spatial stage (a preview is at most 256 pixels on its long side, the
latents are an eighth of the video). Encoders and the larger "super" decoders are not
built: a file of one is refused with a message saying so.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from vidq.errors import EngineUnavailable

WIDTHS = (256, 128, 64, 64)  # the base decoder's channels per stage
SPACE_UPSCALE = (True, False, False)  # 2x once: previews are small


def _conv(n_in: int, n_out: int, *, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class _Clamp(nn.Module):
    """Soft-clamps latents to about +-3 before the first convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Memory(nn.Module):
    """A residual block that sees its input and its input of the frame before."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n * 2, n), nn.ReLU(inplace=True), _conv(n, n), nn.ReLU(inplace=True), _conv(n, n)
        )
        self.skip = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))
        return out


class _TimeGrow(nn.Module):
    """The temporal upsampler's 1x1 convolution, run with stride 1 (no new frames)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(n, n, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(x)
        return out


class PreviewDecoder(nn.Module):
    """Latents (B x C x T x H x W, the pipeline's) -> T RGB frames of the first video."""

    def __init__(self, latent_channels: int = 16, patch: int = 1) -> None:
        super().__init__()
        self.latent_channels, self.patch = latent_channels, patch
        a, b, c, d = WIDTHS
        up = [nn.Upsample(scale_factor=2 if s else 1) for s in SPACE_UPSCALE]
        # The indices of this Sequential are the weight files' keys (decoder.<i>....).
        self.decoder = nn.Sequential(
            _Clamp(), _conv(latent_channels, a), nn.ReLU(inplace=True),
            _Memory(a), _Memory(a), _Memory(a), up[0], _TimeGrow(a), _conv(a, b, bias=False),
            _Memory(b), _Memory(b), _Memory(b), up[1], _TimeGrow(b), _conv(b, c, bias=False),
            _Memory(c), _Memory(c), _Memory(c), up[2], _TimeGrow(c), _conv(c, d, bias=False),
            nn.ReLU(inplace=True), _conv(d, 3 * patch * patch),
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path, device: torch.device, dtype: torch.dtype) -> PreviewDecoder:
        """The decoder of a TAEHV weight file (``.safetensors``); EngineUnavailable with
        the reason for a file that is not one."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = {k: v for k, v in load_file(str(path)).items() if k.startswith("decoder.")}
        except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
            raise EngineUnavailable(
                f"VIDQ_WAN_PREVIEW_DECODER {path} is not a readable safetensors file: {exc}"
            ) from exc
        first, last = state.get("decoder.1.weight"), state.get("decoder.22.weight")
        if first is None or last is None or first.ndim != 4 or first.shape[0] != WIDTHS[0]:
            raise EngineUnavailable(
                f"VIDQ_WAN_PREVIEW_DECODER {path} is not a TAEHV base decoder (taew2_1 or "
                "taew2_2; the larger _super decoders are not supported)"
            )
        patch = math.isqrt(int(last.shape[0]) // 3)
        decoder = cls(int(first.shape[1]), patch)
        own = decoder.state_dict()
        for key, value in state.items():
            if key.endswith(".conv.weight") and key in own and value.shape[0] > own[key].shape[0]:
                state[key] = value[-own[key].shape[0] :]  # a time stage's last-frame outputs
        try:
            decoder.load_state_dict(state)
        except RuntimeError as exc:
            raise EngineUnavailable(
                f"VIDQ_WAN_PREVIEW_DECODER {path} does not fit the TAEHV base decoder: "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        return decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """NCTHW latents -> NTCHW RGB in [0, 1], every frame at once (a frame's memory
        blocks see the frame before: zeros for the first)."""
        n, _, t, h, w = latents.shape
        x = latents.permute(0, 2, 1, 3, 4).reshape(n * t, -1, h, w)
        for block in self.decoder:
            if isinstance(block, _Memory):
                frames = x.reshape(n, t, *x.shape[1:])
                past = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 0))[:, :t].reshape(x.shape)
                x = block(x, past)
            else:
                x = block(x)
        if self.patch > 1:
            x = F.pixel_shuffle(x, self.patch)
        return x.clamp(0, 1).reshape(n, t, *x.shape[1:])

    def frames(self, latents: torch.Tensor) -> list[npt.NDArray[np.uint8]]:
        """The first video of ``latents`` as H x W x 3 uint8 frames."""
        with torch.inference_mode():
            first = self.decoder[1]
            assert isinstance(first, nn.Conv2d)
            rgb = self(latents[:1].to(first.weight))[0]  # T C H W
            pixels = (rgb * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return [np.ascontiguousarray(f) for f in pixels]
