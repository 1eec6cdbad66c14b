"""Webhooks: ``?fal_webhook=URL`` on submit (both dialects) gets one signed POST once the
request is finished (COMPLETED, FAILED or CANCELLED).

Delivery runs in the API, from a durable outbox kept in the object storage, so that it
never delays a worker's completion and survives restarts:

- at submit, before the 2xx, the API writes ``webhooks/<request id>.json`` (the target,
  the dialect, the public base URL, the attempts so far) and remembers the request;
- a dispatcher in every API process, on an event loop of its own (thread
  ``vidq-webhooks``), watches the requests it remembers and, every ``ADOPT_EVERY_S``,
  adopts outbox entries it does not know (left by a restart or by another replica); once
  the request is terminal it POSTs fal's body shape:
  ``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload", "error"}``;
- each delivery is one async POST with one deadline for the whole attempt
  (``webhook_timeout``: resolving, connecting, sending, the answer's headers; the answer's
  body is never read), through the SSRF policy the input fetcher uses
  (``media/outbound.py``): the address is checked again when connecting, and the
  connection goes to the address checked (no DNS rebinding);
- at most ``webhook_per_host`` deliveries are in flight to one receiver (host and port),
  ``webhook_per_user`` of one user's webhooks and ``webhook_concurrency`` in all; the
  others wait their turn on the dispatcher's loop, so a slow receiver delays only the
  webhooks sent to it, and its user's beyond their share;
- a non-2xx answer, a connection error or the deadline is retried with exponential
  backoff (``BACKOFF_S`` doubling, at most ``webhook_max_attempts`` deliveries); the
  attempt count is written back to the entry, so a restart resumes the schedule. The
  entry is deleted once delivered or given up.

Delivery is at-least-once: receivers should deduplicate by ``request_id``.

Signature (HMAC-SHA256, per-user secret from ``GET /webhooks/secret``)::

    X-Vidq-Webhook-Request-Id: <request id>
    X-Vidq-Webhook-Timestamp:  <unix seconds>
    X-Vidq-Webhook-Signature:  v1=<hex>
    hex = HMAC_SHA256(secret, f"{request_id}\\n{timestamp}\\n{sha256_hex(raw body)}")

The target URL is checked at submit and again before each delivery (``check_target``:
scheme, literal addresses, obviously internal names), and its resolved address when
connecting.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from vidq.api import jobs_service as svc
from vidq.api.context import AppContext
from vidq.errors import InvalidInput, NotFound, VidqError
from vidq.jobs import Job, JobState
from vidq.media.outbound import (
    LOOPBACK,
    KeyedLimit,
    NetPolicy,
    PinnedTransport,
    address_refusal,
    tls_context,
)

log = logging.getLogger(__name__)

FIELD = "fal_webhook"
OUTBOX = "webhooks/"
URL_MAX = 2048
BACKOFF_S = 2.0
BACKOFF_MAX_S = 600.0
ADOPT_EVERY_S = 60.0
TICK_S = 0.5
SIGNATURE_HEADER = "X-Vidq-Webhook-Signature"
TIMESTAMP_HEADER = "X-Vidq-Webhook-Timestamp"
REQUEST_ID_HEADER = "X-Vidq-Webhook-Request-Id"
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal")


# --- the target ----------------------------------------------------------------------------
def check_target(url: str, *, allow_loopback_http: bool = False) -> str:
    """The webhook URL if it is an allowed target, else ``InvalidInput('fal_webhook')``.

    Rules: ``https`` only; no credentials in the URL; a literal IP must pass the address
    rules shared with the input fetcher (``media/outbound.py``); names that are internal by
    their form (localhost, ``*.localhost``, ``*.local``, ``*.internal``) are refused. Other
    names are resolved at delivery, where every address is checked and the one checked is
    the one connected to. ``allow_loopback_http`` (tests only) admits ``http://`` and
    ``https://`` on 127.0.0.1, ::1 and localhost.
    """
    if len(url) > URL_MAX:
        raise InvalidInput(FIELD, f"URL is longer than {URL_MAX} characters")
    try:
        parts = urlsplit(url)
        _port = parts.port  # ValueError if out of range
    except ValueError as exc:
        raise InvalidInput(FIELD, f"not a valid URL: {exc}") from exc
    host = (parts.hostname or "").lower().rstrip(".")  # "localhost." is localhost
    if not host:
        raise InvalidInput(FIELD, "the URL has no host")
    if parts.username or parts.password:
        raise InvalidInput(FIELD, "credentials in the URL are not allowed")
    if allow_loopback_http and host in _LOOPBACK_NAMES and parts.scheme in ("http", "https"):
        return url
    if parts.scheme != "https":
        raise InvalidInput(FIELD, "only https:// webhook URLs are allowed")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host in _LOOPBACK_NAMES or host.endswith(_INTERNAL_SUFFIXES):
            raise InvalidInput(FIELD, f"host '{host}' is not a public address") from None
        return url
    why = address_refusal(host)
    if why is not None:
        raise InvalidInput(FIELD, f"host '{host}' is not allowed: {why}")
    return url


def receiver_of(url: str) -> str:
    """The receiver a URL delivers to, as the per-host share counts it: host and port."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{(parts.hostname or '').lower().rstrip('.')}:{port}"


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: NetPolicy,
    timeout_s: float,
    tls: ssl.SSLContext | None = None,
) -> int:
    """POST one delivery; the answer's status code. The whole attempt (resolving,
    connecting, sending, the answer's headers) within ``timeout_s``; the answer's body is
    not read. The resolved addresses are checked and the checked one is connected to.
    Raises ``InvalidInput`` (refused target), ``TimeoutError`` or ``httpx.HTTPError``."""
    with anyio.fail_after(timeout_s):
        async with (
            httpx.AsyncClient(
                transport=PinnedTransport(FIELD, policy, tls),
                timeout=timeout_s,
                follow_redirects=False,
                trust_env=False,  # never a proxy from the environment
            ) as client,
            client.stream("POST", url, content=body, headers=dict(headers)) as response,
        ):
            return response.status_code


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
        self._lock = threading.Lock()  # register() runs in request threads
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server_secret: bytes | None = None
        settings = ctx.settings
        self._per_user = KeyedLimit(settings.limits.webhook_per_user)
        self._per_host = KeyedLimit(settings.limits.webhook_per_host)
        self._slots = settings.limits.webhook_concurrency
        self._tls = tls_context()  # built once, here, off the dispatcher's loop

    @property
    def policy(self) -> NetPolicy:
        """Where deliveries may connect: the input fetcher's address rules; loopback too
        under the tests-only ``webhook_allow_loopback_http``."""
        allow = self.ctx.settings.limits.webhook_allow_loopback_http
        return NetPolicy(allow_http=allow, allow_networks=LOOPBACK if allow else ())

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
        self._thread = threading.Thread(
            target=anyio.run, args=(self._run,), name="vidq-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    async def _run(self) -> None:
        """The dispatcher's loop: adopt, hand due entries to delivery tasks, until stop."""
        everyone = anyio.Semaphore(self._slots)
        next_adopt = 0.0
        async with anyio.create_task_group() as tasks:
            while not self._stop.is_set():
                try:
                    if time.monotonic() >= next_adopt:
                        next_adopt = time.monotonic() + ADOPT_EVERY_S
                        await anyio.to_thread.run_sync(self._adopt)
                    await self._tick(tasks, everyone)
                except VidqError as exc:
                    log.warning("webhooks: %s", exc.message)
                await anyio.sleep(TICK_S)
            tasks.cancel_scope.cancel()

    def _adopt(self) -> None:
        for key in self.ctx.storage.keys(OUTBOX):
            try:
                entry = Entry(**json.loads(self.ctx.storage.get_bytes(key, 64 * 1024)))
            except (NotFound, ValueError, TypeError):
                continue
            with self._lock:
                self._pending.setdefault(entry.job_id, entry)

    async def _tick(self, tasks: anyio.abc.TaskGroup, everyone: anyio.Semaphore) -> None:
        now = time.time()
        with self._lock:
            due = [
                e
                for e in self._pending.values()
                if e.next_at <= now and e.job_id not in self._inflight
            ]
        for entry in due:
            job = await anyio.to_thread.run_sync(self.ctx.store.get, entry.job_id)
            if job is None:
                await anyio.to_thread.run_sync(self._forget, entry)
            elif job.state.terminal:
                with self._lock:
                    self._inflight.add(entry.job_id)
                tasks.start_soon(self._deliver, entry, job, everyone)
            else:
                entry.next_at = now + 1.0  # not finished yet: look again in a second

    async def _deliver(self, entry: Entry, job: Job, everyone: anyio.Semaphore) -> None:
        """One delivery attempt, then its bookkeeping (forget, or schedule a retry)."""
        host = urlsplit(entry.url).hostname
        extra = {"job_id": job.id, "webhook_host": host, "attempt": entry.attempts + 1}
        try:
            async with (
                self._per_user.hold(job.user),
                self._per_host.hold(receiver_of(entry.url)),
                everyone,
            ):
                ok = await self._attempt(entry, job, extra)
        except VidqError as exc:
            log.warning("webhook not sent: %s", exc.message, extra=extra)
            ok = False
            if isinstance(exc, InvalidInput):  # the target is not allowed: never will be
                entry.attempts = self.ctx.settings.limits.webhook_max_attempts
        except Exception:  # one delivery's bug must not stop the dispatcher
            log.exception("webhook delivery crashed", extra=extra)
            ok = False
        finally:
            with self._lock:
                self._inflight.discard(entry.job_id)
        await anyio.to_thread.run_sync(self._after, entry, ok, extra)

    async def _attempt(self, entry: Entry, job: Job, extra: dict[str, Any]) -> bool:
        settings = self.ctx.settings
        check_target(entry.url, allow_loopback_http=settings.limits.webhook_allow_loopback_http)
        body, headers = await anyio.to_thread.run_sync(self._request_of, entry, job)
        try:
            status = await post(
                entry.url, body, headers, self.policy, settings.limits.webhook_timeout, self._tls
            )
        except TimeoutError:
            log.warning(
                "webhook delivery took over %g s", settings.limits.webhook_timeout, extra=extra
            )
            return False
        except httpx.HTTPError as exc:
            log.warning("webhook delivery failed: %s", type(exc).__name__, extra=extra)
            return False
        return 200 <= status < 300

    def _request_of(self, entry: Entry, job: Job) -> tuple[bytes, dict[str, str]]:
        """The signed body and headers of a delivery (signed now, once it may be sent)."""
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
        return body, headers

    def _after(self, entry: Entry, ok: bool, extra: dict[str, Any]) -> None:
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

    def _forget(self, entry: Entry) -> None:
        with self._lock:
            self._pending.pop(entry.job_id, None)
        try:
            self.ctx.storage.delete(entry.key)
        except VidqError:
            pass
