"""A request as its user may see it, and its video: the caller's job (404 for anyone
else's, as for an unknown id), the checks before a result is answered (completed, not
expired), and the video as a signed file or as base64."""

from __future__ import annotations

import base64
import datetime
from typing import Any

from vidq.api.context import AppContext
from vidq.errors import Conflict, Gone, NotFound
from vidq.jobs import PREVIEW_TYPE, Job, JobState, poster_key
from vidq.store.base import JobStatus, SubmitStore, Token


def job_of(store: SubmitStore, job_id: int, token: Token) -> Job:
    """The caller's job; 404 for unknown ids and other users' jobs alike."""
    job = store.get(job_id, token.user)
    if job is None:
        raise NotFound(f"Request {job_id} not found.")
    return job


def iso(ts: float | None) -> str:
    """A database time as ISO 8601 UTC."""
    when = datetime.datetime.fromtimestamp(ts or 0.0, datetime.UTC)
    return when.isoformat(timespec="seconds").replace("+00:00", "Z")


def require_not_expired(job: Job) -> None:
    """410 once the collector expired the job's output (its blob is, or is being,
    deleted), or its user deleted the request."""
    if job.deleted_at is not None:
        raise Gone(
            f"Request {job.id} was deleted by its user at {iso(job.deleted_at)}; its video "
            "and inputs are gone, its status is still available."
        )
    if job.expired_at is not None:
        raise Gone(
            f"Request {job.id}'s video expired at {iso(job.expired_at)} and was deleted "
            "(retention: VIDQ_OUTPUT_TTL); its status is still available."
        )


def require_completed(job: Job) -> None:
    if job.state is not JobState.COMPLETED:
        status = job.wire_status.value
        if job.state is JobState.FAILED:
            raise Conflict(f"Request {job.id} is FAILED: {job.error or 'unknown error'}")
        raise Conflict(f"Request {job.id} is {status}; the result is available once COMPLETED.")
    require_not_expired(job)


def video_b64(ctx: AppContext, job: Job) -> str:
    """The finished video's bytes as base64."""
    require_not_expired(job)
    if job.result_key is None:
        raise NotFound(f"Request {job.id} has no stored output.")
    return base64.b64encode(ctx.storage.get_bytes(job.result_key)).decode("ascii")


def video_url(ctx: AppContext, job: Job, base: str) -> str:
    """A signed download URL of the finished video (``VIDQ_SIGNED_URL_TTL``)."""
    return ctx.storage.signed_url(job.result_key or "", ctx.settings.storage.signed_url_ttl, base)


def poster_url(ctx: AppContext, job: Job, base: str) -> str | None:
    """A signed URL of the completed job's poster frame (``jobs.poster_key``), or None:
    not completed, its worker stored none, or its output expired or was deleted."""
    if (
        job.state is not JobState.COMPLETED
        or not job.result_key
        or job.expired_at is not None
        or not job.result_meta.get("poster")
    ):
        return None
    ttl = ctx.settings.storage.signed_url_ttl
    return ctx.storage.signed_url(poster_key(job.result_key), ttl, base)


def preview(ctx: AppContext, job: JobStatus, base: str) -> dict[str, Any] | None:
    """The running job's live preview (``{url, content_type, step, updated_at}``, a signed
    URL of an animated WebP of the video so far), or None: not running, or no preview yet."""
    if job.state is not JobState.RUNNING or job.preview is None:
        return None
    ttl = ctx.settings.storage.signed_url_ttl
    return {
        "url": ctx.storage.signed_url(job.preview.key, ttl, base),
        "content_type": PREVIEW_TYPE,
        "step": job.preview.step,
        "updated_at": iso(job.preview.at),
    }


def video_file(ctx: AppContext, job: Job, base: str) -> dict[str, Any]:
    """The finished video as a file descriptor: a signed download URL and its metadata."""
    require_not_expired(job)
    if job.result_key is None:
        raise NotFound(f"Request {job.id} has no stored output.")
    size = job.result_meta.get("file_size")
    if not isinstance(size, int):  # outputs stored before sizes were recorded
        size = len(ctx.storage.get_bytes(job.result_key))
    return {
        "url": video_url(ctx, job, base),
        "content_type": "video/mp4",
        "file_name": job.result_key.rsplit("/", 1)[-1],
        "file_size": size,
    }
