"""The remote ``Source`` and ``Attempt`` (``ports.py``): the worker protocol
(``/worker/v1``) over HTTPS, so the one worker loop (``runner.py``) runs on a machine that
reaches only the API: no database URL, no storage credentials, no data dir.

A ``RemoteAttempt`` holds what its claim answered (the job, its lease token, a download URL
per media input) and what its upload made (size, sha256, multipart parts) for its
complete: no side tables, and no output key is ever parsed (the attempt names its key
from its own job). What needs the server's view is the server's work, not the attempt's
(``api/worker/``): sweeping other attempts' uploads, deciding a retried complete,
deleting a refused upload, reaping expired leases (the API's reaper).

Every request is built with the protocol's own models (``vidq.worker_protocol``), so what
the server would refuse is refused here before it is sent (``ProtocolError``), and every
answer is read with them. Calls are retried through API outages (connection errors,
502/503/504) with exponential backoff and jitter, within a budget per call; past it they
raise ``ServiceUnavailable``, which the loop already waits out (the lease decides whether
the job is still ours). The worker token travels in the Authorization header only; signed
URLs are never logged. A source is thread-safe (the GPU slots of a process share one); an
attempt is used by its loop and that loop's heartbeat thread.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from vidq.blobs.outputs import size_and_sha256
from vidq.errors import NotFound, ServiceUnavailable, StorageUnavailable, TokenRefused, VidqError
from vidq.jobs import POSTER_TYPE, PREVIEW_TYPE, Ran, WorkerState, output_key
from vidq.store.base import Lease
from vidq.worker.ports import Assignment
from vidq.worker_protocol import (
    LEASE_HEADER,
    PREFIX,
    AnnounceBody,
    ClaimAnswer,
    ClaimBody,
    ClaimedJob,
    CompleteBody,
    ConfigAnswer,
    Ended,
    FailBody,
    Fenced,
    HeartbeatAnswer,
    PartDone,
    ProgressBody,
    UploadBody,
    UploadTarget,
)

log = logging.getLogger(__name__)

# How long an idle worker's claim waits on the server (which allows up to 30 s): a job is
# answered at once either way; a shorter wait is a quicker exit on SIGTERM when idle.
CLAIM_WAIT_S = 5.0
_RETRY_STATUS = frozenset({502, 503, 504})
_LOOPBACK_NAMES = frozenset({"localhost"})


M = TypeVar("M", bound=BaseModel)


class ProtocolError(VidqError):
    """A message outside the worker protocol: a request this worker would send, or an
    answer the API sent."""


def check_server_url(url: str, *, insecure_http: bool = False) -> str:
    """``url`` without a trailing slash, if the worker may use it: ``https://``, or
    ``http://`` to loopback (any host with ``insecure_http``); ValueError otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url[:200]!r}")
    if parts.query or parts.fragment:
        raise ValueError("the server URL takes no query or fragment")
    if parts.scheme == "http" and not insecure_http and not _loopback(parts.hostname):
        raise ValueError(
            "refusing plain http:// to a host that is not loopback (the token would cross "
            "the network in clear); use https:// or --insecure-http"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RemoteAPI:
    """One HTTP connection pool to the API's worker routes (httpx.Client is thread-safe)."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        insecure_http: bool = False,
        retry_s: float = 60.0,
        timeout_s: float = 30.0,
        verify: Any = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.server = check_server_url(server, insecure_http=insecure_http)
        self.retry_s = retry_s
        self._timeout_s = timeout_s
        self._api = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            verify=verify,
            follow_redirects=False,
            transport=transport,
        )
        # Signed URLs (inputs, outputs) carry their own credential: never the token.
        self._urls = httpx.Client(
            timeout=httpx.Timeout(300.0, connect=10.0), verify=verify, follow_redirects=False,
            transport=transport,
        )  # fmt: skip

    def close(self) -> None:
        self._api.close()
        self._urls.close()

    def call(
        self,
        method: str,
        path: str,
        body: BaseModel | None = None,
        *,
        retry_s: float | None = None,
        read_s: float | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One call of the protocol, retried through outages within ``retry_s``; the
        answer for any other status (the caller reads 2xx, 404 and 409). 401/403:
        ``TokenRefused``."""
        budget = self.retry_s if retry_s is None else retry_s
        deadline = time.monotonic() + budget
        timeout = httpx.Timeout(read_s or self._timeout_s, connect=10.0)
        delay = 0.25
        data = None if body is None else body.model_dump(mode="json")
        while True:
            try:
                response = self._api.request(
                    method, PREFIX + path, json=data, content=content, headers=headers,
                    timeout=timeout,
                )  # fmt: skip
                if response.status_code not in _RETRY_STATUS:
                    break
                problem = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                problem = type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise ServiceUnavailable(f"the API is unreachable ({problem})")
            log.warning("API call failed (%s), retrying", problem, extra={"path": path})
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, 10.0)
        if response.status_code in (401, 403):
            raise TokenRefused(f"HTTP {response.status_code}: {_detail(response)}")
        return response

    def config(self) -> ConfigAnswer:
        """What the server expects of its remote workers (its lease, the token's pools);
        ``ProtocolError`` when the server does not speak the worker protocol."""
        response = self.call("GET", "/config")
        if response.status_code != 200:
            raise ProtocolError(
                f"{self.server} answered {response.status_code} to {PREFIX}/config: not a vidq "
                "API with the worker protocol, or not a worker token"
            )
        return parse(ConfigAnswer, response)

    def fetch(self, url: str, path: Path) -> None:
        """GET a signed URL into ``path``."""
        try:
            with self._urls.stream("GET", url) as response:
                if response.status_code == 404:
                    raise NotFound("No such input.")
                if response.status_code != 200:
                    raise StorageUnavailable(f"input download failed: HTTP {response.status_code}")
                with path.open("wb") as fh:
                    for chunk in response.iter_bytes(1 << 20):
                        fh.write(chunk)
        except httpx.TransportError as exc:
            raise StorageUnavailable(f"input download failed: {type(exc).__name__}") from exc

    def put(self, url: str, path: Path, size: int, headers: Mapping[str, str]) -> None:
        """PUT ``path`` to a signed URL."""
        try:
            with path.open("rb") as fh:
                response = self._urls.put(
                    url, content=fh, headers={**headers, "Content-Length": str(size)}
                )
        except httpx.TransportError as exc:
            raise StorageUnavailable(f"upload failed: {type(exc).__name__}") from exc
        if response.status_code not in (200, 201, 204):
            raise StorageUnavailable(f"upload refused: HTTP {response.status_code}")

    def put_part(self, url: str, path: Path, offset: int, size: int) -> str:
        """PUT ``size`` bytes of ``path`` from ``offset`` to a signed part URL; the ETag."""
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
        try:
            response = self._urls.put(url, content=data)
        except httpx.TransportError as exc:
            raise StorageUnavailable(f"upload failed: {type(exc).__name__}") from exc
        etag = str(response.headers.get("etag") or "")
        if response.status_code != 200 or not etag:
            raise StorageUnavailable(f"part upload refused: HTTP {response.status_code}")
        return etag


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except (ValueError, AttributeError):
        return response.text[:300]


def request(build: Callable[..., M], **fields: Any) -> M:
    """A request of the protocol, built by its model (the class, or a constructor of it
    such as ``FailBody.fitted``): what the server would refuse (a 422) is refused here,
    before anything is sent."""
    try:
        return build(**fields)
    except ValidationError as exc:
        name = getattr(build, "__qualname__", "request")
        raise ProtocolError(f"refusing to send an invalid {name}: {_first(exc)}") from None


def parse(model: type[M], response: httpx.Response) -> M:
    """An answer of the protocol, read with its model."""
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise ProtocolError(f"the API sent an invalid {model.__name__}: {_first(exc)}") from None


def _first(exc: ValidationError) -> str:
    error = exc.errors()[0]
    return f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}"


def _ok(response: httpx.Response) -> bool:
    """2xx: done; 409 (or 404: the job is gone): this attempt lost the job."""
    if response.status_code in (404, 409):
        return False
    if response.is_success:
        return True
    raise VidqError(f"the API refused the call: HTTP {response.status_code}: {_detail(response)}")


class RemoteSource:
    """Claims over ``/worker/v1`` (``Source``): each claim long-polls the API for ``wait_s``
    (0: answers at once; burst workers); ``lease_s`` is the server's lease, within a third
    of which its attempts' heartbeats are retried."""

    def __init__(
        self, api: RemoteAPI, *, wait_s: float = CLAIM_WAIT_S, lease_s: float = 30.0
    ) -> None:
        self.api = api
        self.wait_s = wait_s
        self.lease_s = lease_s
        self._lock = threading.Lock()
        self._queued: dict[str, int] = {}  # as the last empty claim answered
        self._waited = threading.local()

    def close(self) -> None:
        self.api.close()

    def claim(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str], lease_s: float
    ) -> RemoteAttempt | None:
        """One call registers the worker and claims; the lease length is the server's."""
        body = request(
            ClaimBody, worker=worker, pools=list(pools), engines=dict(engines), wait_s=self.wait_s
        )
        response = self.api.call("POST", "/claim", body, read_s=self.wait_s + 30.0)
        if not response.is_success:
            raise VidqError(f"claim refused: HTTP {response.status_code}: {_detail(response)}")
        answer = parse(ClaimAnswer, response)
        self._waited.value = self.wait_s > 0
        if answer.job is None:
            with self._lock:
                self._queued = dict(answer.queued or {})
            return None
        return RemoteAttempt(self.api, answer.job, answer.downloads or {}, lease_s=self.lease_s)

    def announce(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str],
        state: WorkerState,
        reason: str | None = None,
    ) -> None:
        """``POST /worker/v1/announce``, tried briefly (it is advisory and said again); an
        API from before the route (404) is left alone: it shows the worker from its claims."""
        body = AnnounceBody.fitted(worker, list(pools), dict(engines), state, reason)
        response = self.api.call("POST", "/announce", body, retry_s=5.0)
        if response.status_code == 404:
            return
        if not response.is_success:
            log.warning(
                "announce refused: HTTP %s: %s", response.status_code, _detail(response),
                extra={"worker": worker},
            )  # fmt: skip

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """The claim already waited on the server; a claim that did not (burst) waits
        here, so an idle burst worker does not spin on the API."""
        if not getattr(self._waited, "value", False):
            time.sleep(timeout)

    def queue_depths(self) -> dict[str, int]:
        """As the last empty claim answered (its pools only)."""
        with self._lock:
            return dict(self._queued)


class RemoteAttempt:
    """One claimed attempt (``Attempt``) over ``/worker/v1``: the claim's job, lease token
    and download URLs, and its own upload for its complete, all held here."""

    def __init__(
        self, api: RemoteAPI, claimed: ClaimedJob, downloads: Mapping[str, str], *, lease_s: float
    ) -> None:
        self.api = api
        self.claimed = claimed
        self.lease_token = claimed.lease_token
        self.lease_s = lease_s  # heartbeats are retried within a third of it
        self.downloads = dict(downloads)  # media input field -> signed URL
        self.job = Assignment(
            id=claimed.id, model_id=claimed.model_id, pool=claimed.pool, tier=claimed.tier,
            attempt=claimed.attempt,
            inputs={k: v for k, v in claimed.inputs.items() if k != "_blobs"},
        )  # fmt: skip
        self._path = f"/jobs/{claimed.id}"
        self._uploaded: UploadBody | None = None  # what the complete names
        self._parts: list[PartDone] = []
        self._upload_id: str | None = None

    def download_inputs(self, folder: Path) -> dict[str, str]:
        files: dict[str, str] = {}
        for field in dict(self.claimed.inputs.get("_blobs", {})):
            url = self.downloads.get(str(field))
            if url is None:
                raise NotFound("No download URL for this input.")
            local = folder / f"input-{field}"
            self.api.fetch(url, local)
            files[str(field)] = str(local)
        return files

    def heartbeat(self) -> Lease:
        body = request(Fenced, lease_token=self.lease_token)
        response = self.api.call(
            "POST", f"{self._path}/heartbeat", body, retry_s=max(1.0, self.lease_s / 3)
        )
        if not _ok(response):
            return Lease.LOST
        return Lease(parse(HeartbeatAnswer, response).lease)

    def progress(self, done: int, total: int) -> bool:
        try:
            body = request(ProgressBody, lease_token=self.lease_token, done=done, total=total)
            return _ok(self.api.call("POST", f"{self._path}/progress", body, retry_s=2.0))
        except VidqError as exc:  # advisory: the heartbeat decides about the lease
            if isinstance(exc, ServiceUnavailable):
                raise
            log.warning("progress refused: %s", exc.message, extra={"job_id": self.job.id})
            return True

    def preview(self, path: Path, step: int) -> bool:
        """PUTs the preview's bytes (a small file) with the lease token in a header."""
        response = self.api.call(
            "PUT", f"{self._path}/preview?step={int(step)}", content=path.read_bytes(),
            headers={LEASE_HEADER: self.lease_token, "Content-Type": PREVIEW_TYPE}, retry_s=2.0,
        )  # fmt: skip
        if response.status_code in (409, 404):
            return False
        if not response.is_success:  # advisory: a refused preview does not end the job
            log.warning("preview refused: HTTP %s", response.status_code)
        return True

    def upload(self, path: Path, name: str) -> None:
        """Asks the API where (``upload``), then PUTs the file there (in parts when the
        API answers parts: a large output on S3)."""
        size, sha256 = size_and_sha256(path)
        body = request(
            UploadBody, lease_token=self.lease_token, key=output_key(self.job, name), size=size,
            sha256=sha256,
        )  # fmt: skip
        response = self.api.call("POST", f"{self._path}/upload", body)
        if not response.is_success:
            # 409: the attempt lost the job (the heartbeat stops the loop's retries)
            raise StorageUnavailable(f"upload refused: HTTP {response.status_code}")
        target = parse(UploadTarget, response)
        parts: list[PartDone] = []
        if target.parts is not None and target.upload_id is not None:
            offset = 0
            for part in target.parts:
                etag = self.api.put_part(part.url, path, offset, part.size)
                parts.append(request(PartDone, number=part.number, etag=etag))
                offset += part.size
        elif target.url is not None:
            self.api.put(target.url, path, size, target.headers or {})
        else:
            raise ProtocolError("the API named no upload URL")
        self._uploaded, self._parts, self._upload_id = body, parts, target.upload_id

    def poster(self, path: Path) -> bool:
        """PUTs the poster's bytes, naming the upload it shows, with the lease token."""
        uploaded = self._uploaded
        if uploaded is None:
            raise VidqError("nothing was uploaded to make a poster of")
        response = self.api.call(
            "PUT", f"{self._path}/poster?key={quote(uploaded.key, safe='')}",
            content=path.read_bytes(),
            headers={LEASE_HEADER: self.lease_token, "Content-Type": POSTER_TYPE}, retry_s=2.0,
        )  # fmt: skip
        if response.status_code in (409, 404):
            return False
        if not response.is_success:  # advisory: the job completes without a poster
            log.warning("poster refused: HTTP %s", response.status_code)
            return False
        return True

    def complete(self, meta: dict[str, Any], ran: Ran = Ran()) -> bool:
        """Names the uploaded object with its size and sha256; the server checks them, and
        answers a retry of a complete that committed as a success."""
        uploaded = self._uploaded
        if uploaded is None:
            raise VidqError("nothing was uploaded to complete with")
        body = request(
            CompleteBody, lease_token=self.lease_token, key=uploaded.key, size=uploaded.size,
            sha256=uploaded.sha256, meta=meta, upload_id=self._upload_id, parts=self._parts,
            gpu_seconds=ran.seconds, device=ran.device,
        )  # fmt: skip
        return _ok(self.api.call("POST", f"{self._path}/complete", body))

    def fail(
        self, error: str, error_type: str, *, retry: bool, retry_after_s: float, ran: Ran = Ran()
    ) -> bool:
        body = request(
            FailBody.fitted, lease_token=self.lease_token, message=error, error_type=error_type,
            retry=retry, delay_s=retry_after_s, gpu_seconds=ran.seconds, device=ran.device,
        )  # fmt: skip
        return _ok(self.api.call("POST", f"{self._path}/fail", body))

    def release(self, ran: Ran = Ran()) -> bool:
        body = request(Ended, lease_token=self.lease_token, **_ran(ran))
        return _ok(self.api.call("POST", f"{self._path}/release", body))

    def finish_cancel(self, ran: Ran = Ran()) -> bool:
        body = request(Ended, lease_token=self.lease_token, **_ran(ran))
        return _ok(self.api.call("POST", f"{self._path}/cancelled", body))


def _ran(ran: Ran) -> dict[str, Any]:
    """What an attempt used, as the fields of an ``Ended`` body."""
    return {"gpu_seconds": ran.seconds, "device": ran.device}
