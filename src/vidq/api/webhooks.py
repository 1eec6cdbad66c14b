"""Webhooks: ``?fal_webhook=URL`` on submit (both dialects) gets one signed POST once the
request is finished (COMPLETED, FAILED or CANCELLED).

Delivery runs in the API, from a durable outbox kept in the object storage, so that it
never delays a worker's completion and survives restarts:

- at submit, before the 2xx, the API writes ``webhooks/<request id>.json`` (the target,
  the dialect, the public base URL, the attempts so far) and remembers the request;
- a dispatcher thread in every API process watches the requests it remembers and, every
  ``ADOPT_EVERY_S``, adopts outbox entries it does not know (left by a restart or by
  another replica); once the request is terminal it POSTs fal's body shape:
  ``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload", "error"}``;
- a non-2xx answer or a connection error is retried with exponential backoff
  (``BACKOFF_S`` doubling, at most ``webhook_max_attempts`` deliveries); the attempt count
  is written back to the entry, so a restart resumes the schedule. The entry is deleted
  once delivered or given up.

Delivery is at-least-once: receivers should deduplicate by ``request_id``.

Signature (HMAC-SHA256, per-user secret from ``GET /webhooks/secret``)::

    X-Vidq-Webhook-Request-Id: <request id>
    X-Vidq-Webhook-Timestamp:  <unix seconds>
    X-Vidq-Webhook-Signature:  v1=<hex>
    hex = HMAC_SHA256(secret, f"{request_id}\\n{timestamp}\\n{sha256_hex(raw body)}")

The target URL is checked at submit and again before each delivery (``check_target``).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from vidq.api import jobs_service as svc
from vidq.api.context import AppContext
from vidq.errors import InvalidInput, NotFound, VidqError
from vidq.jobs import Job, JobState

log = logging.getLogger(__name__)

OUTBOX = "webhooks/"
URL_MAX = 2048
BACKOFF_S = 2.0
BACKOFF_MAX_S = 600.0
TIMEOUT_S = 10.0
ADOPT_EVERY_S = 60.0
TICK_S = 0.5
SIGNATURE_HEADER = "X-Vidq-Webhook-Signature"
TIMESTAMP_HEADER = "X-Vidq-Webhook-Timestamp"
REQUEST_ID_HEADER = "X-Vidq-Webhook-Request-Id"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


# --- the target check (one function, to swap for a shared SSRF-safe fetcher) -------------
def check_target(url: str, *, allow_loopback_http: bool = False, resolve: bool = False) -> str:
    """The webhook URL if it is an allowed target, else ``InvalidInput('fal_webhook')``.

    Rules: ``https`` only; a host name or a public IP; no credentials in the URL. With
    ``resolve`` the name is looked up and every address must be public (not loopback,
    private, link-local, multicast, reserved or unspecified). ``allow_loopback_http``
    (tests only) admits ``http://`` and ``https://`` on 127.0.0.1, ::1 and localhost.
    """
    field = "fal_webhook"
    if len(url) > URL_MAX:
        raise InvalidInput(field, f"URL is longer than {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInput(field, f"not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower().rstrip(".")  # "localhost." is localhost
    if not host:
        raise InvalidInput(field, "the URL has no host")
    if parts.username or parts.password:
        raise InvalidInput(field, "credentials in the URL are not allowed")
    if allow_loopback_http and host in _LOOPBACK_NAMES and parts.scheme in ("http", "https"):
        return url
    if parts.scheme != "https":
        raise InvalidInput(field, "only https:// webhook URLs are allowed")
    for address in _addresses(host, port, resolve=resolve):
        if not _public(address):
            raise InvalidInput(field, f"host '{host}' is not a public address")
    return url


def _addresses(host: str, port: int | None, *, resolve: bool) -> list[str]:
    """The IPs a host stands for: itself if literal, else (with ``resolve``) its DNS answers."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    if host in _LOOPBACK_NAMES or host.endswith((".localhost", ".local", ".internal")):
        raise InvalidInput("fal_webhook", f"host '{host}' is not a public address")
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, port or 443, proto=socket.IPPROTO_TCP)
    except OSError as exc:
        raise InvalidInput("fal_webhook", f"cannot resolve host '{host}'") from exc
    return [str(info[4][0]) for info in infos]


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


# --- signatures ----------------------------------------------------------------------------
def user_secret(server_secret: bytes, user: str) -> str:
    """A user's webhook signing secret, derived from the server secret."""
    digest = hmac.new(server_secret, b"vidq-webhook\0" + user.encode(), hashlib.sha256)
    return "whsec_" + digest.hexdigest()


def signature(secret: str, request_id: str, timestamp: int, body: bytes) -> str:
    """The ``X-Vidq-Webhook-Signature`` value of one delivery."""
    message = f"{request_id}\n{timestamp}\n{hashlib.sha256(body).hexdigest()}".encode()
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


# --- bodies ----------------------------------------------------------------------------------
def body_of(ctx: AppContext, job: Job, dialect: str, base: str) -> dict[str, Any]:
    """fal's webhook body for a finished job."""
    rid = str(job.id)
    envelope: dict[str, Any] = {"request_id": rid, "gateway_request_id": rid}
    if job.state is JobState.COMPLETED:
        video = svc.video_file(ctx, job, base)
        if dialect == "native":
            video = {"data_uri": video["url"], "data_url": video["url"]}
        return {**envelope, "status": "OK", "payload": {"video": video}, "error": None}
    if job.state is JobState.CANCELLED:
        error, error_type = f"Request {rid} was cancelled.", "request_cancelled"
    else:
        error, error_type = job.error or "unknown error", job.error_type or "internal_error"
    payload = {"detail": error, "error_type": error_type}
    return {**envelope, "status": "ERROR", "payload": payload, "error": error}


# --- the outbox and its dispatcher -------------------------------------------------------------
@dataclasses.dataclass
class Entry:
    """One pending webhook, as stored in the outbox."""

    job_id: int
    url: str
    dialect: str  # "native" or "fal"
    base: str  # the API's public base URL at submit time (for signed URLs)
    attempts: int = 0
    next_at: float = 0.0  # wall clock of the next delivery try

    @property
    def key(self) -> str:
        return f"{OUTBOX}{self.job_id}.json"

    def dump(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()


class WebhookDispatcher:
    """Delivers the outbox (see module docstring). One per API process."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self._pending: dict[int, Entry] = {}
        self._inflight: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._server_secret: bytes | None = None

    def secret_for(self, user: str) -> str:
        if self._server_secret is None:
            from vidq.storage import load_secret

            settings = self.ctx.settings
            key = settings.storage.secret_key
            secret = key.get_secret_value() if key else None
            self._server_secret = load_secret(settings.data_dir, secret)
        return user_secret(self._server_secret, user)

    def check(self, url: str | None) -> str | None:
        """Submit-time check of a ``fal_webhook`` value (None if absent)."""
        if url is None:
            return None
        allow = self.ctx.settings.limits.webhook_allow_loopback_http
        return check_target(url.strip(), allow_loopback_http=allow)

    def register(self, job: Job, dialect: str, base: str) -> None:
        """Write the outbox entry of a submitted job (before the API answers 2xx)."""
        if not job.webhook_url:
            return
        entry = Entry(job.id, job.webhook_url, dialect, base)
        self.ctx.storage.put_bytes(entry.key, entry.dump(), "application/json")
        with self._lock:
            self._pending.setdefault(job.id, entry)

    def start(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="vidq-webhook")
        self._thread = threading.Thread(target=self._run, name="vidq-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_adopt = 0.0
        while not self._stop.wait(TICK_S):
            try:
                if time.monotonic() >= next_adopt:
                    next_adopt = time.monotonic() + ADOPT_EVERY_S
                    self._adopt()
                self._tick()
            except VidqError as exc:
                log.warning("webhooks: %s", exc.message)

    def _adopt(self) -> None:
        for key in self.ctx.storage.keys(OUTBOX):
            try:
                entry = Entry(**json.loads(self.ctx.storage.get_bytes(key, 64 * 1024)))
            except (NotFound, ValueError, TypeError):
                continue
            with self._lock:
                self._pending.setdefault(entry.job_id, entry)

    def _tick(self) -> None:
        now = time.time()
        with self._lock:
            due = [
                e
                for e in self._pending.values()
                if e.next_at <= now and e.job_id not in self._inflight
            ]
        for entry in due:
            job = self.ctx.store.get(entry.job_id)
            if job is None:
                self._forget(entry)
            elif job.state.terminal:
                assert self._pool is not None
                with self._lock:
                    self._inflight.add(entry.job_id)
                self._pool.submit(self._deliver, entry, job)
            else:
                entry.next_at = now + 1.0  # not finished yet: look again in a second

    def _deliver(self, entry: Entry, job: Job) -> None:
        host = urlsplit(entry.url).hostname
        extra = {"job_id": job.id, "webhook_host": host, "attempt": entry.attempts + 1}
        try:
            ok = self._post(entry, job)
        except VidqError as exc:
            log.warning("webhook not sent: %s", exc.message, extra=extra)
            ok = False
            if isinstance(exc, InvalidInput):  # the target is not allowed: never will be
                entry.attempts = self.ctx.settings.limits.webhook_max_attempts
        finally:
            with self._lock:
                self._inflight.discard(entry.job_id)
        if ok:
            log.info("webhook delivered", extra=extra)
            self._forget(entry)
            return
        entry.attempts += 1
        if entry.attempts >= self.ctx.settings.limits.webhook_max_attempts:
            log.warning("webhook given up after %d attempts", entry.attempts, extra=extra)
            self._forget(entry)
            return
        entry.next_at = time.time() + min(BACKOFF_MAX_S, BACKOFF_S * 2 ** (entry.attempts - 1))
        try:
            self.ctx.storage.put_bytes(entry.key, entry.dump(), "application/json")
        except VidqError:
            pass  # the in-memory schedule goes on; a restart retries from the old count

    def _post(self, entry: Entry, job: Job) -> bool:
        allow = self.ctx.settings.limits.webhook_allow_loopback_http
        check_target(entry.url, allow_loopback_http=allow, resolve=True)
        body = json.dumps(body_of(self.ctx, job, entry.dialect, entry.base)).encode()
        timestamp = int(time.time())
        rid = str(job.id)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "vidq-webhook/1",
            REQUEST_ID_HEADER: rid,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature(self.secret_for(job.user), rid, timestamp, body),
        }
        try:
            with httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, trust_env=False) as c:
                response = c.post(entry.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            log.warning(
                "webhook delivery failed: %s",
                type(exc).__name__,
                extra={"job_id": job.id, "webhook_host": urlsplit(entry.url).hostname},
            )
            return False
        return 200 <= response.status_code < 300

    def _forget(self, entry: Entry) -> None:
        with self._lock:
            self._pending.pop(entry.job_id, None)
        try:
            self.ctx.storage.delete(entry.key)
        except VidqError:
            pass
