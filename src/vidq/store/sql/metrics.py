"""What is measured of jobs: the samples and gauges of ``GET /metrics`` (``MetricStore``)
and the recent run times behind the ETAs (``RunTimeStore``)."""

from __future__ import annotations

from vidq.jobs import JobState
from vidq.store.base import Samples
from vidq.store.counters import job_samples
from vidq.store.sql.core import LIVE_WINDOW_S, Queries

# A worker counts as live for this long after it last claimed.


class MetricQueries(Queries):
    """``MetricStore`` and ``RunTimeStore`` (see ``base``)."""

    def job_samples(self) -> Samples:
        with self.driver.session() as db:
            counts = db.values(self._sql.job_counts, {})
            durations = db.values(self._sql.job_durations, {})
            rollup = db.values(self._sql.metric_rollup, {})
        samples = job_samples(counts, durations)
        for family, label, value in rollup:
            samples[(family, label)] = samples.get((family, label), 0.0) + float(value)
        return samples

    def pool_states(self) -> dict[str, dict[JobState, int]]:
        states: dict[str, dict[JobState, int]] = {}
        for row in self._rows(self._sql.pool_states):
            states.setdefault(row["pool"], {})[JobState(row["state"])] = int(row["n"])
        return states

    def live_workers(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._rows(self._sql.live_workers, window_s=LIVE_WINDOW_S):
            for pool in row["pools"].split(","):
                counts[pool] = counts.get(pool, 0) + 1
        return counts

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        low, high = work_units / 2, work_units * 2
        rows = self._rows(self._sql.recent_durations, pool=pool, low=low, high=high, limit=limit)
        return [float(r["seconds"]) for r in rows]
