"""Tiny LTX-2 component configs and a random-weight builder, for tests and the bench.

Every component is the real diffusers / transformers class the published pipeline uses
(``LTX2VideoTransformer3DModel``, ``AutoencoderKLLTX2Video``, ``AutoencoderKLLTX2Audio``,
``LTX2Vocoder``, ``LTX2TextConnectors``, ``Gemma3ForConditionalGeneration`` and a
``GemmaTokenizer`` built in code), at a size that runs on a CPU in seconds. The audio chain
keeps the published ratios: 16 kHz mel spectrograms with a hop of 160 samples, and a vocoder
that upsamples them to 24 kHz (x240). Nothing here reads or downloads weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKLLTX2Audio,
    AutoencoderKLLTX2Video,
    FlowMatchEulerDiscreteScheduler,
    LTX2Pipeline,
    LTX2VideoTransformer3DModel,
)
from diffusers.pipelines.ltx2 import LTX2TextConnectors
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder
from transformers import Gemma3Config, Gemma3ForConditionalGeneration, GemmaTokenizer

from vidq.engines.ltx2_layout import DEFAULT_FOLDER, ltx2_weights

TEXT_DIM = 32  # Gemma hidden size = the connectors' width (heads x head dim)
TEXT_LAYERS = 2
MEL_BINS = 8
VOCAB = 64
TOKENS = 32  # the tiny tokenizer's context

_GEMMA: dict[str, Any] = {
    "text_config": {
        "vocab_size": VOCAB,
        "hidden_size": TEXT_DIM,
        "intermediate_size": 32,
        "num_hidden_layers": TEXT_LAYERS,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 8,
        "max_position_embeddings": 256,
        "sliding_window": 16,
    },
    "vision_config": {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 16,
        "patch_size": 8,
    },
    "mm_tokens_per_image": 4,
    "boi_token_index": VOCAB - 3,
    "eoi_token_index": VOCAB - 2,
    "image_token_index": VOCAB - 1,
}
_TRANSFORMER: dict[str, Any] = {
    "in_channels": 4,
    "out_channels": 4,
    "patch_size": 1,
    "patch_size_t": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "cross_attention_dim": 16,
    "audio_in_channels": 4,
    "audio_out_channels": 4,
    "audio_num_attention_heads": 2,
    "audio_attention_head_dim": 4,
    "audio_cross_attention_dim": 8,
    "num_layers": 2,
    "qk_norm": "rms_norm_across_heads",
    "caption_channels": TEXT_DIM,
    "rope_double_precision": False,
    "rope_type": "split",
}
_CONNECTORS: dict[str, Any] = {
    "caption_channels": TEXT_DIM,
    "text_proj_in_factor": TEXT_LAYERS + 1,  # every hidden state plus the embeddings
    "video_connector_num_attention_heads": 4,
    "video_connector_attention_head_dim": 8,
    "video_connector_num_layers": 1,
    "video_connector_num_learnable_registers": None,
    "audio_connector_num_attention_heads": 4,
    "audio_connector_attention_head_dim": 8,
    "audio_connector_num_layers": 1,
    "audio_connector_num_learnable_registers": None,
    "connector_rope_base_seq_len": 32,
    "rope_theta": 10000.0,
    "rope_double_precision": False,
    "causal_temporal_positioning": False,
    "rope_type": "split",
}
_VIDEO_VAE: dict[str, Any] = {  # the published structure (32x space, 8x time), few channels
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (8, 8, 8, 8),
    "decoder_block_out_channels": (8, 16, 32),  # each upsampler halves the channels
    "layers_per_block": (1, 1, 1, 1, 1),
    "decoder_layers_per_block": (1, 1, 1, 1),
    "timestep_conditioning": False,
    "spatial_compression_ratio": 32,  # as published: the first down block is spatial only
    "temporal_compression_ratio": 8,
    "decoder_spatial_padding_mode": "zeros",  # reflect needs latents wider than 1
}
_AUDIO_VAE: dict[str, Any] = {
    "base_channels": 4,
    "output_channels": 2,
    "ch_mult": (1,),
    "num_res_blocks": 1,
    "attn_resolutions": None,
    "in_channels": 2,
    "resolution": 32,
    "latent_channels": 2,
    "norm_type": "pixel",
    "causality_axis": "height",
    "dropout": 0.0,
    "mid_block_add_attention": False,
    "sample_rate": 16000,
    "mel_hop_length": 160,
    "is_causal": True,
    "mel_bins": MEL_BINS,
}
_VOCODER: dict[str, Any] = {
    "in_channels": 2 * MEL_BINS,  # stereo mel spectrograms, flattened
    "hidden_channels": 32,
    "out_channels": 2,
    "upsample_kernel_sizes": [8, 12, 20],
    "upsample_factors": [4, 6, 10],  # x240: a 160-sample hop at 16 kHz -> 24 kHz
    "resnet_kernel_sizes": [3],
    "resnet_dilations": [[1, 3, 5]],
    "leaky_relu_negative_slope": 0.1,
    "output_sampling_rate": 24000,
}


def tiny_tokenizer() -> GemmaTokenizer:
    """A Gemma tokenizer over letters, digits and the word separator, ids below ``VOCAB``."""
    pieces = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "▁"]
    pieces += [chr(c) for c in range(ord("a"), ord("z") + 1)]
    pieces += [str(d) for d in range(10)]
    assert len(pieces) < _GEMMA["boi_token_index"]
    # A short context keeps the tiny pipeline fast: the engine pads prompts to
    # min(1024, model_max_length) tokens, as many as the published model reads.
    return GemmaTokenizer(
        vocab={p: i for i, p in enumerate(pieces)}, merges=[], model_max_length=TOKENS
    )


def build_tiny_pipeline(seed: int = 0) -> LTX2Pipeline:
    """An LTX2 text-to-video pipeline with tiny random weights (see module docstring)."""
    torch.manual_seed(seed)
    text_encoder = Gemma3ForConditionalGeneration(Gemma3Config(**_GEMMA))
    text_encoder.eval()  # type: ignore[no-untyped-call]
    return LTX2Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=AutoencoderKLLTX2Video(**_VIDEO_VAE).eval(),
        audio_vae=AutoencoderKLLTX2Audio(**_AUDIO_VAE).eval(),
        text_encoder=text_encoder,
        tokenizer=tiny_tokenizer(),
        connectors=LTX2TextConnectors(**_CONNECTORS).eval(),
        transformer=LTX2VideoTransformer3DModel(**_TRANSFORMER).eval(),
        vocoder=LTX2Vocoder(**_VOCODER).eval(),
    )


def write_tiny_ltx2(models_dir: Path, folder: str = DEFAULT_FOLDER) -> Path:
    """Save a tiny random-weight LTX-2 pipeline where the engine reads it; its folder."""
    target = ltx2_weights(models_dir, folder).pipeline_dir
    build_tiny_pipeline().save_pretrained(target)
    return target
