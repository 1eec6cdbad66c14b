"""What each engine expects a job to take, for ETAs before its pool has any history.

The API estimates run times from the pool's recent completed jobs (``api/eta.py``); until
there are some it asks the engine that serves the pool (``WorkerSettings.engine_for``)
through this table, which imports no engine module (no torch, no weights). An engine
with nothing to go on answers None, and the request then has no ETA at all: a made-up
figure would be worse than none.

- ``wan``, ``ltx2`` and ``comfyui`` (GPUs): the catalog's per-model figure for a 1280x720 5 s clip
  (``Model.eta_seconds``), scaled to the job's work units.
- ``preview`` (CPU): None. Its runs take about a second to a few seconds, depending on the
  machine and ``VIDQ_PREVIEW_STEP_SECONDS``; the pool's first completed job gives the
  figure.
"""

from __future__ import annotations

from collections.abc import Callable

from vidq.catalog import FPS, Model
from vidq.config import Settings

# Work units of the catalog's reference clip: 1280x720, 5 s, the model's default steps.
REFERENCE_UNITS = 1280 * 720 * (FPS * 5 + 1)

Estimate = Callable[[Model, float, Settings], float | None]  # (model, work units, settings)


def gpu_catalog(model: Model, units: float, settings: Settings) -> float | None:
    """The catalog's figure for the model's reference clip, scaled to ``units``."""
    return round(model.eta_seconds * max(units, 1.0) / REFERENCE_UNITS, 1) or 1.0


def no_estimate(model: Model, units: float, settings: Settings) -> float | None:
    """No figure before the pool has history."""
    return None


ESTIMATES: dict[str, Estimate] = {  # engine name -> its estimate (engines/__init__.ENGINES)
    "preview": no_estimate,
    "wan": gpu_catalog,
    "ltx2": gpu_catalog,
    "comfyui": gpu_catalog,
}


def run_estimate(engine: str, model: Model, units: float, settings: Settings) -> float | None:
    """Seconds ``engine`` should take for a job of ``units`` work units of ``model``; None
    when it gives no figure (or is not one vidq knows)."""
    estimate = ESTIMATES.get(engine, no_estimate)
    return estimate(model, units, settings)
