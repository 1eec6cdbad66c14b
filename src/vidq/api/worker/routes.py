"""The worker protocol, version 1 (``/worker/v1``): remote workers over HTTPS.

A remote worker (``vidq worker --server URL --token T``) runs the same loop as a local one
(``worker/runner.py``); these routes are its job store and its storage. Only worker
tokens (``vidq token create --worker``) may use them (any other token gets 404), and a
worker token may use nothing else (``context.caller`` answers 403).

- ``claim`` long-polls (up to ``MAX_WAIT_S``) on the store's own wake-ups and answers the
  job, its lease token and expiry, and a short-lived download URL per input; it registers
  the worker as ``ready``, and ``announce`` registers one that is not claiming (warming,
  its engine down, stopped) with its state;
- ``heartbeat``, ``progress``, ``fail``, ``cancelled``, ``release`` and ``complete`` are
  fenced by the attempt's lease token: 409 once the attempt has lost the job;
- outputs are uploaded without storage credentials: ``upload`` answers a presigned PUT of
  the S3 store, or a signed URL of ``PUT /worker/v1/uploads/...`` on local storage, signed
  with the attempt's lease token, so that a URL of an attempt that lost the job is refused;
- ``complete`` checks the object has the size and sha256 the worker reports, is
  idempotent (a retried complete of the winning attempt is a no-op success), and deletes
  the upload of an attempt it refuses; the winner's complete sweeps other attempts'
  uploads, as a local worker does.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from vidq.api.auth import parse_authorization
from vidq.api.context import AppContext, context, worker_store
from vidq.api.parsing.body import JsonRoute
from vidq.api.worker import outputs
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.outputs import sweep_attempts
from vidq.catalog import POOLS
from vidq.engines import ENGINES
from vidq.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
)
from vidq.jobs import (
    POSTER_TYPE,
    PREVIEW_TYPE,
    Claim,
    Job,
    Ran,
    output_attempt,
    poster_key,
    preview_key,
)
from vidq.store.base import Lease, Token, WorkerStore
from vidq.worker_protocol import (
    LEASE_HEADER,
    MAX_POSTER_BYTES,
    MAX_PREVIEW_BYTES,
    MAX_WAIT_S,
    PREFIX,
    VERSION,
    AnnounceBody,
    ClaimAnswer,
    ClaimBody,
    ClaimedJob,
    CompleteAnswer,
    CompleteBody,
    ConfigAnswer,
    Done,
    Ended,
    FailBody,
    Fenced,
    HeartbeatAnswer,
    Presence,
    ProgressBody,
    Stored,
    UploadBody,
    UploadTarget,
)

log = logging.getLogger(__name__)

_META_MAX = 64 * 1024  # a completion's meta, as JSON

# A job id in a path: bounded, so a huge number is a 422 and never reaches the database.
JobId = Annotated[int, PathParam(ge=1, le=2**62, description="The job's request id.")]

router = APIRouter(prefix=PREFIX, tags=["worker protocol"], route_class=JsonRoute)
uploads = APIRouter(prefix=PREFIX, tags=["worker protocol"])  # raw bodies


async def worker(request: Request) -> Token:
    """The worker token of this request: 401 without a known token, 404 for any other
    token (as for an unknown route)."""
    ctx = context(request)
    value = parse_authorization(request.headers.get("authorization"))
    token = ctx.auth.cached(value)
    if token is None:
        token = await run_in_threadpool(ctx.auth.lookup, value)
    if not token.worker:
        raise NotFound("Not found.")
    return token


Worker = Annotated[Token, Depends(worker)]
Queue = Annotated[WorkerStore, Depends(worker_store)]  # the job store as workers use it


# -- routes -------------------------------------------------------------------------------
@router.get(
    "/config", summary="What the server expects of its remote workers", response_model=ConfigAnswer
)
async def config(request: Request, token: Worker) -> Response:
    ctx = context(request)
    return _answer(
        ConfigAnswer(
            version=VERSION,
            lease_s=ctx.settings.worker.lease_seconds,
            pools=list(token.pools or POOLS),
            max_wait_s=MAX_WAIT_S,
        )
    )


@router.post("/claim", summary="Take a job (long-poll up to wait_s)", response_model=ClaimAnswer)
async def claim(request: Request, body: ClaimBody, token: Worker, store: Queue) -> Response:
    ctx = context(request)
    _check_presence(body, token)
    base = ctx.base_url(request)
    gone = threading.Event()  # the worker hung up: stop waiting, take no job for it

    async def watch() -> None:
        while not await request.is_disconnected():
            await anyio.sleep(0.5)
        gone.set()

    outcome: list[ClaimAnswer | BaseException] = []

    async def wait() -> None:
        try:
            outcome.append(await anyio.to_thread.run_sync(
                _claim, ctx, store, token, body, base, gone, limiter=ctx.worker_polls,
                abandon_on_cancel=False,
            ))  # fmt: skip
        except Exception as exc:  # raised below, as itself (not in an exception group)
            outcome.append(exc)
        finally:
            tasks.cancel_scope.cancel()  # the watcher's job is done

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(watch)
        tasks.start_soon(wait)
    if not outcome:  # cancelled from outside (shutdown)
        raise ServiceUnavailable("the API is stopping")
    answer = outcome[0]
    if isinstance(answer, BaseException):
        raise answer
    if gone.is_set() and answer.job is not None:  # claimed as it hung up: give it back
        await run_in_threadpool(store.release, answer.job.id, answer.job.lease_token)
        log.info("claim released: the worker hung up", extra={"job_id": answer.job.id})
    return _answer(answer)


@router.post(
    "/jobs/{job_id}/heartbeat",
    summary="Extend the lease; says whether to cancel",
    response_model=HeartbeatAnswer,
)
async def heartbeat(
    request: Request, job_id: JobId, body: Fenced, token: Worker, store: Queue
) -> Response:
    lease_s = context(request).settings.worker.lease_seconds
    lease = await run_in_threadpool(store.heartbeat, job_id, body.lease_token, lease_s)
    if lease is Lease.LOST:
        raise Conflict("This attempt no longer holds the job.")
    return _answer(HeartbeatAnswer(lease="cancel" if lease is Lease.CANCEL else "held",
                                   lease_s=lease_s))  # fmt: skip


@router.post("/jobs/{job_id}/progress", summary="Record progress (fenced)", response_model=Done)
async def progress(job_id: JobId, body: ProgressBody, token: Worker, store: Queue) -> Response:
    done = await run_in_threadpool(store.progress, job_id, body.lease_token, body.done, body.total)
    return _fenced(done)


@router.post(
    "/jobs/{job_id}/fail", summary="Record a failed attempt (retried or final)", response_model=Done
)
async def fail(
    request: Request, job_id: JobId, body: FailBody, token: Worker, store: Queue
) -> Response:
    def record() -> bool:
        return store.fail(
            job_id, body.lease_token, body.message, body.error_type, body.retry, body.delay_s,
            _ran(body),
        )  # fmt: skip

    return _fenced(await run_in_threadpool(_end, context(request), store, job_id, body, record))


@router.post(
    "/jobs/{job_id}/cancelled",
    summary="Record CANCELLED after a cancel request",
    response_model=Done,
)
async def cancelled(
    request: Request, job_id: JobId, body: Ended, token: Worker, store: Queue
) -> Response:
    def record() -> bool:
        return store.finish_cancel(job_id, body.lease_token, _ran(body))

    return _fenced(await run_in_threadpool(_end, context(request), store, job_id, body, record))


@router.post(
    "/jobs/{job_id}/release",
    summary="Give the job back (shutdown), no attempt spent",
    response_model=Done,
)
async def release(
    request: Request, job_id: JobId, body: Ended, token: Worker, store: Queue
) -> Response:
    def record() -> bool:
        return store.release(job_id, body.lease_token, _ran(body))

    return _fenced(await run_in_threadpool(_end, context(request), store, job_id, body, record))


@router.post(
    "/jobs/{job_id}/upload",
    summary="Where to upload this attempt's output",
    response_model=UploadTarget,
)
async def upload(
    request: Request, job_id: JobId, body: UploadBody, token: Worker, store: Queue
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> UploadTarget:
        job = _held(store, token, job_id, body.lease_token)
        outputs.own_key(job, body.key)
        return outputs.upload_target(ctx.storage, job, body, base)

    return _answer(await run_in_threadpool(work))


@router.post(
    "/jobs/{job_id}/complete",
    summary="Record the output (fenced, idempotent)",
    response_model=CompleteAnswer,
)
async def complete(
    request: Request, job_id: JobId, body: CompleteBody, token: Worker, store: Queue
) -> Response:
    ctx = context(request)
    if len(_json_text(body.meta)) > _META_MAX:
        raise PayloadTooLarge(f"meta is over {_META_MAX} bytes of JSON")
    return _answer(await run_in_threadpool(_complete, ctx, store, token, job_id, body))


@uploads.put(
    "/jobs/{job_id}/preview",
    summary="The attempt's live preview (raw animated WebP; fenced by the lease header)",
    response_model=Done,
)
async def preview(
    request: Request,
    job_id: JobId,
    token: Worker,
    store: Queue,
    step: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Response:
    lease_token, data = await _fenced_image(
        request, MAX_PREVIEW_BYTES, "a preview", "a WebP image",
        lambda head: head[:4] == b"RIFF" and head[8:12] == b"WEBP",
    )  # fmt: skip
    ctx = context(request)

    def work() -> bool:
        job = _held(store, token, job_id, lease_token)
        key = preview_key(job)
        ctx.storage.put_bytes(key, data, PREVIEW_TYPE)
        return store.preview(job_id, lease_token, key, step)

    return _fenced(await run_in_threadpool(work))


@uploads.put(
    "/jobs/{job_id}/poster",
    summary="The poster frame of the attempt's upload (raw JPEG; fenced by the lease header)",
    response_model=Done,
)
async def poster(
    request: Request,
    job_id: JobId,
    token: Worker,
    store: Queue,
    key: Annotated[str, Query(min_length=1, max_length=1000)],
) -> Response:
    """Stored under ``jobs.poster_key(key)``, next to the upload it shows, so it goes
    where the upload goes (swept with a losing attempt's, expired with the result)."""
    lease_token, data = await _fenced_image(
        request, MAX_POSTER_BYTES, "a poster", "a JPEG image",
        lambda head: head[:3] == b"\xff\xd8\xff",
    )  # fmt: skip
    ctx = context(request)

    def work() -> bool:
        job = _held(store, token, job_id, lease_token)
        outputs.own_key(job, key)
        ctx.storage.put_bytes(poster_key(key), data, POSTER_TYPE)
        return True

    return _fenced(await run_in_threadpool(work))


@uploads.put(
    "/uploads/{job_id}/{key:path}",
    summary="Signed output upload (local storage; the URL is the credential)",
    response_model=Stored,
    status_code=201,
)
async def signed_upload(
    request: Request,
    job_id: JobId,
    key: str,
    store: Queue,
    size: int = 0,
    sha256: str = "",
    expires: int = 0,
    signature: str = "",
) -> Response:
    ctx = context(request)
    storage = ctx.storage
    held = await run_in_threadpool(store.claimed, job_id)
    if not isinstance(storage, LocalBlobStore) or held is None or expires < time.time():
        raise Forbidden("Invalid or expired upload signature.")
    expected = outputs.signature(storage, held.lease_token, job_id, key, size, sha256, expires)
    # The signature is the API's (only it holds the storage secret), over this attempt's
    # lease, so a worker cannot sign a URL itself; and the key must be this attempt's output.
    if not hmac.compare_digest(expected, signature) or (
        output_attempt(held.job, key) != held.job.attempt
    ):
        raise Forbidden("Invalid or expired upload signature.")
    if await run_in_threadpool(ctx.storage.exists, key):
        raise Conflict("This upload URL was used already.")
    with tempfile.TemporaryDirectory(prefix="vidq-upload-") as tmp:
        path = Path(tmp) / "body"
        digest = hashlib.sha256()
        seen = 0
        with path.open("wb") as fh:
            async for chunk in request.stream():
                seen += len(chunk)
                if seen > size:
                    raise PayloadTooLarge(f"the body is over the declared size of {size} bytes")
                digest.update(chunk)
                await run_in_threadpool(fh.write, chunk)
        if seen != size or not hmac.compare_digest(digest.hexdigest(), sha256):
            raise InvalidInput("", "the body does not have the declared size and sha256")
        await run_in_threadpool(ctx.storage.put_file, key, path, outputs.OUTPUT_TYPE)
    return _answer(Stored(stored=key, size=size), status=201)


@router.post(
    "/announce",
    summary="Say what a worker that is not claiming is doing (warming, engine down, stopped)",
    response_model=Done,
)
async def announce(request: Request, body: AnnounceBody, token: Worker, store: Queue) -> Response:
    ctx = context(request)
    _check_presence(body, token)
    most = ctx.settings.limits.max_workers_per_token
    registered = await run_in_threadpool(
        store.register_worker, body.worker, body.pools, body.engines, owner=token.user,
        max_names=most, state=body.state, reason=body.reason,
    )  # fmt: skip
    if not registered:
        raise _too_many_names(most)
    return _answer(Done(ok=True))


# -- the work behind the routes ---------------------------------------------------------
def _check_presence(body: Presence, token: Token) -> None:
    """A claim's or an announce's pools are known and the token's, and its engines name
    those pools and known engines."""
    unknown = [p for p in body.pools if p not in POOLS]
    if unknown:
        raise InvalidInput("pools", f"unknown pools: {', '.join(unknown)[:200]}")
    if token.pools is not None:
        others = [p for p in body.pools if p not in token.pools]
        if others:
            raise Forbidden(
                f"this worker token may not claim from {', '.join(others)[:200]}",
                loc=["body", "pools"],
            )
    strays = [p for p in body.engines if p not in body.pools]
    if strays or any(e not in ENGINES for e in body.engines.values()):
        detail = (
            f"pools not claimed: {', '.join(strays)[:200]}"
            if strays
            else (f"engines are {', '.join(ENGINES)}")
        )
        raise InvalidInput("engines", detail)


def _too_many_names(most: int) -> RateLimited:
    return RateLimited(
        f"max_workers_per_token: this worker token keeps {most} worker names alive "
        "already; reuse a name, or wait a minute for an unused one to lapse",
        limit="max_workers_per_token", value=most, retry_after=60,
    )  # fmt: skip


def _claim(
    ctx: AppContext,
    store: WorkerStore,
    token: Token,
    body: ClaimBody,
    base: str,
    gone: threading.Event,
) -> ClaimAnswer:
    """Claim, waiting on the store's wake-ups until ``wait_s`` passes (one thread: the
    store's wake-ups are per thread). A worker token keeps a bounded number of worker
    names alive (429 past ``max_workers_per_token``)."""
    lease_s = ctx.settings.worker.lease_seconds
    most = ctx.settings.limits.max_workers_per_token
    if not store.register_worker(
        body.worker, body.pools, body.engines, owner=token.user, max_names=most
    ):
        raise _too_many_names(most)
    deadline = time.monotonic() + body.wait_s
    claim: Claim | None = None
    while not gone.is_set():
        claim = store.claim(body.pools, body.worker, lease_s)
        left = deadline - time.monotonic()
        if claim is not None or left <= 0 or ctx.reaper_stop.is_set():
            break
        store.wait_for_jobs(body.pools, min(left, 5.0))
    if claim is None:
        depths = store.queue_depths()
        return ClaimAnswer(job=None, queued={p: depths.get(p, 0) for p in body.pools})
    job = claim.job
    if job.attempt > 1:  # uploads of earlier attempts that never completed
        sweep_attempts(ctx.storage, job, lambda attempt: attempt < job.attempt)
    blobs = dict(job.inputs.get("_blobs", {}))
    downloads = {
        str(field): ctx.storage.signed_url(str(key), outputs.URL_TTL_S, base)
        for field, key in blobs.items()
    }
    log.info("job claimed by a remote worker", extra={"job_id": job.id, "worker": body.worker})
    claimed = ClaimedJob(
        id=job.id, model_id=job.model_id, pool=job.pool, tier=job.tier, priority=job.priority,
        attempt=job.attempt, max_attempts=job.max_attempts, inputs=job.inputs,
        lease_token=claim.lease_token, lease_expires_at=claim.lease_until, lease_s=lease_s,
    )  # fmt: skip
    return ClaimAnswer(job=claimed, downloads=downloads)


def _complete(
    ctx: AppContext, store: WorkerStore, token: Token, job_id: int, body: CompleteBody
) -> CompleteAnswer:
    """Record the output of the attempt that holds the lease. Nothing is read or answered
    about the job before its lease is checked: another job's key, size or state is no
    worker's business (a retried complete of the attempt that won is told so)."""
    held = store.claimed(job_id)
    job = held.job if held is not None else store.get(job_id)
    if job is None or not _may_claim(token, job.pool):
        raise NotFound("No such job.")
    if held is None or not hmac.compare_digest(held.lease_token, body.lease_token):
        if store.completed_by(job_id, body.lease_token, body.key):
            return CompleteAnswer(completed=True, replayed=True)  # a retry after a lost answer
        outputs.drop_stale_upload(ctx.storage, job, body.key)
        raise Conflict("This attempt no longer holds the job; its upload is deleted.")
    attempt = outputs.own_key(job, body.key)
    if body.upload_id is not None:
        outputs.assemble(ctx.storage, body, body.upload_id)
    outputs.check_object(ctx.storage, body)
    meta = {**body.meta, "file_size": body.size}  # the size the API checked, not a claim
    won = store.complete(job_id, body.lease_token, body.key, meta, _ran(body))
    outputs.delete_quietly(ctx.storage, preview_key(job))  # the attempt's live preview
    if won:
        if attempt > 1:  # only a retried job can have other attempts' uploads
            sweep_attempts(ctx.storage, job, lambda other: other != attempt)
        return CompleteAnswer(completed=True, replayed=False)
    if store.completed_by(job_id, body.lease_token, body.key):
        return CompleteAnswer(completed=True, replayed=True)
    # the lease was lost meanwhile: the job never took it
    outputs.delete_quietly(ctx.storage, body.key)
    outputs.delete_quietly(ctx.storage, poster_key(body.key))
    raise Conflict("This attempt no longer holds the job; its upload is deleted.")


async def _fenced_image(
    request: Request, max_bytes: int, what: str, kind: str, fits: Callable[[bytes], bool]
) -> tuple[str, bytes]:
    """The lease token header and the body of a small image an attempt PUTs (its live
    preview, its poster frame): 422 without the header or for another format (``fits``
    reads the first bytes), 413 past ``max_bytes``."""
    lease_token = request.headers.get(LEASE_HEADER, "")
    if not lease_token:
        raise InvalidInput(LEASE_HEADER, "the lease token header is missing", where="header")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > max_bytes:
            raise PayloadTooLarge(f"{what} is at most {max_bytes} bytes")
    if not fits(bytes(data[:16])):
        raise InvalidInput("", f"{what} is {kind}")
    return lease_token, bytes(data)


def _end(
    ctx: AppContext, store: WorkerStore, job_id: int, body: Fenced, record: Callable[[], bool]
) -> bool:
    """Record an end other than a completion (``record``) and delete the attempt's live
    preview, as a local attempt does (``worker/local.py``)."""
    held = store.claimed(job_id)
    done = record()
    if held is not None and hmac.compare_digest(held.lease_token, body.lease_token):
        outputs.delete_quietly(ctx.storage, preview_key(held.job))
    return done


def _may_claim(token: Token, pool: str) -> bool:
    """Whether a worker token may see a job of ``pool`` (a token without pools: any)."""
    return not token.pools or pool in token.pools


def _held(store: WorkerStore, token: Token, job_id: int, lease_token: str) -> Job:
    """The job, if this attempt holds it (409 otherwise; 404 for no such job, or one of a
    pool the token may not claim from)."""
    held = store.claimed(job_id)
    job = held.job if held is not None else store.get(job_id)
    if job is None or not _may_claim(token, job.pool):
        raise NotFound("No such job.")
    if held is None or not hmac.compare_digest(held.lease_token, lease_token):
        raise Conflict("This attempt no longer holds the job.")
    return held.job


def _ran(body: Ended) -> Ran:
    """What the ending attempt reports it used (its engine's seconds, on its device)."""
    return Ran(seconds=body.gpu_seconds, device=body.device)


def _fenced(done: bool) -> Response:
    if not done:
        raise Conflict("This attempt no longer holds the job.")
    return _answer(Done(ok=True))


def _answer(answer: BaseModel, status: int = 200) -> Response:
    """An answer model as JSON, with the fields it was given (an empty claim answer has no
    ``downloads``, a single-URL upload target no ``parts``)."""
    return JSONResponse(answer.model_dump(mode="json", exclude_unset=True), status_code=status)


def _json_text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
