"""The Job value object, its state machine and the mapping to the wire statuses."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import re
from collections.abc import Mapping
from typing import Any, Protocol


class JobState(enum.StrEnum):
    """Internal job states (the state machine is drawn in docs/architecture.md)."""

    PENDING = "PENDING"  # accepted, waiting for a worker
    RETRY = "RETRY"  # a lease expired or an attempt failed; waiting for another attempt
    RUNNING = "RUNNING"  # claimed by a worker holding a lease
    COMPLETED = "COMPLETED"  # output stored; terminal
    FAILED = "FAILED"  # no attempts left or a permanent error; terminal
    CANCELLED = "CANCELLED"  # cancelled while queued; terminal

    @property
    def queued(self) -> bool:
        return self in (JobState.PENDING, JobState.RETRY)

    @property
    def terminal(self) -> bool:
        return self in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


class WebhookState(enum.StrEnum):
    """Where a job's webhook delivery stands (a job without a webhook has none)."""

    PENDING = "pending"  # to be delivered once the job is finished (or retried later)
    DELIVERED = "delivered"  # the receiver answered 2xx; done
    GIVEN_UP = "given_up"  # out of attempts, or the target is not allowed; done


class WorkerState(enum.StrEnum):
    """What a worker says it is doing (``/admin/workers``); idle or busy is read from its
    current job, not stored."""

    WARMING = "warming"  # loading its engines before its first claim
    READY = "ready"  # claiming (a claim says so by itself)
    ENGINE_DOWN = "engine_down"  # an engine's backend is unreachable: not claiming, probing
    DRAINING = "draining"  # asked to stop: finishing its current job, claiming nothing more
    STOPPED = "stopped"  # its loop ended (shutdown, burst drained, a limit reached)


class WireStatus(enum.StrEnum):
    """External statuses of the spec."""

    IN_QUEUE = "IN_QUEUE"  # PENDING or RETRY
    IN_PROGRESS = "IN_PROGRESS"  # RUNNING
    COMPLETED = "COMPLETED"  # COMPLETED
    FAILED = "FAILED"  # FAILED
    CANCELLED = "CANCELLED"  # CANCELLED


class Hold(enum.StrEnum):
    """Why a queued job is passed over by the workers for now (its wire name: the native
    status's ``statusMessages.message``, the ``hold`` of the other answers)."""

    PAUSED = "PAUSED"  # an operator paused its pool; it starts once the pool is resumed
    HELD = "HELD"  # its user has max_running jobs running; it starts when one of them ends


WIRE_STATUS: dict[JobState, WireStatus] = {
    JobState.PENDING: WireStatus.IN_QUEUE,
    JobState.RETRY: WireStatus.IN_QUEUE,
    JobState.RUNNING: WireStatus.IN_PROGRESS,
    JobState.COMPLETED: WireStatus.COMPLETED,
    JobState.FAILED: WireStatus.FAILED,
    JobState.CANCELLED: WireStatus.CANCELLED,
}

# Which state may follow which. The stores enforce these with conditional updates;
# this table is what the tests check the stores against.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # FAILED from the queue: a deadline passed (``X-Request-Timeout``, start timeouts).
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RETRY: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    # CANCELLED while running: the worker stopped it on a cancel request.
    JobState.RUNNING: frozenset(
        {JobState.COMPLETED, JobState.FAILED, JobState.RETRY, JobState.CANCELLED}
    ),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
MAX_TIER = 3


def queue_rank(tier: int, priority: int) -> int:
    """One integer that orders a pool: tier (higher first), then priority (higher first).

    Within a rank users take turns (fair share, ``VIDQ_FAIR_SHARE``; docs/architecture.md,
    "Queue order"), and a user's jobs go by id (submission order). Stores index
    ``(pool, rank, id)``, so finding the best claimable rank is an index seek.
    """
    if not 0 <= tier <= MAX_TIER:
        raise ValueError(f"tier out of range: {tier}")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise ValueError(f"priority out of range: {priority}")
    return (MAX_TIER - tier) * 10_000 + (PRIORITY_MAX - priority)


@dataclasses.dataclass(frozen=True, slots=True)
class Job:
    """One generation request as the store keeps it."""

    id: int
    user: str
    model_id: str
    pool: str
    tier: int
    priority: int
    state: JobState
    inputs: dict[str, Any]
    binary_output: bool = False
    attempt: int = 0
    max_attempts: int = 3
    worker: str | None = None
    progress_done: int = 0
    progress_total: int = 0
    work_units: float = 0.0
    result_key: str | None = None
    result_meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    error_type: str | None = None
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_dialect: str | None = None  # "native" or "fal": the body's vocabulary
    webhook_base: str | None = None  # the API's public base URL at submit (signed URLs)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    # retention (vidq/ops/retention.py): when the output, the inputs were expired (their
    # blobs are deleted, or being deleted); None while they are kept
    expired_at: float | None = None
    inputs_expired_at: float | None = None
    # when its user deleted it (``DELETE /requests/{id}``): its blobs go as retention's do
    # (both marks above are set with it); the row stays, for its status, usage and cost
    deleted_at: float | None = None
    # what it cost (``Ran``): engine seconds over its attempts (a running attempt's time
    # since it started included), the device of its last attempt, its first start
    gpu_seconds: float = 0.0
    device: str | None = None
    first_started_at: float | None = None

    @property
    def wire_status(self) -> WireStatus:
        return WIRE_STATUS[self.state]


@dataclasses.dataclass(frozen=True, slots=True)
class Ran:
    """What one attempt used, recorded with the attempt's end (complete, fail, release,
    cancelled) in the same fenced update: the seconds its engine ran, measured by the worker
    around the engine call, and the device it ran on (``cpu``, ``cuda:0``)."""

    seconds: float = 0.0
    device: str | None = None  # None: the attempt never reached an engine


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """A job as a claim took it, with the lease of the attempt the claim started. A lease
    exists only from a claim to the end of its attempt, so it lives here, never on ``Job``."""

    job: Job  # RUNNING, ``attempt`` counting this one
    lease_token: str  # fences every update of the attempt
    lease_until: float  # database time the lease runs out unless a heartbeat extends it


@dataclasses.dataclass(frozen=True, slots=True)
class NewJob:
    """What the API hands the store to enqueue."""

    user: str
    model_id: str
    pool: str
    tier: int
    priority: int
    inputs: dict[str, Any]
    binary_output: bool = False
    max_attempts: int = 3
    work_units: float = 0.0
    idempotency_key: str | None = None
    webhook_url: str | None = None
    webhook_dialect: str | None = None  # "native" or "fal": the body's vocabulary
    webhook_base: str | None = None  # the API's public base URL at submit (signed URLs)
    max_running: int | None = None  # the token's limit: more of the user's jobs wait
    weight: int = 1  # the token's fair-share weight: claims in a row per turn
    video_seconds: float = 0.0  # the planned output's duration (daily limit)
    deadline_s: float | None = None  # must be finished this long after submit
    start_s: float | None = None  # must have started this long after submit
    start_error: str | None = None  # the error it ends with if it has not


# -- output keys (shared by the workers, which upload, and the API, which checks) -------
TIER_FOLDERS = {0: "free", 1: "pro", 2: "premium"}
_OUTPUT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


class Attempted(Protocol):
    """What names an attempt's output: a ``Job``, or a worker's view of the job it claimed."""

    @property
    def id(self) -> int: ...

    @property
    def tier(self) -> int: ...

    @property
    def attempt(self) -> int: ...


def output_prefix(job: Attempted) -> str:
    """``outputs/<tier>/<id>_0_``: the start of every attempt's output key of ``job``."""
    return f"outputs/{TIER_FOLDERS.get(job.tier, 'free')}/{job.id}_0_"


def output_key(job: Attempted, name: str) -> str:
    """``outputs/<tier>/<id>_0_<name>_<attempt>.mp4`` as in the spec; unique per attempt
    (``name`` is the engine's, e.g. ``WanVideo2_2_T2V``)."""
    return f"{output_prefix(job)}{name}_{job.attempt:05d}.mp4"


def output_attempt(job: Attempted, key: str) -> int | None:
    """The attempt that ``key`` is an output of, if it is one of ``job``'s output keys."""
    prefix = output_prefix(job)
    if not key.startswith(prefix) or not key.endswith(".mp4"):
        return None
    name, _, attempt = key[len(prefix) : -len(".mp4")].rpartition("_")
    if not _OUTPUT_NAME.fullmatch(name) or not attempt.isdigit() or len(attempt) != 5:
        return None
    return int(attempt)


POSTER_TYPE = "image/jpeg"  # a still of a finished video (media/poster.py)
_POSTER_SUFFIX = ".poster.jpg"


def poster_key(output: str) -> str:
    """``<output key without .mp4>.poster.jpg``: the poster frame stored next to an output
    (``outputs/<tier>/<id>_0_<name>_<attempt>.poster.jpg``), deleted with it."""
    return output.removesuffix(".mp4") + _POSTER_SUFFIX


def poster_output(key: str) -> str | None:
    """The output key whose poster ``key`` is, or None if ``key`` is no poster key."""
    return key.removesuffix(_POSTER_SUFFIX) + ".mp4" if key.endswith(_POSTER_SUFFIX) else None


def output_blobs(result_key: str | None) -> tuple[str, ...]:
    """The blobs of a completed job's output: its video and its poster frame (which a job
    may lack; deleting a missing blob is no error)."""
    return (result_key, poster_key(result_key)) if result_key else ()


def input_blobs(inputs: Mapping[str, Any]) -> tuple[str, ...]:
    """The blobs of a job's media inputs (``inputs["_blobs"]``: field -> key)."""
    blobs = inputs.get("_blobs", {})
    return tuple(str(k) for k in blobs.values()) if isinstance(blobs, dict) else ()


PREVIEW_PREFIX = "previews/"
PREVIEW_TYPE = "image/webp"  # an animated WebP of the video so far (engines/previews.py)


def preview_key(job: Attempted) -> str:
    """``previews/<id>_<attempt>.webp``: the live preview of one attempt of ``job``, written
    over while it runs and deleted when it ends (or by retention, after a killed worker)."""
    return f"{PREVIEW_PREFIX}{job.id}_{job.attempt:05d}.webp"


def preview_attempt(key: str) -> tuple[int, int] | None:
    """(job id, attempt) of a preview key, or None if ``key`` is not one."""
    if not key.startswith(PREVIEW_PREFIX) or not key.endswith(".webp"):
        return None
    job_id, _, attempt = key[len(PREVIEW_PREFIX) : -len(".webp")].partition("_")
    return (int(job_id), int(attempt)) if job_id.isdigit() and attempt.isdigit() else None


# -- a user's folder (the API stores inputs and uploads under it) ----------------------
def user_folder(user: str) -> str:
    """A storage-safe folder name for a user (names may hold any character):
    ``inputs/<folder>/...`` and ``uploads/<folder>/...``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user)[:64].strip(".")
    if safe != user:
        safe = f"{safe}-{hashlib.sha256(user.encode()).hexdigest()[:8]}"
    return safe
