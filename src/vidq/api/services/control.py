"""What changes a request after its submit: a cancel (its user's, on either dialect, or
an operator's), its user's delete, and an operator's retry."""

from __future__ import annotations

import logging

from vidq.api.services.results import iso
from vidq.blobs.base import BlobStore
from vidq.errors import Conflict, Gone, NotFound
from vidq.jobs import Job, JobState
from vidq.ops.retention import delete_now
from vidq.store.base import Cancel, JobStore, OperatorStore, SubmitStore

log = logging.getLogger(__name__)


def cancel_job(
    store: SubmitStore, job_id: int, user: str | None, *, running: bool
) -> tuple[Cancel | None, Job | None]:
    """Cancel a job, its running attempt included if ``running``: what every cancel route
    calls (native, fal, admin with ``user`` None: any user's job). A queued job is
    CANCELLED at once; a running one gets a cancel request that its worker reads in its
    next heartbeat (it stops the engine, keeps no output and records CANCELLED, unless it
    completed first). Returns what was done, or (None, the job) when nothing could be
    (finished, or running without ``running``); NotFound for unknown ids and, with
    ``user``, other users' jobs."""
    owner = user
    if owner is None:
        found = store.get(job_id)
        if found is None:
            raise NotFound(f"Request {job_id} not found.")
        owner = found.user
    done = store.cancel_job(job_id, owner, running=running)
    if done is not None:
        return done, None
    job = store.get(job_id, owner)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return None, job


def delete_request(store: JobStore, storage: BlobStore, job_id: int, user: str) -> Job:
    """Delete the user's finished request: its output, poster and inputs are deleted from
    storage; its row stays (status, times, cost: usage and billing stay right) with
    ``deleted_at`` set, out of the user's list; its result answers 410. A queued or
    running request is refused (409: cancel it first); deleting a deleted one again
    answers it as it is. NotFound for unknown ids and other users' requests."""
    marked = store.delete_job(job_id, user)
    if marked is not None:
        delete_now(store, storage, marked)
        log.info("request deleted by its user", extra={"job_id": job_id})
        return store.get(job_id, user) or marked
    job = store.get(job_id, user)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    if job.deleted_at is None:
        raise Conflict(
            f"Request {job_id} is {job.wire_status.value}: cancel it first; a request "
            "can be deleted once it has ended."
        )
    return job


def admin_cancel(store: SubmitStore, job_id: int) -> Job:
    """An operator's cancel of any user's unfinished request, running ones included
    (``cancel_job``). Returns the job as it is now; 409 once it finished."""
    done, job = cancel_job(store, job_id, None, running=True)
    if done is None:
        assert job is not None
        raise Conflict(f"Cannot cancel request {job_id}: it is {job.wire_status.value}.")
    job = store.get(job_id)
    assert job is not None
    log.info("request cancelled by an operator (%s)", done.value, extra={"request_id": job_id})
    return job


def admin_retry(operator: OperatorStore, jobs: SubmitStore, job_id: int) -> Job:
    """FAILED -> queued again with fresh attempts (an operator's retry); ``jobs`` reads
    the job back."""
    if not operator.admin_retry(job_id):
        job = jobs.get(job_id)
        if job is None:
            raise NotFound(f"Request {job_id} not found.")
        if job.state is not JobState.FAILED:
            raise Conflict(
                f"Cannot retry request {job_id}: it is {job.wire_status.value}; "
                "only FAILED requests are retried."
            )
        raise Gone(
            f"Cannot retry request {job_id}: its inputs expired at {iso(job.inputs_expired_at)}"
            " and were deleted (VIDQ_INPUT_TTL)."
        )
    job = jobs.get(job_id)
    assert job is not None
    log.warning("request retried by an operator", extra={"request_id": job_id, "user": job.user})
    return job
