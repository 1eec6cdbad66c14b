"""Wan 2.2 component configs (published full-size and tiny) and random-weight builders.

The full-size dicts restate the published ``Wan2.2-{T2V,I2V}-A14B-Diffusers`` configs so that
``bench/gpu_wan.py`` can build the real architecture with random weights and no download.
The tiny ones keep every structural feature (two experts, UMT5 encoder, causal 3D VAE) at a
size that runs on a CPU in about a second; tests save them in diffusers layout to a
temporary models folder. Nothing here reads or downloads weights.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from safetensors.torch import save_file
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

from vidq.engines.wan_layout import (
    HIGH_NOISE_LORA,
    LIGHTNING_DIR,
    LIGHTNING_FOLDERS,
    LOW_NOISE_LORA,
    wan_weights,
)


@dataclasses.dataclass(frozen=True, slots=True)
class WanConfigs:
    """The configs of one Wan 2.2 A14B pipeline (both experts share one transformer config)."""

    transformer: dict[str, Any]
    text_encoder: dict[str, Any]
    vae: dict[str, Any]
    boundary_ratio: float
    lora_rank: int


_A14B_TRANSFORMER: dict[str, Any] = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 40,
    "attention_head_dim": 128,
    "in_channels": 16,
    "out_channels": 16,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 13824,
    "num_layers": 40,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "image_dim": None,
    "added_kv_proj_dim": None,
    "rope_max_seq_len": 1024,
}
_UMT5_XXL: dict[str, Any] = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "layer_norm_epsilon": 1e-6,
    "tie_word_embeddings": False,
}
_WAN21_VAE: dict[str, Any] = {
    "base_dim": 96,
    "z_dim": 16,
    "dim_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "temperal_downsample": [False, True, True],
}

_TINY_TRANSFORMER: dict[str, Any] = {
    **_A14B_TRANSFORMER,
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "text_dim": 32,
    "ffn_dim": 32,
    "num_layers": 2,
    "rope_max_seq_len": 32,
}
_TINY_UMT5: dict[str, Any] = {
    **_UMT5_XXL,
    "d_model": 32,
    "d_kv": 8,
    "d_ff": 64,
    "num_layers": 2,
    "num_heads": 4,
    "relative_attention_num_buckets": 8,
    "relative_attention_max_distance": 16,
}
_TINY_VAE: dict[str, Any] = {
    **_WAN21_VAE,
    "base_dim": 3,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
}


def configs(family: str, *, tiny: bool) -> WanConfigs:
    """Published (or tiny) configs of Wan2.2 T2V-A14B (``t2v``) or I2V-A14B (``i2v``).

    I2V differs from T2V by its input channels (noise 16 + mask 4 + image latents 16) and its
    expert boundary (0.900 against 0.875).
    """
    transformer = dict(_TINY_TRANSFORMER if tiny else _A14B_TRANSFORMER)
    if family == "i2v":
        transformer["in_channels"] = 36
    return WanConfigs(
        transformer=transformer,
        text_encoder=dict(_TINY_UMT5 if tiny else _UMT5_XXL),
        vae=dict(_TINY_VAE if tiny else _WAN21_VAE),
        boundary_ratio=0.9 if family == "i2v" else 0.875,
        lora_rank=4 if tiny else 64,
    )


def tiny_tokenizer(vocab_size: int) -> T5Tokenizer:
    """A small SentencePiece-style (unigram) tokenizer: letters, digits and a few words.

    Ids stay below ``vocab_size`` so it can drive the full-size UMT5 embedding too.
    """
    pieces = ["<pad>", "</s>", "<unk>"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [str(d) for d in range(10)]
    pieces += ["▁" + w for w in "a an the cat dog on in of and with runs walks sea sky".split()]
    vocab = [(p, -float(i)) for i, p in enumerate(pieces)]
    assert len(vocab) <= vocab_size
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def build_pipeline(
    family: str, cfg: WanConfigs, *, dtype: torch.dtype = torch.float32, seed: int = 0
) -> WanPipeline | WanImageToVideoPipeline:
    """A pipeline with random weights built from ``cfg``, on the current default device."""
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build big models directly in bf16, never in fp32 first
    try:
        tokenizer = tiny_tokenizer(cfg.text_encoder["vocab_size"])
        text_encoder = UMT5EncoderModel(UMT5Config(**cfg.text_encoder))
        text_encoder.eval()  # type: ignore[no-untyped-call]
        vae = AutoencoderKLWan(**cfg.vae).eval()
        experts = [WanTransformer3DModel(**cfg.transformer).eval() for _ in range(2)]
    finally:
        torch.set_default_dtype(previous)
    # The published pipelines ship UniPC with flow sigmas.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    )
    parts: dict[str, Any] = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
        "transformer": experts[0],
        "transformer_2": experts[1],
        "boundary_ratio": cfg.boundary_ratio,
    }
    if family == "i2v":
        return WanImageToVideoPipeline(**parts)
    return WanPipeline(**parts)


def lightx2v_lora(
    cfg: WanConfigs, *, scale: float = 0.02, seed: int = 1
) -> dict[str, torch.Tensor]:
    """A random LoRA in the lightx2v key format (``diffusion_model.blocks.N.self_attn.q.
    lora_down.weight`` ...), covering the attention and FFN layers of every block."""
    gen = torch.Generator().manual_seed(seed)
    t = cfg.transformer
    dim = t["num_attention_heads"] * t["attention_head_dim"]
    rank = cfg.lora_rank
    shapes: dict[str, tuple[int, int]] = {}  # module -> (in, out)
    for i in range(t["num_layers"]):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                shapes[f"blocks.{i}.{attn}.{proj}"] = (dim, dim)
        shapes[f"blocks.{i}.ffn.0"] = (dim, t["ffn_dim"])
        shapes[f"blocks.{i}.ffn.2"] = (t["ffn_dim"], dim)
    state: dict[str, torch.Tensor] = {}
    for name, (fan_in, fan_out) in shapes.items():
        down = torch.randn(rank, fan_in, generator=gen) / math.sqrt(fan_in)
        up = torch.randn(fan_out, rank, generator=gen) * scale
        state[f"diffusion_model.{name}.lora_down.weight"] = down.to(torch.bfloat16)
        state[f"diffusion_model.{name}.lora_up.weight"] = up.to(torch.bfloat16)
        state[f"diffusion_model.{name}.alpha"] = torch.tensor(float(rank))
    return state


def write_tiny_models(models_dir: Path, families: tuple[str, ...] = ("t2v", "i2v")) -> None:
    """Save tiny random-weight pipelines and Lightning LoRAs in the layout the engine reads
    (``vidq.engines.wan_layout``)."""
    for family in families:
        cfg = configs(family, tiny=True)
        weights = wan_weights(models_dir, family)
        build_pipeline(family, cfg).save_pretrained(weights.pipeline_dir)
        lora_dir = models_dir / LIGHTNING_DIR / LIGHTNING_FOLDERS[family]
        lora_dir.mkdir(parents=True, exist_ok=True)
        save_file(lightx2v_lora(cfg, seed=11), str(lora_dir / HIGH_NOISE_LORA))
        save_file(lightx2v_lora(cfg, seed=12), str(lora_dir / LOW_NOISE_LORA))


def write_tiny_ti2v(models_dir: Path) -> None:
    """Save a tiny random-weight TI2V-5B-style pipeline (one expert, the Wan 2.2 VAE with 48
    latent channels and a 16x spatial downsampling, per-frame timesteps)."""
    torch.manual_seed(0)
    vae = AutoencoderKLWan(
        base_dim=8,
        decoder_base_dim=8,
        z_dim=48,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=[0.0] * 48,
        latents_std=[1.0] * 48,
    )
    transformer = WanTransformer3DModel(
        **{**_TINY_TRANSFORMER, "in_channels": 48, "out_channels": 48}
    )
    pipe = WanPipeline(
        tokenizer=tiny_tokenizer(_TINY_UMT5["vocab_size"]),
        text_encoder=UMT5EncoderModel(UMT5Config(**_TINY_UMT5)),
        vae=vae,
        scheduler=UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
        ),
        transformer=transformer,
        transformer_2=None,
        boundary_ratio=None,
        expand_timesteps=True,
    )
    pipe.save_pretrained(wan_weights(models_dir, "t2v", "ti2v-5b").pipeline_dir)
