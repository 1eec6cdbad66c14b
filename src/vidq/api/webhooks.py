"""Webhooks: ``?fal_webhook=URL`` on submit (both dialects) gets one signed POST once the
request is finished (COMPLETED, FAILED or CANCELLED).

Delivery runs in the API, from the job store, so that it never delays a worker's completion,
survives restarts and is shared by every API replica:

- the submit's INSERT registers the webhook with the job (``SubmitStore.enqueue``: the target,
  the dialect, the public base URL; state 'pending'), in one statement: a submit that
  fails leaves neither the job nor its webhook, one that succeeds has both;
- a dispatcher in every API process, on an event loop of its own (thread
  ``vidq-webhooks``), polls the store every ``POLL_S`` for due webhooks (pending, the job
  finished, not backing off), ``DUE_BATCH`` at a time by job id;
- once it holds the delivery's slots it leases the delivery in the store
  (``take_webhook``: one atomic update, so of two replicas only one delivers; a replica
  that dies mid-delivery leaves it due again when the lease ends) and POSTs fal's body
  shape: ``{"request_id", "gateway_request_id", "status": "OK"|"ERROR", "payload", "error"}``;
- each delivery is one async POST with one deadline for the whole attempt
  (``webhook_timeout``: resolving, connecting, sending, the answer's headers; the answer's
  body is never read), through the SSRF policy the input fetcher uses
  (``media/outbound.py``): the address is checked again when connecting, and the
  connection goes to the address checked (no DNS rebinding);
- at most ``webhook_per_host`` deliveries are in flight to one receiver (host and port),
  ``webhook_per_user`` of one user's webhooks and ``webhook_concurrency`` in all; the
  others wait their turn on the dispatcher's loop, so a slow receiver delays only the
  webhooks sent to it, and its user's beyond their share;
- the attempt's outcome is written back (``webhook_result``): delivered; or, after a
  non-2xx answer, a connection error or the deadline, due again after an exponential
  backoff (``webhook_retry_backoff_seconds`` doubling, on the database clock), until
  ``webhook_max_attempts`` deliveries have been tried and it is given up.

Delivery is once in the normal case, however many API replicas run; it is at-least-once
when an API process dies mid-delivery or a 2xx answer is lost: receivers should
deduplicate by ``request_id``.

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

import contextlib
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
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import httpx

from vidq.api.context import AppContext
from vidq.api.fal import answers as fal_answers
from vidq.api.native import answers as native_answers
from vidq.api.services.results import video_file
from vidq.errors import InvalidInput, VidqError
from vidq.jobs import Job, JobState, WebhookState
from vidq.media.outbound import (
    LOOPBACK,
    KeyedLimit,
    NetPolicy,
    PinnedTransport,
    address_refusal,
    tls_context,
)
from vidq.store.base import DueWebhook, WebhookDelivery, WebhookStore

log = logging.getLogger(__name__)

FIELD = "fal_webhook"
URL_MAX = 2048
BACKOFF_MAX_S = 600.0
POLL_S = 0.5  # how often each API process asks the store for due webhooks
DUE_BATCH = 256  # due webhooks read per poll
LEASE_MARGIN_S = 30.0  # a delivery's lease: its deadline plus this (signing, recording)
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
        if dialect == "native":
            url = video_file(ctx, job, base)["url"]
            result = native_answers.result({"data_uri": url, "data_url": url}, job)
        else:
            result = fal_answers.result_body(ctx, job, base)
        return {**envelope, "status": "OK", "payload": result, "error": None}
    if job.state is JobState.CANCELLED:
        error, error_type = f"Request {rid} was cancelled.", "request_cancelled"
    else:
        error, error_type = job.error or "unknown error", job.error_type or "internal_error"
    payload = {"detail": error, "error_type": error_type}
    return {**envelope, "status": "ERROR", "payload": payload, "error": error}


# --- the dispatcher -------------------------------------------------------------------------
class WebhookDispatcher:
    """Delivers the job store's due webhooks (see module docstring). One per API process.
    ``outbox`` is the job store as the dispatcher uses it; ``ctx`` gives the settings and
    what a delivery's body needs (the result's URL)."""

    def __init__(self, ctx: AppContext, outbox: WebhookStore) -> None:
        self.ctx = ctx
        self.outbox = outbox
        self._inflight: set[int] = set()  # job ids with a delivery task here (loop only)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake: anyio.Event | None = None  # set by stop(): the loop ends without its sleep
        self._loop: anyio.lowlevel.EventLoopToken | None = None
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
            from vidq.blobs import load_secret

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

    def start(self) -> None:
        self._thread = threading.Thread(
            target=anyio.run, args=(self._run,), name="vidq-webhooks", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """End the loop now (not at its next poll, up to ``POLL_S`` later) and wait for it."""
        self._stop.set()
        if self._loop is not None and self._wake is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                anyio.from_thread.run_sync(self._wake.set, token=self._loop)
        if self._thread is not None:
            self._thread.join(5)

    async def _run(self) -> None:
        """The dispatcher's loop: poll the store, start a delivery per due webhook."""
        everyone = anyio.Semaphore(self._slots)
        after = 0  # the poll's cursor: job ids above it come next
        self._wake, self._loop = anyio.Event(), anyio.lowlevel.current_token()
        async with anyio.create_task_group() as tasks:
            while not self._stop.is_set():
                try:
                    after = await self._poll(tasks, everyone, after)
                except VidqError as exc:
                    log.warning("webhooks: %s", exc.message)
                with anyio.move_on_after(POLL_S):
                    await self._wake.wait()
            tasks.cancel_scope.cancel()

    async def _poll(self, tasks: anyio.abc.TaskGroup, everyone: anyio.Semaphore, after: int) -> int:
        """Start deliveries for one page of due webhooks; the next poll's cursor (0 once
        the page was the last, so the next poll starts over)."""
        due = await anyio.to_thread.run_sync(self.outbox.due_webhooks, DUE_BATCH, after)
        for hook in due:
            if hook.job_id not in self._inflight:  # still waiting for its slots here
                self._inflight.add(hook.job_id)
                tasks.start_soon(self._deliver, hook, everyone)
        return due[-1].job_id if len(due) == DUE_BATCH else 0

    async def _deliver(self, hook: DueWebhook, everyone: anyio.Semaphore) -> None:
        """Wait for the delivery's slots, then lease, attempt and record it."""
        extra: dict[str, Any] = {"job_id": hook.job_id, "webhook_host": urlsplit(hook.url).hostname}
        try:
            async with (
                self._per_user.hold(hook.user),
                self._per_host.hold(receiver_of(hook.url)),
                everyone,
            ):
                await self._attempt(hook, extra)
        except VidqError as exc:
            log.warning("webhooks: %s", exc.message, extra=extra)
        except Exception:  # one delivery's bug must not stop the dispatcher
            log.exception("webhook delivery crashed", extra=extra)
        finally:
            self._inflight.discard(hook.job_id)

    async def _attempt(self, hook: DueWebhook, extra: dict[str, Any]) -> None:
        """One attempt under a lease, its outcome written back whatever happens (a
        shutdown that cancels it counts it as a failed attempt, due again later)."""
        limits = self.ctx.settings.limits
        lease_s = limits.webhook_timeout + LEASE_MARGIN_S
        taken = await anyio.to_thread.run_sync(self.outbox.take_webhook, hook.job_id, lease_s)
        if taken is None:
            return  # delivered, or being delivered, by another API process
        extra["attempt"] = taken.attempts + 1
        outcome = WebhookState.PENDING
        try:
            outcome = await self._send(taken, extra)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._record, taken, outcome, extra)

    async def _send(self, taken: WebhookDelivery, extra: dict[str, Any]) -> WebhookState:
        """POST the delivery: DELIVERED on a 2xx, GIVEN_UP for a target that is not
        allowed (it never will be), else PENDING (to be tried again)."""
        settings = self.ctx.settings
        job, url = taken.job, taken.job.webhook_url or ""
        try:
            check_target(url, allow_loopback_http=settings.limits.webhook_allow_loopback_http)
            body, headers = await anyio.to_thread.run_sync(self._request_of, job)
            status = await post(
                url, body, headers, self.policy, settings.limits.webhook_timeout, self._tls
            )
        except InvalidInput as exc:
            log.warning("webhook target refused: %s", exc.message, extra=extra)
            return WebhookState.GIVEN_UP
        except VidqError as exc:
            log.warning("webhook not sent: %s", exc.message, extra=extra)
            return WebhookState.PENDING
        except TimeoutError:
            log.warning(
                "webhook delivery took over %g s", settings.limits.webhook_timeout, extra=extra
            )
            return WebhookState.PENDING
        except httpx.HTTPError as exc:
            log.warning("webhook delivery failed: %s", type(exc).__name__, extra=extra)
            return WebhookState.PENDING
        return WebhookState.DELIVERED if 200 <= status < 300 else WebhookState.PENDING

    def _request_of(self, job: Job) -> tuple[bytes, dict[str, str]]:
        """The signed body and headers of a delivery (signed now, once it may be sent)."""
        dialect, base = job.webhook_dialect or "fal", job.webhook_base or ""
        body = json.dumps(body_of(self.ctx, job, dialect, base)).encode()
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

    def _record(self, taken: WebhookDelivery, outcome: WebhookState, extra: dict[str, Any]) -> None:
        """Write an attempt's outcome back: delivered, given up, or due after a backoff."""
        attempts = taken.attempts + 1
        if (
            outcome is WebhookState.PENDING
            and attempts >= self.ctx.settings.limits.webhook_max_attempts
        ):
            outcome = WebhookState.GIVEN_UP
            log.warning("webhook given up after %d attempts", attempts, extra=extra)
        elif outcome is WebhookState.DELIVERED:
            log.info("webhook delivered", extra=extra)
        first = self.ctx.settings.limits.webhook_retry_backoff_seconds
        backoff = min(BACKOFF_MAX_S, first * 2 ** (attempts - 1))
        self.outbox.webhook_result(taken.job.id, taken.attempts, outcome, backoff)
