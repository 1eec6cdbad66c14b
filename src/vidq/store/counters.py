"""The job counters and duration histograms, derived from job rows (one definition).

Read at scrape time from the ``job_counts`` and ``job_durations`` statements over the
whole jobs table, plus ``metric_rollup``: the same samples of rows the collector purged
(``JobStore.purge_jobs`` adds them in the transaction that deletes the rows). So every
API process answers the same fleet-wide values, and counters never go back.

Samples are keyed ``(family, labels)`` with the labels as sorted JSON; ``vidq/ops/metrics.py``
turns them into Prometheus families.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from vidq.catalog import Tier
from vidq.jobs import JobState
from vidq.store.base import Samples
from vidq.store.statements import DURATION_BUCKETS

SUBMITTED = "vidq_jobs_submitted"
FINISHED = "vidq_jobs_finished"
ATTEMPTS = "vidq_job_attempts"
QUEUE_WAIT = "vidq_job_queue_wait_seconds"
RUN = "vidq_job_run_seconds"
GPU = "vidq_gpu_seconds"


def labels(**values: str) -> str:
    """A sample's labels as the key part: sorted JSON."""
    return json.dumps(values, sort_keys=True, separators=(",", ":"))


def _add(samples: Samples, family: str, value: float, **label: str) -> None:
    if value:
        key = (family, labels(**label))
        samples[key] = samples.get(key, 0.0) + float(value)


def _tier_name(tier: int) -> str:
    try:
        return Tier(tier).name.lower()
    except ValueError:
        return str(tier)


def job_samples(counts: Sequence[Sequence[Any]], durations: Sequence[Sequence[Any]]) -> Samples:
    """Samples from rows of ``job_counts`` (model, pool, tier, state, jobs, attempts,
    past attempts, admin retries, jobs that ran, running attempts cancelled, GPU-seconds) and
    ``job_durations`` (pool, wait count, wait sum, wait buckets..., run count, run sum,
    run buckets...).

    Attempt outcomes: a COMPLETED job's last attempt completed; a FAILED job's last one
    failed if it ran at all (a job that expired in the queue spent none), and so did the
    run before each admin retry; a CANCELLED job whose running attempt was cancelled
    spent one attempt "cancelled"; every other finished attempt was retried. The attempt
    a RUNNING job is on has no outcome yet."""
    samples: Samples = {}
    for row in counts:
        model, pool, tier, state_name, jobs, attempt, past, retries, ran, stopped, gpu = row
        state = JobState(state_name)
        tier_name = _tier_name(int(tier))
        _add(samples, SUBMITTED, jobs, model=model, pool=pool, tier=tier_name)
        _add(samples, GPU, gpu or 0.0, model=model, pool=pool)
        if state.terminal:
            _add(samples, FINISHED, jobs, pool=pool, state=state.value.lower())
        _add(samples, FINISHED, retries, pool=pool, state="failed")
        done = int(ran) if state is JobState.COMPLETED else 0
        failed = (int(ran) if state is JobState.FAILED else 0) + int(retries)
        cancelled = int(stopped or 0) if state is JobState.CANCELLED else 0
        in_flight = jobs if state is JobState.RUNNING else 0
        _add(samples, ATTEMPTS, done, pool=pool, outcome="completed")
        _add(samples, ATTEMPTS, failed, pool=pool, outcome="failed")
        _add(samples, ATTEMPTS, cancelled, pool=pool, outcome="cancelled")
        retried = int(attempt) + int(past) - done - failed - cancelled - int(in_flight)
        _add(samples, ATTEMPTS, max(0, retried), pool=pool, outcome="retried")
    width = 2 + len(DURATION_BUCKETS)
    for row in durations:
        pool = row[0]
        for family, part in ((QUEUE_WAIT, row[1 : 1 + width]), (RUN, row[1 + width :])):
            _add(samples, f"{family}_count", part[0], pool=pool)
            _add(samples, f"{family}_sum", part[1], pool=pool)
            for bound, count in zip(DURATION_BUCKETS, part[2:], strict=True):
                _add(samples, f"{family}_bucket", count, pool=pool, le=repr(bound))
    return samples
