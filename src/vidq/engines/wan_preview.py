"""Live previews of a Wan run from its latents, without the VAE: a linear projection of
each latent channel to RGB, per latent pixel (the approach ComfyUI's "latent2rgb" previews
take; the factors are the ones it publishes for the Wan 2.1 VAE's 16 channels, which the
Wan 2.2 A14B models use).

The pipeline's latents are in the VAE's normalised space (``(z - mean) / std``), the space
those factors were fitted in. A frame of latents stands for four frames of video at an
eighth of their size (``LATENT_FPS``). Only the frames a preview shows are projected (at
most ``MAX_FRAMES``, evenly spread), on the latents' own device, so a GPU worker copies
three channels of those frames to the CPU, not the whole latent tensor. Mid-run latents
still carry noise: the first previews are rough, then settle as the steps go on.

Latents of other widths (the 5B model's VAE: 48 channels) have no published factors here:
their channels are averaged in three groups, a grey-ish but moving picture.

With a tiny VAE decoder configured (``VIDQ_WAN_PREVIEW_DECODER``: ``wan_decoder.py``) the
same frames go through it instead: sharper, at twice the latents' size, for a few
milliseconds of GPU time.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import torch

from vidq.engines.previews import MAX_FRAMES
from vidq.engines.wan_decoder import PreviewDecoder

# latent channel -> (R, G, B) contribution, and the bias added after (ComfyUI's Wan21)
WAN21_RGB = (
    (-0.1299, -0.1692, 0.2932),
    (0.0671, 0.0406, 0.0442),
    (0.3568, 0.2548, 0.1747),
    (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328),
    (0.0296, -0.0956, -0.0665),
    (-0.3477, -0.4059, -0.2925),
    (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364),
    (-0.1293, 0.0740, 0.1636),
    (0.0680, 0.3019, 0.1128),
    (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699),
    (0.0060, -0.0633, 0.0005),
    (0.3477, 0.2275, 0.2950),
    (0.1984, 0.0913, 0.1861),
)
WAN21_BIAS = (-0.1835, -0.0868, -0.3360)


LATENT_FPS = 4.0  # a latent frame stands for 4 of the video's 16 a second


def latent_rgb(
    latents: torch.Tensor, decoder: PreviewDecoder | None = None
) -> list[npt.NDArray[np.uint8]]:
    """The first video of ``latents`` (B x C x T x H x W) as RGB frames (H x W x 3): all T,
    or ``MAX_FRAMES`` of them evenly spread, ``LATENT_FPS`` apart; through ``decoder`` when
    one is given, else projected."""
    count = latents.shape[2]
    stride = max(1, -(-count // MAX_FRAMES))
    if decoder is not None:
        return decoder.frames(latents[:1, :, ::stride])
    with torch.inference_mode():
        x = latents[0, :, ::stride].detach().float()  # C T H W, on the latents' device
        channels = x.shape[0]
        if channels == len(WAN21_RGB):
            factors = torch.tensor(WAN21_RGB, device=x.device)
            bias = torch.tensor(WAN21_BIAS, device=x.device)
            rgb = torch.einsum("cthw,ck->thwk", x, factors) + bias
        else:
            third = max(1, channels // 3)
            groups = [x[min(i * third, channels - 1) :][:third].mean(0) for i in range(3)]
            rgb = torch.stack(groups, dim=-1) * 0.5
        frames = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()
    return [np.ascontiguousarray(f) for f in frames]
