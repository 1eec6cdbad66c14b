"""The messages of the worker protocol, version 1 (``/worker/v1``), in one module that both
sides import: the API's routes (``api/worker/routes.py``) read the requests with these models
and write the answers with them; a remote worker's attempts (``worker/remote.py``) build
their requests with the same models, so what the server would refuse (a 422) is refused
before it is sent, and read the answers with them.

Requests are strict (``extra="forbid"``: an unknown field is a 422 naming it); answers
ignore fields they do not know, so a newer server can add some. The bounds are written
once, here: a value the worker does not choose (an engine's error text, a backoff) is fitted
to them by the model itself (``FailBody.fitted``), never cut by hand at a call site.

Imports nothing of vidq but the core's enums (``vidq.jobs``): it sits below both
``vidq.api`` and ``vidq.worker`` (the layers in ``pyproject.toml``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vidq.jobs import WorkerState

VERSION = 1
PREFIX = "/worker/v1"
MAX_WAIT_S = 30.0  # the longest long-poll of a claim
MAX_PARTS = 10_000  # S3's limit on the parts of a multipart upload
# A live preview is PUT as its raw bytes (``PUT /jobs/{id}/preview?step=N``), an animated
# WebP of at most MAX_PREVIEW_BYTES, fenced by the lease token in this header.
LEASE_HEADER = "X-Vidq-Lease-Token"
MAX_PREVIEW_BYTES = 2 << 20
# An output's poster frame is PUT as raw JPEG bytes (``PUT /jobs/{id}/poster?key=<the
# attempt's upload key>``), fenced the same way, after the upload and before the complete.
MAX_POSTER_BYTES = 1 << 20

Name = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$")]
PoolName = Annotated[str, Field(min_length=1, max_length=100)]
LeaseToken = Annotated[str, Field(min_length=1, max_length=100)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# -- requests (worker -> API) -------------------------------------------------------------
class Presence(_Request):
    """A worker, its pools and their engines, as ``/admin/workers`` shows them."""

    worker: Name
    pools: list[PoolName] = Field(min_length=1, max_length=100)
    engines: dict[PoolName, Annotated[str, Field(max_length=50)]] = Field(
        default_factory=dict, max_length=100
    )  # pool -> engine, shown on /admin/workers


class ClaimBody(Presence):
    """Take a job of these pools; wait up to ``wait_s`` for one (the worker is ``ready``)."""

    wait_s: float = Field(default=0.0, ge=0.0, le=MAX_WAIT_S)


class AnnounceBody(Presence):
    """What a worker that is not claiming is doing (``POST /worker/v1/announce``): loading
    its engines, its engine's backend down (``reason``: why), draining, or stopped. A worker that
    never sends it (an older one) shows as ``ready`` from its claims."""

    state: WorkerState
    reason: str | None = Field(default=None, max_length=1000)

    @classmethod
    def fitted(
        cls,
        worker: str,
        pools: list[str],
        engines: dict[str, str],
        state: WorkerState,
        reason: str | None,
    ) -> AnnounceBody:
        """An announce whose reason (an engine's error text) is cut to its bound."""
        cut = None if reason is None else _cut(cls, "reason", reason)
        return cls(worker=worker, pools=pools, engines=engines, state=state, reason=cut)


class Fenced(_Request):
    """A call of the attempt that holds ``lease_token``."""

    lease_token: LeaseToken


class Ended(Fenced):
    """The end of an attempt (fail, cancelled, release, complete): what it used, recorded
    with the end (``gpu_seconds`` its engine ran, the ``device`` it ran on)."""

    gpu_seconds: float = Field(default=0.0, ge=0.0, le=1e7)
    device: str | None = Field(default=None, min_length=1, max_length=100)


class ProgressBody(Fenced):
    """Steps done of the total (advisory)."""

    done: int = Field(ge=0, le=1_000_000)
    total: int = Field(ge=0, le=1_000_000)

    @model_validator(mode="after")
    def _done_of_total(self) -> ProgressBody:
        if self.done > self.total:
            raise ValueError("done is over total")
        return self


class FailBody(Ended):
    """A failed attempt: retried after ``delay_s`` (if ``retry`` and attempts remain) or final."""

    message: str = Field(max_length=4000)
    error_type: str = Field(min_length=1, max_length=100)
    retry: bool
    delay_s: float = Field(default=0.0, ge=0.0, le=3600.0)

    @classmethod
    def fitted(
        cls,
        lease_token: str,
        message: str,
        error_type: str,
        retry: bool,
        delay_s: float,
        gpu_seconds: float = 0.0,
        device: str | None = None,
    ) -> FailBody:
        """A fail whose message and type are cut to their bounds and whose delay is held
        within them: what an engine raised is recorded as far as it fits, never refused."""
        return cls(
            lease_token=lease_token,
            message=_cut(cls, "message", message),
            error_type=_cut(cls, "error_type", error_type),
            retry=retry,
            delay_s=_clamp(cls, "delay_s", delay_s),
            gpu_seconds=_clamp(cls, "gpu_seconds", gpu_seconds),
            device=device,
        )


class UploadBody(Fenced):
    """Ask where to upload this attempt's output ``key`` of ``size`` bytes."""

    key: str = Field(min_length=1, max_length=500)
    size: int = Field(ge=1, le=1 << 40)
    sha256: Sha256


class PartDone(_Request):
    """An uploaded part of a multipart upload: its number and the ETag S3 answered."""

    number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(min_length=1, max_length=200)


class CompleteBody(UploadBody, Ended):
    """The attempt's uploaded output, and its meta (stored as the result's); for a
    multipart upload, its id and parts (the API assembles them); what the attempt used."""

    meta: dict[str, Any] = Field(default_factory=dict)
    upload_id: str | None = Field(default=None, min_length=1, max_length=1000)
    parts: list[PartDone] = Field(default_factory=list, max_length=MAX_PARTS)


# -- answers (API -> worker) --------------------------------------------------------------
class ConfigAnswer(_Answer):
    """What the server expects of its remote workers (``GET /worker/v1/config``)."""

    version: int
    lease_s: float = Field(gt=0)
    pools: list[str]
    max_wait_s: float


class ClaimedJob(_Answer):
    """The job a claim took, with the attempt's lease."""

    id: int = Field(ge=1)
    model_id: str
    pool: str
    tier: int
    priority: int = 0
    attempt: int = Field(ge=1)
    max_attempts: int
    inputs: dict[str, Any]  # ``_blobs`` names the media fields (see ``downloads``)
    lease_token: LeaseToken
    lease_expires_at: float  # database time
    lease_s: float


class ClaimAnswer(_Answer):
    """A claim's answer: the job and a download URL per media input field, or no job and
    the number of jobs queued in each of the claimed pools."""

    job: ClaimedJob | None
    downloads: dict[str, str] | None = None  # input field -> signed URL (with a job)
    queued: dict[str, int] | None = None  # pool -> queued jobs (without one)


class HeartbeatAnswer(_Answer):
    """The lease is still held; ``cancel``: a cancel was requested, stop and say so."""

    lease: Literal["held", "cancel"]
    lease_s: float


class PartTarget(_Answer):
    """Where to PUT one part of a multipart upload."""

    number: int = Field(ge=1, le=MAX_PARTS)
    url: str
    size: int = Field(ge=1)


class UploadTarget(_Answer):
    """Where to PUT the output: one URL (with its headers), or one URL per part."""

    method: Literal["PUT"]
    url: str | None = None
    headers: dict[str, str] | None = None
    upload_id: str | None = None
    parts: list[PartTarget] | None = None


class CompleteAnswer(_Answer):
    """The job is COMPLETED with this attempt's output (``replayed``: by an earlier try)."""

    completed: bool
    replayed: bool


class Done(_Answer):
    """A fenced call (progress, fail, cancelled, release) was recorded."""

    ok: bool


class Stored(_Answer):
    """A signed upload (local storage) was stored."""

    stored: str
    size: int


def _cut(model: type[BaseModel], field: str, value: str) -> str:
    limit = _bound(model, field, "max_length")
    return value if limit is None else value[: int(limit)]


def _clamp(model: type[BaseModel], field: str, value: float) -> float:
    low, high = _bound(model, field, "ge"), _bound(model, field, "le")
    if low is not None:
        value = max(value, float(low))
    return value if high is None else min(value, float(high))


def _bound(model: type[BaseModel], field: str, name: str) -> Any:
    """The bound ``name`` (max_length, ge, le) of a field, as its ``Field`` declares it."""
    for constraint in model.model_fields[field].metadata:
        found = getattr(constraint, name, None)
        if found is not None:
            return found
    return None
