"""Time estimates from the measured durations of completed jobs of the same pool and
similar size, falling back to the catalog's default until there is history."""

from __future__ import annotations

import math
import statistics
import threading
import time

from vidq.catalog import FPS, Model
from vidq.store.base import RunTimeStore

# Work units of the catalog's reference clip: 1280x720, 5 s, default steps.
REFERENCE_UNITS = 1280 * 720 * (FPS * 5 + 1)


def work_units(width: int, height: int, frames: int, steps: int, default_steps: int) -> float:
    """A size measure: pixels x frames, scaled by the step count."""
    return float(width * height * frames) * steps / max(1, default_steps)


class EtaEstimator:
    """Median run time of recent similar jobs, cached per pool and size bucket."""

    def __init__(self, store: RunTimeStore, ttl_s: float = 2.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def total_seconds(self, model: Model, units: float) -> float:
        """Expected run time of a job of ``units`` work units in the model's pool."""
        bucket = round(math.log2(max(units, 1.0)))
        key = (model.pool, bucket)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            measured = hit[1]
        else:
            durations = self.store.recent_durations(model.pool, max(units, 1.0))
            measured = statistics.median(durations) if durations else None
            with self._lock:
                self._cache[key] = (now + self.ttl_s, measured)
        if measured is not None:
            return round(measured, 1)
        return round(model.eta_seconds * max(units, 1.0) / REFERENCE_UNITS, 1) or 1.0
