"""Where the ltx2 engine finds its weights under ``VIDQ_MODELS_DIR``, and what is missing.

No torch here, so that a command can check a models folder without loading a GPU library.

Layout (diffusers layout, as ``Lightricks/LTX-2`` publishes it next to its single-file
checkpoints)::

    <models_dir>/
      LTX-2/                 model_index.json, scheduler/, vae/ (video), audio_vae/,
                             vocoder/, text_encoder/ (Gemma 3), tokenizer/, connectors/,
                             transformer/

A model's ``weights`` engine option names another folder under ``models_dir`` (a
fine-tune, or a folder whose ``transformer/`` holds the step-distilled weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidq.config import LTX2Settings
from vidq.errors import EngineError, EngineUnavailable

DEFAULT_FOLDER = "LTX-2"

COMPONENTS = (
    "scheduler",
    "vae",
    "audio_vae",
    "vocoder",
    "text_encoder",
    "tokenizer",
    "connectors",
    "transformer",
)


@dataclasses.dataclass(frozen=True, slots=True)
class LTX2Weights:
    """The files one LTX-2 pipeline needs, resolved under a models folder."""

    pipeline_dir: Path

    def required(self) -> list[Path]:
        """Every path that must exist for the pipeline to load."""
        return [self.pipeline_dir / "model_index.json"] + [
            self.pipeline_dir / part for part in COMPONENTS
        ]

    def missing(self) -> list[Path]:
        """Required paths that are absent (a component folder must hold a config file)."""
        return [p for p in self.required() if not _present(p)]


def _present(path: Path) -> bool:
    if path.suffix == ".json":
        return path.is_file()
    return path.is_dir() and (any(path.glob("*.json")) or any(path.glob("*.model")))


def ltx2_weights(models_dir: Path, folder: str = DEFAULT_FOLDER) -> LTX2Weights:
    """The weights layout of the LTX-2 pipeline in ``models_dir / folder``.

    ``folder`` must stay inside ``models_dir`` (it comes from the models file)."""
    if not folder or Path(folder).is_absolute() or ".." in Path(folder).parts:
        raise ValueError(
            f"ltx2 weights folder {folder!r} must be a folder name under the models dir"
        )
    return LTX2Weights(models_dir / folder)


def missing_message(weights: LTX2Weights) -> str:
    """A one-paragraph message naming what is missing."""
    missing = "\n".join(f"  missing: {p}" for p in weights.missing())
    return f"weights for LTX-2 in {weights.pipeline_dir} are incomplete\n{missing}"


def models_dir_of(settings: LTX2Settings) -> Path:
    """The models folder the engine reads; EngineUnavailable when none is set."""
    if settings.models_dir is None:
        raise EngineUnavailable("the ltx2 engine needs model weights: set VIDQ_MODELS_DIR")
    return settings.models_dir


def usable(models_dir: Path, folder: str) -> LTX2Weights:
    """The weights in ``models_dir / folder``, ready to load: EngineError for a folder
    outside ``models_dir``, EngineUnavailable naming what is missing."""
    try:
        weights = ltx2_weights(models_dir, folder)
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    if weights.missing():
        raise EngineUnavailable(missing_message(weights))
    return weights


def preflight(settings: Mapping[str, Any]) -> None:
    """The engine's checks that need no torch (the registry runs them before it imports
    the engine): a worker whose weights are missing says so at once, not after seconds
    of imports. ``settings``: the engine's settings as JSON."""
    parsed = LTX2Settings.model_validate(settings)
    usable(models_dir_of(parsed), parsed.weights)
