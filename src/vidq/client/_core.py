"""The SDK without its I/O: every decision of ``Client`` and ``AsyncClient``, written once.

Each public method of a client (``ClientApi``) and of a request handle (``HandleApi``) is a
generator here, ``_submit``, ``_wait``, ... It yields the steps it needs, ``Send`` (one HTTP
exchange) or ``Sleep`` (a pause), receives what each step produced, and returns the method's
result. ``operation`` makes the public method of it, and the object's ``_drive`` performs
the steps: with httpx.Client and time.sleep in ``_sync.py``, with httpx.AsyncClient and
asyncio.sleep in ``_async.py``. Request building, retries and their delays, status parsing,
error mapping, polling and result decoding therefore exist once, for both clients.
Only httpx and the standard library.
"""

from __future__ import annotations

import base64
import dataclasses
import inspect
import os
import random
import ssl
import time
import types
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Generator
from pathlib import Path
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, overload

import httpx

from vidq.client._files import write_atomically
from vidq.client.errors import (
    RequestCancelled,
    RequestFailed,
    TransportError,
    WaitTimeout,
    error_for,
)

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
BINARY_HEADER = "x-pipelet-output"
USER_AGENT = "vidq-client/0.1"

T = TypeVar("T")
P = ParamSpec("P")
HandleT = TypeVar("HandleT", bound="HandleApi[Any]")
ClientT = TypeVar("ClientT", bound="ClientApi[Any, Any, Any]")
HttpT = TypeVar("HttpT")  # httpx.Client or httpx.AsyncClient
TransportT = TypeVar("TransportT")  # httpx.BaseTransport or httpx.AsyncBaseTransport


# --- values -----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """A request's state as ``GET /requests/{id}`` reports it."""

    request_id: str
    model_id: str
    status: str  # IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED
    queue_position: int
    done: int  # progress steps done ...
    total: int  # ... of this many (0 until the engine reports)
    eta_seconds: float | None  # None: no estimate (no history, an engine without one)
    error: str | None
    error_type: str | None
    raw: dict[str, Any]
    # Why a queued request is passed over for now: "PAUSED" (an operator paused its
    # model's queue) or "HELD" (its token is at max_running); None otherwise.
    hold: str | None = None
    seed: int | None = None  # the seed it runs with (drawn at submit when not given)
    # What it cost once started: gpu_seconds, queue_seconds, attempts, device (docs/api.md)
    metrics: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @property
    def paused(self) -> bool:
        """Queued in a queue an operator paused: it starts once the queue is resumed."""
        return self.status == "IN_QUEUE" and self.hold == "PAUSED"

    @property
    def held(self) -> bool:
        """Queued behind the token's own running requests (its ``max_running``)."""
        return self.status == "IN_QUEUE" and self.hold == "HELD"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Status:
        progress = body.get("progress") or {}
        return cls(
            request_id=str(body["request_id"]),
            model_id=str(body.get("model_id", "")),
            status=str(body["status"]),
            queue_position=int(body.get("queue_position") or 0),
            done=int(progress.get("done") or 0),
            total=int(progress.get("total") or 0),
            eta_seconds=body.get("eta_seconds"),
            error=body.get("error"),
            error_type=body.get("error_type"),
            raw=body,
            hold=body.get("hold"),
            seed=body.get("seed"),
            metrics=body.get("metrics"),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's ``Retry-After`` wins when longer."""

    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        wait: float = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        wait *= random.uniform(0.75, 1.25)
        after = retry_after(response)
        if after is not None:
            wait = max(wait, min(after, self.max_backoff_s))
        return wait


def retry_after(response: httpx.Response | None) -> float | None:
    """The response's ``Retry-After`` in seconds (the delay form), or None."""
    after = "" if response is None else response.headers.get("retry-after", "").strip()
    return float(after) if after.isdigit() else None


# --- decisions --------------------------------------------------------------------------------
def retryable(
    exc: Exception | None,
    response: httpx.Response | None,
    *,
    replay_safe: bool,
    policy_max_wait: float = 10.0,
) -> bool:
    """Whether one failed try may be repeated. A request that may have reached the server
    (``replay_safe`` false: a submit without an idempotency key) is repeated only when it
    surely did not: the connection was never made, or the server answered 429."""
    if response is not None:
        if response.status_code == 429:
            # Over a limit that frees up later than a backoff waits (a daily quota): the
            # caller is told at once.
            after = retry_after(response)
            return after is None or after <= policy_max_wait
        return replay_safe and response.status_code in RETRY_STATUSES
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return replay_safe and isinstance(exc, httpx.TransportError)


def next_delay(
    policy: RetryPolicy, attempt: int, reply: httpx.Response | Exception, *, replay_safe: bool
) -> float | None:
    """After try number ``attempt`` (from 0) got ``reply``: the pause before the next try,
    or None when this reply is the answer (a success, a final error, or no tries left)."""
    if isinstance(reply, httpx.Response):
        response, error = reply, None
    else:
        response, error = None, reply
    failed = response is None or response.status_code in RETRY_STATUSES
    if not failed or attempt >= policy.max_retries:
        return None
    if not retryable(
        error, response, replay_safe=replay_safe, policy_max_wait=policy.max_backoff_s
    ):
        return None
    return policy.delay(attempt, response)


def raise_for(response: httpx.Response) -> None:
    """Raise the typed APIError of an error response."""
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = {"detail": response.text[:500] or response.reason_phrase}
    raise error_for(response.status_code, body, retry_after(response))


def raise_unfinished(status: Status) -> None:
    """RequestFailed / RequestCancelled for a request that ended without a result."""
    if status.status == "FAILED":
        raise RequestFailed(status.request_id, status.error or "unknown error", status.error_type)
    if status.status == "CANCELLED":
        raise RequestCancelled(status.request_id)


def new_idempotency_key() -> str:
    return f"vidq-{uuid.uuid4().hex}"


def submit_headers(binary_output: bool, idempotency_key: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if binary_output:
        headers[BINARY_HEADER] = "binary"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def client_settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and default headers: arguments first, then VIDQ_URL / VIDQ_TOKEN."""
    base = (url or os.environ.get("VIDQ_URL") or DEFAULT_URL).rstrip("/")
    token = token or os.environ.get("VIDQ_TOKEN")
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return base, headers


def decode_video(result: dict[str, Any]) -> bytes | str:
    """From a native result: the MP4 bytes (base64 form), or the URL to fetch them from
    (binary form)."""
    video = result.get("video") or {}
    value = video.get("data_uri") or video.get("url") or ""
    if value.startswith(("http://", "https://")):
        return str(value)
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    return base64.b64decode(value)


# --- the steps an operation asks its driver for -----------------------------------------------
@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """One HTTP exchange. The driver answers with the response, or with the
    ``httpx.TransportError`` that stopped it (never raised into the operation)."""

    method: str
    url: str  # a path under the API's base URL; with ``api`` false, a full download URL
    options: dict[str, Any]  # what httpx's ``request`` takes besides: json, params, headers
    api: bool = True  # False: a signed download URL, fetched without the client's credentials


@dataclasses.dataclass(frozen=True, slots=True)
class Sleep:
    """A pause of ``seconds``; the driver answers None."""

    seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class Done(Generic[T]):
    """The operation finished with ``value``."""

    value: T


Step = Send | Sleep
Reply = httpx.Response | httpx.TransportError | None
Op = Generator[Step, Reply, T]


def advance(op: Op[T], reply: Reply) -> Step | Done[T]:
    """Give an operation the reply to its last step (None to start it): its next step,
    or Done with its result. Its errors (the typed API errors) propagate."""
    try:
        return op.send(reply)
    except StopIteration as stop:
        return Done(stop.value)


# --- one method, two drivers ------------------------------------------------------------------
class Blocking(Protocol):
    """An object whose ``_drive`` returns an operation's result (``_sync.py``)."""

    def _drive(self, op: Op[T], /) -> T: ...


class Awaiting(Protocol):
    """An object whose ``_drive`` is a coroutine (``_async.py``)."""

    def _drive(self, op: Op[T], /) -> Awaitable[T]: ...


class operation(Generic[P, T]):  # lower case: used like ``property``
    """A public method made of an operation (``submit = operation(_submit)``).

    On an object whose ``_drive`` is a plain method it is a plain method returning the
    result; where ``_drive`` is a coroutine it is a coroutine method. Name, docstring and
    signature are the operation's.
    """

    def __init__(self, steps: Callable[Concatenate[Any, P], Op[T]]) -> None:
        self._steps = steps

        def blocking(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            return owner._drive(steps(owner, *args, **kwargs))

        async def awaiting(owner: Any, /, *args: Any, **kwargs: Any) -> Any:
            return await owner._drive(steps(owner, *args, **kwargs))

        self._blocking, self._awaiting = blocking, awaiting

    def __set_name__(self, owner: type[Any], name: str) -> None:
        signature = inspect.signature(self._steps)
        result = signature.return_annotation  # "Op[X]" (annotations are strings): show "X"
        if isinstance(result, str) and result.startswith("Op[") and result.endswith("]"):
            signature = signature.replace(return_annotation=result[3:-1])
        for method in (self._blocking, self._awaiting):
            method.__name__ = name
            method.__qualname__ = f"{owner.__qualname__}.{name}"
            method.__doc__ = self._steps.__doc__
            method.__module__ = owner.__module__
            setattr(method, "__signature__", signature)  # noqa: B010 (mypy knows no such field)

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Callable[..., Any]: ...
    @overload
    def __get__(self, obj: Blocking, owner: type[Any] | None = None) -> Callable[P, T]: ...
    @overload
    def __get__(
        self, obj: Awaiting, owner: type[Any] | None = None
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...
    def __get__(self, obj: Any, owner: type[Any] | None = None) -> Any:
        cls = type(obj) if owner is None else owner
        awaits = inspect.iscoroutinefunction(getattr(cls, "_drive", None))
        method = self._awaiting if awaits else self._blocking
        return method if obj is None else types.MethodType(method, obj)


# --- the API ----------------------------------------------------------------------------------
class ClientApi(Generic[HandleT, HttpT, TransportT]):
    """A vidq API client. ``url``/``token`` default to ``VIDQ_URL``/``VIDQ_TOKEN``.

    Reads and cancels are retried on 429/502/503/504 and connection errors with backoff;
    a submit is retried only under an ``Idempotency-Key`` (one is generated per submit
    unless ``idempotency_key`` is given or ``auto_idempotency`` is off).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        auto_idempotency: bool = True,
        verify: bool | str | ssl.SSLContext = True,
        transport: TransportT | None = None,
    ) -> None:
        self.url, headers = client_settings(url, token)
        if isinstance(verify, str):  # a CA bundle file
            verify = ssl.create_default_context(cafile=verify)
        self.retry = retry or RetryPolicy()
        self.auto_idempotency = auto_idempotency
        options = {"timeout": timeout, "verify": verify, "transport": transport}
        self._http: HttpT = self._connect(base_url=self.url, headers=headers, **options)
        self._downloads: HttpT = self._connect(**options)  # no credentials: signed URLs

    def _connect(self, **options: Any) -> HttpT:
        """An httpx client of the driver's kind with these options."""
        raise NotImplementedError

    def _handle(self, request_id: str, model_id: str) -> HandleT:
        """The driver's handle for a request."""
        raise NotImplementedError

    def _request(
        self, /, method: str, path: str, *, replay_safe: bool = True, **kwargs: Any
    ) -> Op[httpx.Response]:
        """One API call with the retry policy; raises the typed error of a 4xx/5xx."""
        attempt = 0
        while True:
            reply = yield Send(method, path, kwargs)
            assert reply is not None
            delay = next_delay(self.retry, attempt, reply, replay_safe=replay_safe)
            if delay is None:
                break
            yield Sleep(delay)
            attempt += 1
        if not isinstance(reply, httpx.Response):
            raise TransportError(f"cannot reach {self.url}: {type(reply).__name__}") from reply
        raise_for(reply)
        return reply

    def _submit(
        self,
        model_id: str,
        inputs: dict[str, Any],
        binary_output: bool = False,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
    ) -> Op[HandleT]:
        """Queue a request; returns its handle."""
        key = idempotency_key or (new_idempotency_key() if self.auto_idempotency else None)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = yield from self._request(
            "POST",
            f"/queue/{model_id}",
            json=inputs,
            params=params,
            headers=submit_headers(binary_output, key),
            replay_safe=key is not None,
        )
        return self._handle(str(response.json()["request_id"]), model_id)

    def _run(
        self,
        model_id: str,
        inputs: dict[str, Any],
        binary_output: bool = False,
        *,
        on_update: Callable[[Status], None] | None = None,
        timeout: float | None = None,
    ) -> Op[dict[str, Any]]:
        """Submit, wait, and return the result (``{"video": {"data_uri": ...}}``)."""
        handle = yield from self._submit(model_id, inputs, binary_output)
        yield from handle._wait(on_update=on_update, timeout=timeout)
        return (yield from handle._result())

    def _get_handle(self, request_id: str | int, model_id: str | None = None) -> Op[HandleT]:
        """A handle for an existing request; the model is looked up if not given."""
        rid = str(request_id)
        if model_id is None:
            model_id = (yield from self._request("GET", f"/requests/{rid}")).json()["model_id"]
        return self._handle(rid, str(model_id))

    def _requests(self, limit: int = 20, before: int | None = None) -> Op[dict[str, Any]]:
        """A page of your requests, newest first: ``{"requests": [...], "next_before"}``."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        body: dict[str, Any] = (yield from self._request("GET", "/requests", params=params)).json()
        return body

    def _usage(self, days: int = 7) -> Op[dict[str, Any]]:
        """What your requests used on each of the last ``days`` UTC days (``GET /usage``):
        ``{"days", "since", "usage": [{"day", "model_id", "jobs", "video_seconds",
        "gpu_seconds"}, ...], "total": {...}}``."""
        reply = yield from self._request("GET", "/usage", params={"days": days})
        body: dict[str, Any] = reply.json()
        return body

    def _models(self) -> Op[list[dict[str, Any]]]:
        """The models this server serves (``GET /models``)."""
        models: list[dict[str, Any]] = (yield from self._request("GET", "/models")).json()["models"]
        return models

    def _webhook_secret(self) -> Op[str]:
        """The secret that signs your webhooks."""
        return str((yield from self._request("GET", "/webhooks/secret")).json()["secret"])

    def _fetch(self, url: str) -> Op[bytes]:
        """GET a signed download URL (no credentials are sent with it)."""
        reply = yield Send("GET", url, {}, api=False)
        if not isinstance(reply, httpx.Response):
            raise TransportError(f"cannot download: {type(reply).__name__}") from reply
        raise_for(reply)
        return reply.content

    request = operation(_request)
    submit = operation(_submit)
    run = operation(_run)
    get_handle = operation(_get_handle)
    requests = operation(_requests)
    usage = operation(_usage)
    models = operation(_models)
    webhook_secret = operation(_webhook_secret)
    fetch = operation(_fetch)


class HandleApi(Generic[ClientT]):
    """One submitted request."""

    def __init__(self, client: ClientT, request_id: str, model_id: str) -> None:
        self.client = client
        self.request_id = request_id
        self.model_id = model_id

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(request_id={self.request_id!r}, model_id={self.model_id!r})"

    @property
    def _path(self) -> str:
        return f"/queue/{self.model_id}/requests/{self.request_id}"

    def _status(self) -> Op[Status]:
        """The current status, with queue position, progress and ETA."""
        response = yield from self.client._request("GET", f"/requests/{self.request_id}")
        return Status.from_json(response.json())

    def _wait(
        self,
        on_update: Callable[[Status], None] | None = None,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> Op[Status]:
        """Poll until the request is finished; ``on_update`` sees every poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            current = yield from self._status()
            if on_update is not None:
                on_update(current)
            if current.finished:
                return current
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"request {self.request_id} is still {current.status}")
            yield Sleep(poll_interval)

    def _result(self) -> Op[dict[str, Any]]:
        """The native result; RequestFailed / RequestCancelled if it did not complete."""
        raise_unfinished((yield from self._status()))
        body: dict[str, Any] = (yield from self.client._request("GET", self._path)).json()
        return body

    def _cancel(self, running: bool = False) -> Op[bool]:
        """Cancel while queued: True, it is CANCELLED. With ``running``, also stop it if
        it is running: False, the cancel was requested and the request ends CANCELLED
        within a heartbeat of its worker (or COMPLETED, if it finished first).
        ConflictError once it finished (or started, without ``running``)."""
        params = {"running": "true"} if running else None
        reply = yield from self.client._request("PUT", f"{self._path}/cancel", params=params)
        return reply.status_code == 204

    def _download(self, path: str | os.PathLike[str]) -> Op[Path]:
        """Write the finished video to ``path`` (atomically); returns the path."""
        video = decode_video((yield from self._result()))
        if isinstance(video, str):  # the binary form: a signed URL
            video = yield from self.client._fetch(video)
        return write_atomically(Path(path), video)

    status = operation(_status)
    wait = operation(_wait)
    result = operation(_result)
    cancel = operation(_cancel)
    download = operation(_download)
