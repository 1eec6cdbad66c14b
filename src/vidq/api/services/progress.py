"""Where a request stands, for the answers about it: its place in the queue (and why it is
passed over, if it is), its ETAs (``api/eta.py``), the tasks it will report, its run time,
what it cost and its seed."""

from __future__ import annotations

import dataclasses
from typing import Any

from vidq.api.eta import EtaEstimator
from vidq.catalog import Model, get_model
from vidq.jobs import Hold, Job, JobState
from vidq.store.base import JobStatus, SubmitStore


def model_of(job: Job | JobStatus) -> Model:
    model = get_model(job.model_id)
    assert model is not None, job.model_id
    return model


def expected_tasks(job: JobStatus) -> int:
    """Tasks a job will report: its denoising steps plus the encode."""
    return model_of(job).steps_for(job.higher_quality) + 1


def eta_total(eta: EtaEstimator, job: Job | JobStatus) -> float | None:
    """Expected run time of the job; None when there is no estimate."""
    return eta.total_seconds(model_of(job), job.work_units)


def eta_remaining(
    eta: EtaEstimator, job: Job | JobStatus, queue_position: int = 0, hold: Hold | None = None
) -> float | None:
    """Seconds until the job should be done: the rest of its run if running, else the
    runs of the jobs ahead plus its own. None when there is no estimate, or when its pool
    is paused (it waits for an operator, not for a run time)."""
    if job.state.terminal:
        return 0.0
    if hold is Hold.PAUSED and job.state.queued:
        return None
    total = eta_total(eta, job)
    if total is None:
        return None
    if job.state is JobState.RUNNING:
        done = job.progress_done / job.progress_total if job.progress_total else 0.0
        return round(total * (1.0 - done), 1)
    return round(total * (1 + queue_position), 1)


@dataclasses.dataclass(frozen=True, slots=True)
class Place:
    """Where a queued job stands: its queue position and why it is passed over, if it is."""

    position: int
    hold: Hold | None = None


def queue_place(store: SubmitStore, job: Job) -> Place:
    """A queued job's position and hold (one status read, as a poll's); a job that has
    started since ``job`` was read is at position 0."""
    status = store.job_status(job.id, job.user)
    if status is None or status.queue_position is None:
        return Place(0)
    return Place(status.queue_position, status.hold)


def run_seconds(job: Job) -> float | None:
    """How long the last attempt ran (None until it has finished)."""
    if job.started_at is None or job.finished_at is None:
        return None
    return round(max(0.0, job.finished_at - job.started_at), 3)


def metrics(job: Job | JobStatus) -> dict[str, Any] | None:
    """What a request cost, once it has started: ``gpu_seconds`` its engine ran on its
    GPU slots over every attempt (failed ones included; a running attempt counts its time
    since it was claimed until it ends and records its engine's own), ``queue_seconds``
    from submit to its first start, ``attempts`` started, ``device`` of the last one that
    ended (None while the first runs). The fal dialect's ``metrics.inference_time`` is
    the same ``gpu_seconds``. None before the first start."""
    if job.first_started_at is None:
        return None
    return {
        "gpu_seconds": round(max(0.0, job.gpu_seconds), 3),
        "queue_seconds": round(max(0.0, job.first_started_at - job.created_at), 3),
        "attempts": job.attempt,
        "device": job.device,
    }


def seed_of(job: Job) -> int | None:
    """The seed the job runs with (drawn at submit when the request gave none; None only
    for jobs queued before that)."""
    seed = job.inputs.get("seed")
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else None
