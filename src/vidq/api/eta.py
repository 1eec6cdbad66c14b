"""Time estimates: the median run time of recent completed jobs of the same pool and
similar size; before the pool has such history, the estimate of the engine that serves
the pool (``engines/estimates.py``: the GPU engines' catalog figure; the preview engine
has none); else none at all."""

from __future__ import annotations

import math
import statistics
import threading
import time

from vidq.catalog import Model
from vidq.config import Settings
from vidq.engines.estimates import run_estimate
from vidq.store.base import RunTimeStore

CACHE_S = 2.0  # how long a pool's measured run time is reused before the store is read again


def work_units(width: int, height: int, frames: int, steps: int, default_steps: int) -> float:
    """A size measure: pixels x frames, scaled by the step count."""
    return float(width * height * frames) * steps / max(1, default_steps)


class EtaEstimator:
    """Median run time of recent similar jobs, cached per pool and size bucket (a status
    poll reads the store for it at most once per ``ttl_s``), else the engine's figure."""

    def __init__(self, store: RunTimeStore, settings: Settings, ttl_s: float = CACHE_S) -> None:
        self.store = store
        self.settings = settings
        self.ttl_s = ttl_s
        self._cache: dict[tuple[str, int], tuple[float, float | None]] = {}
        self._lock = threading.Lock()

    def total_seconds(self, model: Model, units: float) -> float | None:
        """Expected run time of a job of ``units`` work units in the model's pool; None
        when neither the pool's history nor its engine gives one."""
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
        engine = self.settings.worker.engine_for(model.pool)
        return run_estimate(engine, model, units, self.settings)
