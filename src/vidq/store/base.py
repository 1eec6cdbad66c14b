"""The job store's ports, one per role, and the value objects they speak in.

Each consumer asks for the role it uses (pgqueuer's ``ports/repository.py``):

``SubmitStore``     a user's jobs: submit, status, positions, list, cancel, usage (user routes)
``WorkerStore``     the worker queue: claim, heartbeat, progress, complete, fail, release,
                    reap, wait, depths, the worker registry (``worker/``, ``/worker/v1``)
``TokenStore``      API tokens (``api/auth.py``, ``vidq token``)
``UploadStore``     uploaded files (fal's upload routes)
``WebhookStore``    the webhook outbox (the dispatcher of ``api/webhooks.py``)
``OperatorStore``   the admin routes: every user's jobs, retries, pools, users, workers
``RetentionStore``  the retention collector (``ops/retention.py``)
``MetricStore``     the job families of ``GET /metrics``
``RunTimeStore``    the recent run times behind the ETAs (``api/eta.py``)

``JobStore`` is their union: what ``open_store`` returns and the composition root hands
around. A method two roles both call is declared in each (its docstring says where it is
described), and implemented once.

One implementation, ``sql.SQLStore`` (one module per role under ``sql/``), over a driver
per database (``sqlite``, ``postgres``). Drivers translate their errors: a write the
schema refuses is ``Conflict``, anything else ``StoreUnavailable``; the layers above never
see a driver exception. Time is always the database's clock.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vidq.jobs import Claim, Hold, Job, JobState, NewJob, Ran, WebhookState, WorkerState

MAX_WEIGHT = 100  # a token's fair-share weight is 1..MAX_WEIGHT
TOKEN_NAME_MAX = 100  # characters of a token's name
TOKEN_EXPIRY_DAYS_MAX = 3650  # the longest expiry a token may be given, in days


@dataclasses.dataclass(frozen=True, slots=True)
class Quota:
    """A token's limits on its user's jobs (None: unlimited). Enforced by the store in
    the submit's own statement (``max_queued``, ``rate_per_minute``,
    ``daily_video_seconds``, ``daily_gpu_seconds``) and in the claim (``max_running``)."""

    max_queued: int | None = None  # jobs PENDING or RETRY at once
    max_running: int | None = None  # jobs RUNNING at once; more wait in the queue
    rate_per_minute: int | None = None  # submits in any rolling 60 s
    daily_video_seconds: int | None = None  # seconds of video accepted per UTC day
    # GPU-seconds of the jobs submitted per UTC day (running ones count their time so far)
    daily_gpu_seconds: int | None = None
    # Not a limit, a share: claims in a row per turn under fair share (1..100).
    weight: int = 1

    def submit_limits(self) -> list[str]:
        """The names of the limits a submit is checked against."""
        names = ("max_queued", "rate_per_minute", "daily_video_seconds", "daily_gpu_seconds")
        return [n for n in names if getattr(self, n) is not None]


@dataclasses.dataclass(frozen=True, slots=True)
class Usage:
    """What a user's jobs hold of the limits now (``SubmitStore.usage``)."""

    queued: int
    running: int
    last_minute: int  # submits in the last 60 s
    video_seconds_today: float  # accepted since 00:00 UTC
    gpu_seconds_today: float  # of the jobs submitted since 00:00 UTC (``GPU_SECONDS``)
    minute_first: float | None  # database time of the oldest submit in the last 60 s
    now: float  # the database clock


@dataclasses.dataclass(frozen=True, slots=True)
class DailyUsage:
    """What one user's jobs of one model submitted on one UTC day used (``GET /usage``,
    ``GET /admin/usage``). A job counts on the day it was submitted, as for the daily
    limits; a running job's GPU-seconds are its time so far."""

    user: str
    day: str  # YYYY-MM-DD, UTC
    model_id: str
    jobs: int
    video_seconds: float  # requested
    gpu_seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Token:
    """An API token's record. The token itself is never stored, only its sha256."""

    id: int
    user: str
    max_priority: int
    admin: bool
    created_at: float
    revoked: bool = False
    quota: Quota = Quota()
    worker: bool = False  # a worker token: only the /worker/v1 routes (remote workers)
    pools: tuple[str, ...] | None = None  # a worker token's pools; None: every pool
    name: str | None = None  # what its user called it (None: made by the CLI unnamed)
    expires_at: float | None = None  # database time it is refused from; None: never
    expired: bool = False  # expires_at has passed (the database clock, when it was read)


class Lease(enum.Enum):
    """A heartbeat's answer. Falsy only when the lease is lost."""

    HELD = "held"  # the job is still this worker's
    CANCEL = "cancel"  # still held, and a cancel was requested: stop and ``finish_cancel``
    LOST = "lost"  # another attempt holds it, or it finished (cancelled, expired)

    def __bool__(self) -> bool:
        return self is not Lease.LOST


class Cancel(enum.Enum):
    """What a cancel did (``SubmitStore.cancel_job``)."""

    CANCELLED = "cancelled"  # it was queued: it is CANCELLED now
    REQUESTED = "requested"  # it is running: its worker stops it at its next heartbeat


@dataclasses.dataclass(frozen=True, slots=True)
class Upload:
    """A file a user uploaded (fal's upload routes) to use as an input of their requests."""

    id: str
    user: str
    key: str  # in the blob store
    content_type: str
    file_name: str
    size: int | None  # None until the bytes are stored
    created_at: float
    expires_at: float | None  # the expiry the uploader asked for; None: retention default
    received: int = 0  # an upload in progress: the bytes of its parts so far


@dataclasses.dataclass(frozen=True, slots=True)
class Preview:
    """A running attempt's latest live preview (``WorkerStore.preview``)."""

    key: str  # its blob (``jobs.preview_key``)
    step: int  # the step of the run it shows
    at: float  # when it was published (the database clock)


@dataclasses.dataclass(frozen=True, slots=True)
class JobStatus:
    """What a status poll needs: a slim read of one job and, if queued, its position."""

    id: int
    model_id: str
    state: JobState
    progress_done: int
    progress_total: int
    work_units: float
    higher_quality: bool
    result_key: str | None
    error: str | None
    queue_position: int | None  # None unless the job is queued
    expired_at: float | None = None  # the output expired (retention) at this time
    pool_paused: bool = False  # an operator paused the job's pool
    # The job's user has max_running jobs running: this one waits for one of them to end,
    # and queue_position is the one it will have then (see store/positions.py).
    held: bool = False
    seed: int | None = None  # the seed it runs with (None: a job queued without one)
    # what it cost so far (``Job``'s fields of the same names)
    attempt: int = 0
    gpu_seconds: float = 0.0
    device: str | None = None
    created_at: float = 0.0
    first_started_at: float | None = None
    preview: Preview | None = None  # the running attempt's latest, if its engine sent one

    @property
    def hold(self) -> Hold | None:
        """Why this queued job is passed over for now, if it is (a pause comes first: it
        holds every job of the pool)."""
        if self.queue_position is None:
            return None
        if self.pool_paused:
            return Hold.PAUSED
        return Hold.HELD if self.held else None


@dataclasses.dataclass(frozen=True, slots=True)
class ReapResult:
    """What one reaper pass did."""

    retried: list[int]
    failed: list[int]
    cancelled: list[int] = dataclasses.field(default_factory=list)  # cancel was requested
    expired: list[int] = dataclasses.field(default_factory=list)  # past their deadline


@dataclasses.dataclass(frozen=True, slots=True)
class PoolStats:
    """One pool over a recent window, for the operators' dashboard (``/admin/queues``)."""

    running: int = 0  # jobs RUNNING now
    completed: int = 0  # finished COMPLETED within the window
    failed: int = 0  # finished FAILED within the window
    median_wait_s: float | None = None  # submit -> start, of the jobs started in the window
    median_run_s: float | None = None  # start -> finish, of the window's completed jobs


@dataclasses.dataclass(frozen=True, slots=True)
class PoolHistory:
    """One pool's recent past for the operators' dashboard (``/admin/history``): one value
    per bucket of ``History.times`` in each tuple."""

    queued: tuple[int, ...]  # jobs waiting for their first start at the bucket's end
    started: tuple[int, ...]  # first starts in the bucket (the waits' sample size)
    completed: tuple[int, ...]  # finished COMPLETED in the bucket
    failed: tuple[int, ...]  # finished FAILED in the bucket
    wait_p50_s: tuple[float | None, ...]  # submit -> first start of the bucket's starts
    wait_p95_s: tuple[float | None, ...]  # (nearest rank; None when none started)


@dataclasses.dataclass(frozen=True, slots=True)
class History:
    """Every pool's recent past in buckets of ``step_s`` seconds aligned on the clock; the
    last bucket is the current one, up to ``now`` (database time)."""

    times: tuple[float, ...]  # each bucket's start, seconds since the epoch
    step_s: float
    now: float
    pools: Mapping[str, PoolHistory]  # only the pools with jobs in the window


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """A failed job as the operators' dashboard lists it."""

    job_id: int
    user: str
    model_id: str
    pool: str
    error: str | None
    error_type: str | None
    finished_at: float


@dataclasses.dataclass(frozen=True, slots=True)
class DueWebhook:
    """A finished job whose webhook is due: enough to pick its delivery's slots."""

    job_id: int
    user: str
    url: str


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookDelivery:
    """A webhook leased for one delivery attempt (``WebhookStore.take_webhook``)."""

    job: Job  # finished; carries the target, the dialect and the public base URL
    attempts: int  # deliveries tried before this one


@dataclasses.dataclass(frozen=True, slots=True)
class UserStats:
    """One user's requests now and since the start of the day (``GET /admin/users``)."""

    user: str
    queued: int
    running: int
    completed_today: int
    failed_today: int
    video_seconds_today: float  # accepted today, as the daily_video_seconds limit counts


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as the store last saw it (``GET /admin/workers``)."""

    name: str
    pools: tuple[str, ...]
    engines: dict[str, str]  # pool -> engine, as the worker reported them
    seen_s_ago: float  # since its last claim attempt (its heartbeat to the store)
    current_job: int | None
    jobs_done: int  # completed by it
    state: WorkerState = WorkerState.READY  # as it last said (idle/busy: ``current_job``)
    state_reason: str | None = None  # why, for ``engine_down``


# A metric sample: (family, labels as sorted JSON) -> value (see ``store/counters.py``).
Samples = dict[tuple[str, str], float]


@dataclasses.dataclass(frozen=True, slots=True)
class DueBlobs:
    """A finished job whose inputs or output the collector should delete."""

    job_id: int
    keys: tuple[str, ...]
    marked: bool  # already marked expired by an earlier run that did not finish


class WorkerStore(Protocol):
    """The job store as a worker's claims and attempts use it: what the local attempt
    port (``worker/local.py``) calls. ``JobStore`` has it all; a remote worker reaches none
    of it (its attempts speak to the API, whose routes make these calls)."""

    def register_worker(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str] | None = None,
        *,
        owner: str | None = None,
        max_names: int | None = None,
        state: WorkerState = WorkerState.READY,
        reason: str | None = None,
    ) -> bool:
        """Record that a worker is alive, its pools and their engines, and what it says it
        is doing (``state``, ``reason``: why, for ``engine_down``), for operators.
        ``owner`` (a worker token's user) keeps at most ``max_names`` names alive: a new
        name past that is refused (False); a name it has is always refreshed."""

    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Claim | None:
        """Atomically take the first queued job of these pools: RUNNING, attempt+1,
        a fresh lease token, ``lease_until = db_now + lease_s``; the job with its lease."""

    def claimed(self, job_id: int) -> Claim | None:
        """The job with the lease its running attempt holds; None when no attempt holds
        one (unknown, queued or finished)."""

    def completed_by(self, job_id: int, token: str, key: str) -> bool:
        """Whether the attempt that held ``token`` completed the job with ``key`` (a retried
        complete whose first answer was lost): the completed row keeps the winner's token."""

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """Block until a job may have been queued in these pools, or ``timeout`` passes.
        Every transition to PENDING or RETRY wakes waiters (SQLite: those of this store
        object; PostgreSQL: those of every process), including one that happened since
        this thread's last ``claim``. Spurious wake-ups are allowed; the caller claims
        and waits again."""

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per pool."""

    def reap(self) -> ReapResult:
        """Expired leases -> RETRY while attempts remain, else FAILED (CANCELLED if a
        cancel was requested). Retries wake their pools' waiting workers. Then deadlines:
        jobs unfinished at their ``deadline_at`` or not started at their ``start_by`` ->
        FAILED (the worker of a running one loses its lease and stops the engine)."""

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> Lease:
        """Extend the lease; ``Lease.LOST`` (falsy) if the lease is lost, ``Lease.CANCEL``
        if a cancel was requested (one round trip: the worker polls nothing else)."""

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        """Record progress; False if the lease is lost."""

    def preview(self, job_id: int, token: str, key: str, step: int) -> bool:
        """Name the attempt's latest live preview (its blob ``key``, at ``step``, now);
        False if the lease is lost. A claim clears it."""

    def complete(
        self, job_id: int, token: str, result_key: str, meta: dict[str, Any], ran: Ran = Ran()
    ) -> bool:
        """RUNNING -> COMPLETED fenced by the lease token; False if the lease is lost or a
        cancel was requested (then ``finish_cancel``). Every end of an attempt (this,
        ``fail``, ``release``, ``finish_cancel``) adds what it ``ran`` to the job's
        ``gpu_seconds`` and sets its ``device``, in the same fenced update."""

    def finish_cancel(self, job_id: int, token: str, ran: Ran = Ran()) -> bool:
        """RUNNING with a cancel request -> CANCELLED, fenced; False otherwise. Of a cancel
        and a completion racing for one job, exactly one is recorded."""

    def fail(
        self,
        job_id: int,
        token: str,
        error: str,
        error_type: str,
        retry: bool,
        retry_after_s: float = 0.0,
        ran: Ran = Ran(),
    ) -> bool:
        """RUNNING -> RETRY (if ``retry`` and attempts remain) or FAILED; fenced. A retry
        is not claimed for ``retry_after_s`` seconds of database time (backoff); it wakes
        the pool's waiting workers."""

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        """The job, or None if it does not exist or (with ``user``) is another user's."""

    def release(self, job_id: int, token: str, ran: Ran = Ran()) -> bool:
        """Give a job back without spending an attempt (graceful shutdown): it gets one
        more, and the next attempt has a number (and an output key) of its own; fenced.
        Wakes the pool's waiting workers."""


@dataclasses.dataclass(frozen=True, slots=True)
class JobFilter:
    """Which of a user's jobs a list shows (``GET /requests``); every part is optional."""

    model_id: str | None = None
    states: tuple[JobState, ...] = ()  # one wire status: one or two states; (): any
    prompt: str | None = None  # a case-insensitive substring of the prompt, matched literally


class SubmitStore(Protocol):
    """A user's jobs, as the user routes use them (``api/native/``, ``api/fal/``,
    ``api/files.py``, through ``api/services/``): submit, then read, list and cancel one's
    own jobs."""

    # True when reads are in-process calls of a few microseconds (SQLite) that the API may
    # make on its event loop; False for network databases (reads go to a thread).
    inline_reads: bool

    def enqueue(self, new: NewJob, quota: Quota | None = None) -> Job:
        """Insert a PENDING job; returns it with its id. Durable once it returns.

        Limits: with a ``quota``, the job is inserted only if the user's jobs leave room
        under its ``max_queued``, ``rate_per_minute`` and ``daily_video_seconds``, decided
        in the database so that it holds across API processes (the INSERT's own condition,
        serialised per user); else ``RateLimited`` naming the limit, and nothing stored.
        A replay of an Idempotency-Key returns the first job and never counts twice.

        Idempotency: when ``new.idempotency_key`` is set and this user already has a job
        with that key, nothing is inserted and the existing job is returned unchanged.
        This must hold under concurrency: two simultaneous enqueues with the same
        (user, key) both return the same job, never an error. The unique index
        ``ux_jobs_idempotency`` on (owner, idempotency_key) decides the race; the store
        uses ``INSERT ... ON CONFLICT (owner, idempotency_key) WHERE idempotency_key IS
        NOT NULL DO NOTHING RETURNING ...`` and, when no row comes back, reads the
        existing job by key (on PostgreSQL the conflicting insert has committed by then:
        ON CONFLICT waits for it). Wakes the pool's waiting workers."""

    def find_by_idempotency_key(self, user: str, key: str) -> Job | None:
        """The job a user submitted with this Idempotency-Key, if any."""

    def find_by_result_key(self, key: str) -> Job | None:
        """The job whose output is stored under this key."""

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        """The same as ``WorkerStore.get``."""

    def queue_position(self, job: Job) -> int:
        """How many queued jobs a worker claims before this one (store/positions.py: a
        user held at ``max_running`` counts ahead of nobody else)."""

    def job_status(self, job_id: int, user: str) -> JobStatus | None:
        """The user's job as a status poll sees it (one read), or None (unknown or not
        theirs). Polls are the hottest path: this must not parse the inputs."""

    def cancel(self, job_id: int, user: str) -> bool:
        """PENDING/RETRY -> CANCELLED atomically; False if the job is not queued."""

    def cancel_job(self, job_id: int, user: str, *, running: bool) -> Cancel | None:
        """One atomic statement: a queued job is CANCELLED; with ``running``, a RUNNING
        job gets a cancel request (its worker's next heartbeat answers ``Lease.CANCEL``).
        None when neither applies (finished, or running without ``running``)."""

    def usage(self, user: str) -> Usage:
        """What the user's jobs hold of the limits now."""

    def daily_usage(self, user: str, days: int) -> list[DailyUsage]:
        """What the user's jobs submitted on each of the last ``days`` UTC days (today
        included) used, per day and model, oldest first."""

    def list_jobs(
        self, user: str, limit: int, before_id: int | None = None, where: JobFilter = ...
    ) -> list[Job]:
        """The user's jobs that are not deleted and match ``where``, newest first."""

    def delete_job(self, job_id: int, user: str) -> Job | None:
        """Mark the user's finished job deleted, with the retention marks of its blobs
        (``expired_at`` of a completed job, ``inputs_expired_at``), atomically; the job as
        marked, or None (not the user's, not finished, or deleted already). The caller
        deletes the blobs and records it (``RetentionStore.output_deleted``,
        ``inputs_deleted``); a failure there leaves them to the collector."""


class TokenStore(Protocol):
    """API tokens (``api/auth.py``, the ``vidq token`` commands). Only a token's sha256
    is stored."""

    def create_token(
        self,
        user: str,
        token_hash: str,
        max_priority: int,
        admin: bool,
        quota: Quota = Quota(),
        *,
        worker: bool = False,
        pools: Sequence[str] | None = None,
        name: str | None = None,
        expires_at: float | None = None,
    ) -> Token:
        """Store a token's hash (``worker``: a worker token, for ``pools`` or every pool),
        named ``name``, refused from ``expires_at`` (database time; None: never)."""

    def create_user_token(
        self,
        user: str,
        token_hash: str,
        max_priority: int,
        quota: Quota,
        *,
        name: str,
        expires_at: float | None,
        max_live: int,
    ) -> Token | None:
        """A user's own token (no admin, no worker role) named ``name``, refused from
        ``expires_at`` (database time; None: never); None, and nothing stored, if ``user``
        already holds ``max_live`` live tokens (neither revoked nor expired). Serialised
        with the user's other creates, so that the cap holds across API replicas."""

    def update_token(self, token_id: int, max_priority: int, quota: Quota) -> Token | None:
        """Set a live token's limits; None if no such live token."""

    def get_token(self, token_id: int) -> Token | None:
        """The token with this id, revoked or not; None if there is none."""

    def token_by_hash(self, token_hash: str) -> tuple[Token, str] | None:
        """The token with this hash unless revoked, and the stored hash (an expired one
        too: ``Token.expired`` says so, for a clear refusal)."""

    def revoke_token(self, token_id: int, user: str | None = None) -> bool:
        """Revoke; False if no such live token (``user``: of that user only)."""

    def list_tokens(self, user: str | None = None) -> list[Token]:
        """All tokens, or ``user``'s, revoked ones too, oldest first (no secrets)."""


class UploadStore(Protocol):
    """Files users upload to use as inputs (``api/fal/storage.py``, and
    ``api/services/uploads.py``, which reads them as inputs)."""

    def create_upload(
        self,
        upload_id: str,
        user: str,
        key: str,
        content_type: str,
        file_name: str,
        expires_in_s: float | None,
        *,
        max_uploads: int | None = None,
    ) -> Upload | None:
        """Record an upload whose bytes are not stored yet (``size`` None); None when the
        user keeps ``max_uploads`` already (stored or in progress)."""

    def get_upload(self, upload_id: str, user: str | None = None) -> Upload | None:
        """The upload with this id (only if ``user``'s, when given); None for unknown ids
        and other users' alike."""

    def upload_stored(self, upload_id: str, size: int, *, max_bytes: int | None = None) -> bool:
        """Mark the bytes stored; False if unknown, already stored, or if the uploader
        would hold more than ``max_bytes`` with them (their other uploads, stored or in
        progress, counted)."""

    def upload_received(
        self, upload_id: str, size: int, *, max_one: int, max_bytes: int | None = None
    ) -> bool:
        """Count a part of an upload in progress: False past ``max_one`` bytes for the
        upload, or past ``max_bytes`` for everything its uploader holds."""

    def delete_upload(self, upload_id: str) -> bool:
        """Forget an upload (its blob deleted first); False if unknown."""


class WebhookStore(Protocol):
    """The webhook outbox (``api/webhooks.py``): the jobs table. ``SubmitStore.enqueue``
    registers a job's webhook in the job's own INSERT (state 'pending', due at once), so
    no submit leaves a job without its webhook or a webhook without its job."""

    def due_webhooks(self, limit: int, after_id: int = 0) -> list[DueWebhook]:
        """Up to ``limit`` webhooks due now (pending, job finished, not backing off or
        leased), with job id above ``after_id``, by job id."""

    def take_webhook(self, job_id: int, lease_s: float) -> WebhookDelivery | None:
        """Lease one due delivery for ``lease_s`` seconds of database time, atomically:
        of several API processes taking one webhook, one gets it, the others None (also
        None if it is no longer due). If the holder dies, it is due again once the lease
        ends (at-least-once)."""

    def webhook_result(
        self, job_id: int, attempts: int, state: WebhookState, retry_after_s: float = 0.0
    ) -> bool:
        """Record the attempt taken with ``attempts`` earlier tries: DELIVERED, GIVEN_UP,
        or PENDING to try again in ``retry_after_s`` seconds. False (nothing changed) when
        that attempt's lease was lost to another taker who recorded first."""


class OperatorStore(Protocol):
    """What the operators' routes read and change (``api/admin.py``): every user's jobs,
    admin retries, paused pools, the dashboard's figures, users and workers."""

    def now(self) -> float:
        """The database clock, seconds since the epoch."""

    def admin_jobs(
        self,
        *,
        user: str | None,
        states: Sequence[JobState],
        pool: str | None,
        since: float,
        limit: int,
        before_id: int | None = None,
    ) -> list[Job]:
        """Every user's jobs, newest first, filtered (an empty ``states``: any state; at
        most two states) to those created at or after ``since``."""

    def admin_retry(self, job_id: int) -> bool:
        """FAILED -> PENDING with fresh attempts (the spent ones stay counted); False if
        the job is not FAILED or its inputs have expired. Wakes the pool's workers."""

    def pause_pool(self, pool: str) -> None:
        """No worker claims from ``pool`` until it is resumed (kept in the database)."""

    def resume_pool(self, pool: str) -> bool:
        """Claims from ``pool`` again (wakes its workers); False if it was not paused."""

    def paused_pools(self) -> list[str]:
        """The paused pools."""

    def queue_depths(self) -> dict[str, int]:
        """The same as ``WorkerStore.queue_depths``."""

    def live_workers(self) -> dict[str, int]:
        """The same as ``MetricStore.live_workers``."""

    def pool_stats(self, window_s: float) -> dict[str, PoolStats]:
        """Per pool: running now; completed, failed and the median wait and run time
        over the last ``window_s`` seconds. Pools with none of these are left out."""

    def recent_failures(self, limit: int) -> list[Failure]:
        """The latest failed jobs of every user, newest first."""

    def pool_history(self, window_s: float, step_s: float) -> History:
        """Per pool, the last ``window_s`` seconds in buckets of ``step_s``: queue depth,
        first starts, completed and failed jobs, and the wait (submit -> first start)
        p50/p95. Computed from the jobs' rows, so what retention purged is not counted,
        and a job waiting again after a failed attempt is not queued again."""

    def user_stats(self, since: float) -> list[UserStats]:
        """Per user: queued and running now; completed and failed since ``since``
        (database time), and the seconds of video accepted since then (what
        ``daily_video_seconds`` counts)."""

    def workers(self) -> list[WorkerInfo]:
        """Every worker that ever registered, by name."""

    def all_usage(self, days: int) -> list[DailyUsage]:
        """``SubmitStore.daily_usage`` of every user: per user, day and model."""


class RetentionStore(Protocol):
    """What the retention collector asks (``ops/retention.py``): its fleet-wide lease,
    the jobs whose blobs are due, the marks before and after deleting them, the purge of
    old rows, and expired uploads."""

    def take_lease(self, name: str, holder: str, lease_s: float) -> bool:
        """Take (or renew) the named lease for ``lease_s`` seconds of database time;
        False while another holder's lease runs."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (a no-op unless ``holder`` holds it)."""

    def inputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        """Finished jobs whose inputs are past ``ttl_s`` (or marked but not deleted), oldest
        first."""

    def expire_inputs(self, job_id: int) -> bool:
        """Mark a finished job's inputs expired: from now on nothing may use them.
        False when no row was marked (the job is no longer finished: an admin retry
        came in between); the collector then deletes nothing of it."""

    def inputs_deleted(self, job_id: int) -> None:
        """Record that an expired job's input blobs are deleted."""

    def outputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        """Completed jobs whose output is past ``ttl_s`` (or marked but not deleted)."""

    def expire_output(self, job_id: int) -> bool:
        """Mark a completed job's output expired (the API answers 410 from now on).
        False when no row was marked (the job is no longer finished: an admin retry
        came in between); the collector then deletes nothing of it."""

    def output_deleted(self, job_id: int) -> None:
        """Record that an expired job's output blob is deleted."""

    def purge_jobs(self, ttl_s: float, limit: int) -> int:
        """Delete about ``limit`` rows of jobs finished over ``ttl_s`` ago whose blobs are
        all deleted, adding their counters to the rollup in the same transaction; returns
        how many rows went."""

    def running_attempts(self) -> set[tuple[int, int]]:
        """(job id, attempt) of every running attempt."""

    def retried_finished(self, window_s: float, limit: int) -> list[Job]:
        """Finished jobs of more than one attempt that ended in the last ``window_s``
        seconds, newest first."""

    def expired_uploads(self, max_age_s: float, limit: int) -> list[Upload]:
        """Uploads past their requested expiry, or without one older than ``max_age_s``
        (oldest first): for retention, which deletes the blob, then ``delete_upload``."""

    def delete_upload(self, upload_id: str) -> bool:
        """The same as ``UploadStore.delete_upload``."""


class MetricStore(Protocol):
    """The job families of ``GET /metrics`` (``ops/metrics.py``'s ``JobFamilies``), read
    at scrape time."""

    def job_samples(self) -> Samples:
        """The job counters and duration histograms of every job, purged ones included
        (``store/counters.py`` names the families); read at scrape time."""

    def pool_states(self) -> dict[str, dict[JobState, int]]:
        """Per pool, the number of queued (PENDING, RETRY) and RUNNING jobs by state."""

    def live_workers(self) -> dict[str, int]:
        """Workers per pool seen in the last few lease periods."""


class RunTimeStore(Protocol):
    """The measured run times behind the ETAs (``api/eta.py``)."""

    def recent_durations(self, pool: str, work_units: float, limit: int = 20) -> list[float]:
        """Run times (s) of recent completed jobs of a pool with similar work units."""


class JobStore(
    SubmitStore,
    WorkerStore,
    TokenStore,
    UploadStore,
    WebhookStore,
    OperatorStore,
    RetentionStore,
    MetricStore,
    RunTimeStore,
    Protocol,
):
    """The job database: every role in one (``open_store`` returns it, the composition
    root hands it around; ``sql.SQLStore`` implements it). Consumers ask for the role
    they use."""

    def close(self) -> None:
        """Release connections."""
