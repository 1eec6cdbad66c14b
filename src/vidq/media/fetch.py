"""SSRF-safe download of input URLs (a client's pre-signed S3 URL, say), on the event loop.

Where media is fetched and decoded: in the API, at submit. The API's submit route fetches
a request's URL inputs here, asynchronously on its event loop, *before* it takes a request
thread; the bytes are then checked and decoded (``media/inputs.py``) in a thread bounded by
the API's ``decode_concurrency`` limiter, stored as blobs, and the worker never sees an
input URL. (A request's LoRAs are the one exception: the API only checks their URLs,
``check_url``, and the worker fetches them when it runs the job, ``fetch_to``, under the
same policy: ``vidq.worker.loras``.) So a remote server, however slow, holds no request
thread: status polls, other users' submits, ``/health`` and ``/ready`` never wait on it.

The rules, each enforced on every request including each redirect hop:

- the address rules and pinned connection of ``media/outbound.py`` (shared with webhooks);
- https only; http only when the policy allows it (local testing);
- at most ``max_redirects`` hops, a cap on the bytes read (raw bytes: no content decoding,
  so no compression bomb past the cap);
- one wall-clock deadline, ``timeout_s``, for the whole fetch of a request's URLs: waiting
  for a fetch slot, resolving, connecting, the headers, every hop and the body. A server
  that sends one header line a second is cut off at the deadline like a silent one.

Concurrency (``Fetcher``): at most ``total`` requests fetch at once in one API process, at
most ``per_user`` of them one user's; the others wait (on the event loop, within their
deadline). A user who floods slow URLs fills only their own share. A request keeps its
slot while its inputs are decoded, so the fetched bytes held at once are bounded by
``total`` x the inputs of one request x ``max_bytes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ssl
from collections.abc import AsyncIterator, Callable, Mapping

import anyio
import httpx

from vidq.errors import InvalidInput, PayloadTooLarge, UrlUnreachable
from vidq.media.outbound import (
    IPNetwork,
    KeyedLimit,
    NetPolicy,
    PinnedTransport,
    Resolver,
    checked_target,
    system_resolver,
    tls_context,
)


@dataclasses.dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits and permissions of URL fetching."""

    max_bytes: int
    timeout_s: float = 20.0
    allow_http: bool = False  # local testing only
    allow_networks: tuple[IPNetwork, ...] = ()  # non-global networks allowed (testing only)
    max_redirects: int = 3
    resolver: Resolver = system_resolver

    @property
    def net(self) -> NetPolicy:
        """The address policy of these fetches."""
        return NetPolicy(self.allow_http, self.allow_networks, self.resolver)


async def fetch(
    field: str, url: str, policy: FetchPolicy, tls: ssl.SSLContext | None = None
) -> bytes:
    """The body of ``url`` under ``policy``, all of it within ``policy.timeout_s``;
    InvalidInput / PayloadTooLarge naming ``field``."""
    try:
        with anyio.fail_after(policy.timeout_s):
            return await _get(field, url, policy, tls)
    except TimeoutError:
        raise UrlUnreachable(field, f"URL fetch took over {policy.timeout_s:g} s") from None


async def _get(field: str, url: str, policy: FetchPolicy, tls: ssl.SSLContext | None) -> bytes:
    chunks: list[bytes] = []
    await _stream(field, url, policy, tls, chunks.append)
    return b"".join(chunks)


async def _stream(
    field: str,
    url: str,
    policy: FetchPolicy,
    tls: ssl.SSLContext | None,
    write: Callable[[bytes], object],
) -> int:
    """GET ``url`` under ``policy``, handing the body to ``write`` chunk by chunk (at most
    ``policy.max_bytes``); the bytes read. Errors name ``field``: ``UrlUnreachable`` when
    the server could not be reached, timed out or answered 5xx (another try may work),
    ``InvalidInput`` / ``PayloadTooLarge`` for everything else."""
    # httpx's own timeouts are per operation; the caller's deadline bounds the whole.
    timeout = httpx.Timeout(policy.timeout_s, connect=min(5.0, policy.timeout_s))
    try:
        async with (
            httpx.AsyncClient(
                transport=PinnedTransport(field, policy.net, tls),
                timeout=timeout,
                follow_redirects=True,
                max_redirects=policy.max_redirects,
                trust_env=False,  # never a proxy from the environment
            ) as client,
            client.stream("GET", url, headers={"accept-encoding": "identity"}) as response,
        ):
            if response.status_code >= 500:
                raise UrlUnreachable(field, f"URL answered HTTP {response.status_code}")
            if response.status_code != 200:
                raise InvalidInput(field, f"URL answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise PayloadTooLarge(f"{field}: over the limit of {policy.max_bytes} bytes")
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise PayloadTooLarge(f"{field}: over the limit of {policy.max_bytes} bytes")
                write(chunk)
            return size
    except httpx.TooManyRedirects as exc:
        raise InvalidInput(field, f"URL redirects more than {policy.max_redirects} times") from exc
    except httpx.TimeoutException as exc:
        raise UrlUnreachable(field, f"URL fetch took over {policy.timeout_s:g} s") from exc
    except httpx.InvalidURL as exc:
        raise InvalidInput(field, "not a valid URL") from exc
    except httpx.TransportError as exc:
        # The message of a transport error can hold the URL (and a signature): leave it out.
        raise UrlUnreachable(field, f"URL fetch failed ({type(exc).__name__})") from exc
    except httpx.HTTPError as exc:
        raise InvalidInput(field, f"URL fetch failed ({type(exc).__name__})") from exc


async def fetch_to(
    field: str,
    url: str,
    policy: FetchPolicy,
    write: Callable[[bytes], object],
    tls: ssl.SSLContext | None = None,
) -> int:
    """Stream the body of ``url`` to ``write`` under ``policy``, all of it within
    ``policy.timeout_s`` (a worker fetching a LoRA to a file); the bytes written. Errors
    as ``_stream``'s."""
    try:
        with anyio.fail_after(policy.timeout_s):
            return await _stream(field, url, policy, tls, write)
    except TimeoutError:
        raise UrlUnreachable(field, f"URL fetch took over {policy.timeout_s:g} s") from None


async def check_url(field: str, url: str, policy: FetchPolicy) -> None:
    """Whether a fetch of ``url`` under ``policy`` could start: an http(s) URL (http only
    when allowed) whose host resolves to addresses the rules allow, checked as a fetch
    checks them (``PinnedTransport``), without connecting; InvalidInput naming ``field``.
    For URLs that are fetched later, elsewhere (a LoRA, by the worker, which checks again
    on every hop)."""
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL as exc:
        raise InvalidInput(field, "not a valid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise InvalidInput(field, "must be an https URL")
    try:
        with anyio.fail_after(policy.timeout_s):
            await checked_target(field, parsed, policy.net)
    except TimeoutError:
        raise InvalidInput(
            field, f"URL host did not resolve within {policy.timeout_s:g} s"
        ) from None


class Fetcher:
    """Fetches requests' input URLs under one policy, ``total`` requests at a time, at
    most ``per_user`` of one user's (see the module docstring). One per API process; used
    on its event loop only."""

    def __init__(self, policy: FetchPolicy, *, total: int, per_user: int) -> None:
        self.policy = policy
        self.total = total
        self._tls = tls_context()
        self._users = KeyedLimit(per_user)
        self._all = anyio.Semaphore(total)

    @contextlib.asynccontextmanager
    async def fetching(self, urls: Mapping[str, str], user: str) -> AsyncIterator[dict[str, bytes]]:
        """The bytes of each ``{field: url}``, fetched in field order; the wait for a slot
        and every fetch within one ``policy.timeout_s``. The request keeps its slot until
        the block ends (where its inputs are decoded), so the fetched bytes held at once
        are bounded by ``total`` requests' inputs."""
        if not urls:
            yield {}
            return
        fetched: dict[str, bytes] = {}
        current = next(iter(urls))
        started = False
        limit = self.policy.timeout_s
        async with contextlib.AsyncExitStack() as slot:
            try:
                with anyio.fail_after(limit):
                    await slot.enter_async_context(self._users.hold(user))
                    await slot.enter_async_context(self._all)
                    started = True
                    for field, url in urls.items():
                        current = field
                        fetched[field] = await _get(field, url, self.policy, self._tls)
            except TimeoutError:
                if not started:
                    raise InvalidInput(
                        current,
                        f"URL fetch did not start within {limit:g} s: too many URL fetches "
                        "in progress; try again later",
                    ) from None
                raise InvalidInput(current, f"URL fetch took over {limit:g} s") from None
            yield fetched
