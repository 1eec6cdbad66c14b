"""Where the wan engine finds its weights under ``VIDQ_MODELS_DIR``, and what is missing.

No torch here: the CLI imports this module to check a models folder (``vidq models check``)
and to refuse to start a worker whose weights are missing.

Layout (diffusers layout, as the ``*-Diffusers`` repositories are published)::

    <models_dir>/
      Wan2.2-T2V-A14B-Diffusers/    model_index.json, tokenizer/, text_encoder/, vae/,
                                    transformer/ (high-noise expert), transformer_2/
                                    (low-noise expert), scheduler/
      Wan2.2-I2V-A14B-Diffusers/    the same, for image-to-video and first+last frame
      Wan2.2-TI2V-5B-Diffusers/     only with VIDQ_WAN_BASE=ti2v-5b (one transformer)
      Wan2.2-Lightning/             the lightx2v 4-step LoRAs, one file per expert:
        Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1/{high,low}_noise_model.safetensors
        Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1/{high,low}_noise_model.safetensors

``-fp8`` models use the same bf16 folders: the experts are quantized to float8 at load.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

BASES = ("a14b", "ti2v-5b")

BASE_FOLDERS: dict[tuple[str, str], str] = {
    # (base, family) -> folder under models_dir
    ("a14b", "t2v"): "Wan2.2-T2V-A14B-Diffusers",
    ("a14b", "i2v"): "Wan2.2-I2V-A14B-Diffusers",
    ("ti2v-5b", "t2v"): "Wan2.2-TI2V-5B-Diffusers",
    ("ti2v-5b", "i2v"): "Wan2.2-TI2V-5B-Diffusers",
}

LIGHTNING_DIR = "Wan2.2-Lightning"
LIGHTNING_FOLDERS: dict[str, str] = {
    "t2v": "Wan2.2-T2V-A14B-4steps-lora-rank64-Seko-V1.1",
    "i2v": "Wan2.2-I2V-A14B-4steps-lora-rank64-Seko-V1",
}
HIGH_NOISE_LORA = "high_noise_model.safetensors"  # loaded into `transformer`
LOW_NOISE_LORA = "low_noise_model.safetensors"  # loaded into `transformer_2`

_COMMON = ("tokenizer", "text_encoder", "vae", "scheduler")


@dataclasses.dataclass(frozen=True, slots=True)
class WanWeights:
    """The files one (base, family) needs, resolved under a models folder."""

    base: str
    family: str
    pipeline_dir: Path
    experts: tuple[str, ...]  # ("transformer", "transformer_2") or ("transformer",)
    lora_high: Path | None  # lightx2v LoRA of the high-noise expert; None: no Lightning
    lora_low: Path | None

    def required(self) -> list[Path]:
        """Every path that must exist for this model to load."""
        paths = [self.pipeline_dir / "model_index.json"]
        paths += [self.pipeline_dir / part for part in (*_COMMON, *self.experts)]
        paths += [p for p in (self.lora_high, self.lora_low) if p is not None]
        return paths

    def missing(self) -> list[Path]:
        """Required paths that are absent (a component folder must hold a config file)."""
        return [p for p in self.required() if not _present(p)]


def _present(path: Path) -> bool:
    if path.suffix in (".json", ".safetensors"):
        return path.is_file()
    if not path.is_dir():
        return False
    return any(path.glob("*.json")) or any(path.glob("*.model"))


def wan_weights(models_dir: Path, family: str, base: str = "a14b") -> WanWeights:
    """The weights layout of ``family`` ("t2v" or "i2v") for ``base`` (see module docstring)."""
    if base not in BASES:
        raise ValueError(f"unknown wan base {base!r}; known: {', '.join(BASES)}")
    if family not in ("t2v", "i2v"):
        raise ValueError(f"the wan engine does not serve family {family!r}")
    pipeline_dir = models_dir / BASE_FOLDERS[(base, family)]
    if base == "ti2v-5b":
        return WanWeights(base, family, pipeline_dir, ("transformer",), None, None)
    lora_dir = models_dir / LIGHTNING_DIR / LIGHTNING_FOLDERS[family]
    return WanWeights(
        base,
        family,
        pipeline_dir,
        ("transformer", "transformer_2"),
        lora_dir / HIGH_NOISE_LORA,
        lora_dir / LOW_NOISE_LORA,
    )


def missing_message(model_ids: list[str], weights: WanWeights) -> str:
    """A one-paragraph message naming what is missing for these model ids."""
    missing = "\n".join(f"  missing: {p}" for p in weights.missing())
    return (
        f"{', '.join(model_ids)}: weights for Wan2.2 {weights.family.upper()} "
        f"({weights.base}) are incomplete\n{missing}"
    )
