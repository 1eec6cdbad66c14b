"""An engine built in the test's own process, as the engine child builds it.

The engine tests run their jobs through ``EngineProcess`` once per module (the process
boundary the worker uses). A test of one engine setting builds that engine here instead:
a child of its own would import torch and diffusers again (about 5 CPU-s) to check what
the engine object alone decides. The ``in_process`` fixture (tests/conftest.py) builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from vidq.engines import create_engine, engine_options
from vidq.engines.base import Engine, EngineJob
from vidq.engines.previews import PreviewWriter

# What loading a diffusers engine sets in the process's environment (``offline``).
HF_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DIFFUSERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")


def build(name: str, settings: BaseModel, pools: list[str]) -> Engine:
    """Engine ``name`` built from its options as JSON and loaded, as the child does."""
    engine = create_engine(name, engine_options(settings, pools))
    engine.load()
    return engine


def run_here(
    engine: Engine, job: EngineJob, on_preview: Callable[[int], None] = lambda _step: None
) -> tuple[dict[str, Any], list[list[int]]]:
    """Run ``job`` as the child does: its meta and the progress reported ([done, total]);
    ``on_preview(step)`` after each preview written to ``job.preview_path``."""
    progress: list[list[int]] = []
    previews = PreviewWriter(job.preview_path, job.preview_interval_s, on_preview)
    result = engine.run(job, lambda k, n: progress.append([k, n]), previews)
    return result.meta, progress
