"""A remote worker's store and storage: the worker protocol (``/worker/v1``) over HTTPS.

``RemoteStore`` (a ``WorkerStore``) and ``RemoteBlobs`` (a ``WorkerBlobs``) let the one
worker loop (``worker/runner.py``) run on a machine that reaches only the API: no
database URL, no storage credentials, no data dir. What needs the server's view is done
by the server (``api/worker_api.py``): sweeping other attempts' uploads, deciding a
retried complete, deleting a refused upload, reaping expired leases (the API's reaper).

Calls are retried through API outages (connection errors, 502/503/504) with exponential
backoff and jitter, within a budget per call; past it they raise ``ServiceUnavailable``,
which the loop already waits out (the lease decides whether the job is still ours).
The worker token travels in the Authorization header only; signed URLs are never logged.
Both adapters are thread-safe (several loops of one process may share them).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from vidq.errors import NotFound, ServiceUnavailable, StorageUnavailable, VidqError
from vidq.jobs import Job, JobState
from vidq.storage.outputs import size_and_sha256
from vidq.store.base import Lease, ReapResult

log = logging.getLogger(__name__)

PREFIX = "/worker/v1"
# How long an idle worker's claim waits on the server (which allows up to 30 s): a job is
# answered at once either way; a shorter wait is a quicker exit on SIGTERM when idle.
CLAIM_WAIT_S = 5.0
_RETRY_STATUS = frozenset({502, 503, 504})
_LOOPBACK_NAMES = frozenset({"localhost"})


class TokenRefused(VidqError):
    """The API refused the worker token (revoked, unknown, or not a worker token)."""


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
        )
        # Signed URLs (inputs, outputs) carry their own credential: never the token.
        self._urls = httpx.Client(
            timeout=httpx.Timeout(300.0, connect=10.0), verify=verify, follow_redirects=False
        )

    def close(self) -> None:
        self._api.close()
        self._urls.close()

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        retry_s: float | None = None,
        read_s: float | None = None,
    ) -> httpx.Response:
        """One call of the protocol, retried through outages within ``retry_s``; the
        answer for any other status (the caller reads 2xx, 404 and 409). 401/403:
        ``TokenRefused``."""
        budget = self.retry_s if retry_s is None else retry_s
        deadline = time.monotonic() + budget
        timeout = httpx.Timeout(read_s or self._timeout_s, connect=10.0)
        delay = 0.25
        while True:
            try:
                response = self._api.request(method, PREFIX + path, json=body, timeout=timeout)
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
    except ValueError:
        return response.text[:300]


def _ok(response: httpx.Response) -> bool:
    """2xx: done; 409 (or 404: the job is gone): this attempt lost the job."""
    if response.status_code in (404, 409):
        return False
    if response.is_success:
        return True
    raise VidqError(f"the API refused the call: HTTP {response.status_code}: {_detail(response)}")


class RemoteStore:
    """The job store of a remote worker (``WorkerStore``) over ``/worker/v1``."""

    def __init__(
        self, api: RemoteAPI, *, wait_s: float = CLAIM_WAIT_S, lease_s: float = 30.0
    ) -> None:
        self.api = api
        self.wait_s = wait_s  # a claim's long-poll (0: answer at once; burst workers)
        self.lease_s = lease_s  # the server's lease: heartbeats retry within a third of it
        self._lock = threading.Lock()
        self._engines: dict[str, dict[str, str]] = {}  # worker -> pool -> engine
        self._downloads: dict[str, tuple[int, str]] = {}  # input key -> (job id, signed URL)
        self._leases: dict[int, str] = {}  # job id -> lease token (for uploads)
        self._uploads: dict[str, dict[str, Any]] = {}  # uploaded key -> what complete names
        self._queued: dict[str, int] = {}
        self._waited = threading.local()

    def close(self) -> None:
        self.api.close()

    # -- claiming --------------------------------------------------------------------
    def register_worker(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str] | None = None
    ) -> None:
        """Kept for the next claim, which registers the worker on the server."""
        with self._lock:
            self._engines[worker] = dict(engines or {})

    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Job | None:
        """Long-polls ``wait_s``; the lease length is the server's."""
        with self._lock:
            engines = self._engines.get(worker, {})
        body = {"worker": worker, "pools": list(pools), "engines": engines, "wait_s": self.wait_s}
        response = self.api.call("POST", "/claim", body, read_s=self.wait_s + 30.0)
        if not response.is_success:
            raise VidqError(f"claim refused: HTTP {response.status_code}: {_detail(response)}")
        answer = response.json()
        self._waited.value = self.wait_s > 0
        if answer.get("job") is None:
            with self._lock:
                self._queued = {str(k): int(v) for k, v in answer.get("queued", {}).items()}
            return None
        return self._job(answer["job"], answer.get("downloads", {}))

    def _job(self, data: dict[str, Any], downloads: dict[str, str]) -> Job:
        job = Job(
            id=int(data["id"]), user="", model_id=str(data["model_id"]), pool=str(data["pool"]),
            tier=int(data["tier"]), priority=int(data.get("priority", 0)),
            state=JobState.RUNNING, inputs=dict(data["inputs"]), attempt=int(data["attempt"]),
            max_attempts=int(data["max_attempts"]), lease_token=str(data["lease_token"]),
            lease_until=data.get("lease_expires_at"),
        )  # fmt: skip
        blobs = dict(job.inputs.get("_blobs", {}))
        with self._lock:
            self._leases[job.id] = job.lease_token or ""
            for field, url in downloads.items():
                if field in blobs:
                    self._downloads[str(blobs[field])] = (job.id, str(url))
        return job

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """The claim already waited on the server; a claim that did not (burst) waits
        here, so an idle burst worker does not spin on the API."""
        if not getattr(self._waited, "value", False):
            time.sleep(timeout)

    def queue_depths(self) -> dict[str, int]:
        """As the last empty claim answered (its pools only)."""
        with self._lock:
            return dict(self._queued)

    def reap(self) -> ReapResult:
        """Nothing: the API's reaper turns expired leases over."""
        return ReapResult(retried=[], failed=[])

    # -- the claimed job (fenced by its lease token) ----------------------------------
    def heartbeat(self, job_id: int, token: str, lease_s: float) -> Lease:
        response = self.api.call(
            "POST", f"/jobs/{job_id}/heartbeat", {"lease_token": token},
            retry_s=max(1.0, self.lease_s / 3),
        )  # fmt: skip
        if not _ok(response):
            self._forget(job_id)
            return Lease.LOST
        return Lease(response.json().get("lease", "held"))

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        body = {"lease_token": token, "done": done, "total": total}
        try:
            return _ok(self.api.call("POST", f"/jobs/{job_id}/progress", body, retry_s=2.0))
        except VidqError as exc:  # advisory: the heartbeat decides about the lease
            if isinstance(exc, ServiceUnavailable):
                raise
            log.warning("progress refused: %s", exc.message, extra={"job_id": job_id})
            return True

    def complete(self, job_id: int, token: str, result_key: str, meta: dict[str, Any]) -> bool:
        """Names the uploaded object with its size and sha256; the server checks them, and
        answers a retry of a complete that committed as a success."""
        with self._lock:
            upload = self._uploads.get(result_key, {"size": 0, "sha256": ""})
        body = {"lease_token": token, "key": result_key, **upload, "meta": meta}
        done = _ok(self.api.call("POST", f"/jobs/{job_id}/complete", body))
        if done:
            self._forget(job_id, result_key)
        return done

    def finish_cancel(self, job_id: int, token: str) -> bool:
        done = _ok(self.api.call("POST", f"/jobs/{job_id}/cancelled", {"lease_token": token}))
        self._forget(job_id)
        return done

    def fail(
        self,
        job_id: int,
        token: str,
        error: str,
        error_type: str,
        retry: bool,
        retry_after_s: float = 0.0,
    ) -> bool:
        body = {
            "lease_token": token, "message": error[:4000], "error_type": error_type[:100],
            "retry": retry, "delay_s": min(retry_after_s, 3600.0),
        }  # fmt: skip
        done = _ok(self.api.call("POST", f"/jobs/{job_id}/fail", body))
        self._forget(job_id)
        return done

    def release(self, job_id: int, token: str) -> bool:
        done = _ok(self.api.call("POST", f"/jobs/{job_id}/release", {"lease_token": token}))
        self._forget(job_id)
        return done

    def get(self, job_id: int, user: str | None = None) -> Job | None:
        """None: a remote worker reads no job; the server itself answers a retried
        complete (success if it had committed)."""
        return None

    # -- shared with RemoteBlobs ------------------------------------------------------
    def download_url(self, key: str) -> str:
        with self._lock:
            found = self._downloads.get(key)
        if found is None:
            raise NotFound("No download URL for this input.")
        return found[1]

    def lease_of(self, job_id: int) -> str:
        with self._lock:
            token = self._leases.get(job_id)
        if token is None:
            raise StorageUnavailable("no claimed job for this upload")
        return token

    def uploaded(self, key: str, upload: dict[str, Any]) -> None:
        with self._lock:
            self._uploads[key] = upload

    def _forget(self, job_id: int, key: str | None = None) -> None:
        with self._lock:
            token = self._leases.pop(job_id, None)
            if key is not None:
                self._uploads.pop(key, None)
            marker = f"/{job_id}_0_"
            for k in [k for k in self._uploads if marker in k]:
                del self._uploads[k]
            if token is not None:  # the job's inputs: no longer needed
                self._downloads = {k: v for k, v in self._downloads.items() if v[0] != job_id}


class RemoteBlobs:
    """The storage of a remote worker (``WorkerBlobs``): signed URLs from the API."""

    def __init__(self, store: RemoteStore) -> None:
        self.store = store

    def download(self, key: str, path: Path) -> None:
        self.store.api.fetch(self.store.download_url(key), path)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Asks the API where (``upload``), then PUTs the file there."""
        job_id = _job_of(key)
        token = self.store.lease_of(job_id)
        size, sha256 = size_and_sha256(path)
        body = {"lease_token": token, "key": key, "size": size, "sha256": sha256}
        response = self.store.api.call("POST", f"/jobs/{job_id}/upload", body)
        if not response.is_success:
            # 409: the attempt lost the job (the heartbeat stops the loop's retries)
            raise StorageUnavailable(f"upload refused: HTTP {response.status_code}")
        target = response.json()
        upload: dict[str, Any] = {"size": size, "sha256": sha256}
        if "parts" in target:  # a large output on S3: presigned part URLs
            offset, done = 0, []
            for part in target["parts"]:
                etag = self.store.api.put_part(str(part["url"]), path, offset, int(part["size"]))
                done.append({"number": int(part["number"]), "etag": etag})
                offset += int(part["size"])
            upload.update(upload_id=str(target["upload_id"]), parts=done)
        else:
            self.store.api.put(str(target["url"]), path, size, dict(target.get("headers", {})))
        self.store.uploaded(key, upload)

    def keys(self, prefix: str) -> list[str]:
        """Empty: the server sweeps other attempts' uploads (at claim and complete)."""
        return []

    def delete(self, key: str) -> None:
        """Nothing: the server deletes an upload whose complete it refuses, and the next
        attempt's claim sweeps the uploads of attempts that never completed."""


def _job_of(key: str) -> int:
    """The job id of an output key ``outputs/<tier>/<id>_0_...``."""
    name = key.rsplit("/", 1)[-1]
    head = name.split("_", 1)[0]
    if not head.isdigit():
        raise StorageUnavailable(f"not an output key: {key[:200]}")
    return int(head)
