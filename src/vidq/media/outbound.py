"""Outbound HTTP to addresses a user chose: the one SSRF policy and the concurrency shares
of input URL fetches (``media/fetch.py``) and webhook deliveries (``api/webhooks.py``).

Address rules (``address_refusal``), the same for both:

- every address a host resolves to must be public (global unicast); multicast, reserved
  and unspecified addresses are refused;
- IPv4 embedded in IPv6 (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``, SIIT, NAT64
  ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``, Teredo) and deprecated
  site-local ``fec0::/10`` are refused outright, so ``[::127.0.0.1]`` cannot reach loopback;
- ``allow_networks`` (local testing only) admits listed non-global networks.

Connecting (``PinnedTransport``): the URL's host is resolved once per request (in a thread
of the transport's own, so a slow resolver holds no request thread and the caller's
deadline covers it); every answer must pass the rules; the connection goes to the first
checked address, with ``Host`` and TLS SNI keeping the name (so certificates are verified
against the name). A second DNS answer cannot swap in another address (rebinding).

Shares (``KeyedLimit``): at most ``per_key`` holders per key (a user, a receiver), waiters
queued in order on the event loop, keys forgotten once unused.

Why not ``drawbridge`` (PyPI): version 0.1.2 (alpha) follows the same pinning design but
checks a denylist of ranges, and let ``::127.0.0.1``, ``::ffff:0:7f00:1`` and ``fec0::1``
through in our probe; this module requires addresses to be global instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence

import anyio
import anyio.to_thread
import httpx

from vidq.errors import InvalidInput, UrlUnreachable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> addresses

# IPv6 ranges that carry or translate IPv4, or are deprecated: never connected to, even
# when Python's ``is_global`` says yes (it does for several of them).
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/96",  # IPv4-compatible (deprecated)
        "::ffff:0:0:0/96",  # SIIT IPv4-translated
        "64:ff9b::/96",  # NAT64
        "64:ff9b:1::/48",  # local-use NAT64
        "2001::/32",  # Teredo
        "2002::/16",  # 6to4
        "fec0::/10",  # site-local (deprecated)
    )
)
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def parse_networks(text: str | None) -> tuple[IPNetwork, ...]:
    """``'127.0.0.1/32, ::1'`` -> networks (the ``fetch_allow_networks`` setting)."""
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return tuple(ipaddress.ip_network(t, strict=False) for t in items)


def _unwrap(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def address_refusal(address: str, allow: Sequence[IPNetwork] = ()) -> str | None:
    """Why ``address`` must not be connected to, or None if it may."""
    try:
        ip = _unwrap(ipaddress.ip_address(address.split("%", 1)[0]))
    except ValueError:
        return f"{address!r} is not an IP address"
    if any(ip.version == net.version and ip in net for net in allow):
        return None
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return f"{ip} is not a public address"
    if isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _REFUSED_V6):
        return f"{ip} embeds an IPv4 address or is deprecated"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class NetPolicy:
    """Where outbound requests may go: the scheme rule and the address rules' allowances."""

    allow_http: bool = False  # local testing only
    allow_networks: tuple[IPNetwork, ...] = ()  # non-global networks allowed (testing only)
    resolver: Resolver = system_resolver


def tls_context() -> ssl.SSLContext:
    """The TLS settings of outbound HTTPS (httpx's defaults). Building one takes ~0.05 s of
    CPU (the CA bundle), so a process builds one per trust setting and its fetchers and
    dispatchers share it (a context is not changed by the connections made with it); the
    first call of each is off the event loop."""
    return _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """httpx's default context, which reads SSL_CERT_FILE and SSL_CERT_DIR (the key)."""
    return httpx.create_ssl_context()


class PinnedTransport(httpx.AsyncBaseTransport):
    """Checks the scheme and every resolved address of each request (each redirect hop
    included), then connects to the checked address. Errors are ``InvalidInput(field)``."""

    def __init__(self, field: str, policy: NetPolicy, tls: ssl.SSLContext | None = None) -> None:
        self.field = field
        self.policy = policy
        self._resolving = anyio.CapacityLimiter(1)  # not the request thread pool's tokens
        # No keep-alive: a pooled connection is keyed by IP and must not serve another name.
        self._inner = httpx.AsyncHTTPTransport(
            verify=tls if tls is not None else tls_context(),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def check(self, url: httpx.URL) -> str:
        """The address a request to ``url`` would connect to (``checked_target``)."""
        return await checked_target(self.field, url, self.policy, self._resolving)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        address = await self.check(url)
        host = url.host
        extensions = dict(request.extensions)
        if url.scheme == "https" and address != host:
            extensions["sni_hostname"] = host
        # A copy aimed at the address; the request itself keeps the name, so that relative
        # redirects resolve against the name. The Host header keeps the name too.
        pinned = httpx.Request(
            request.method,
            url.copy_with(host=address),
            headers=request.headers,
            stream=request.stream,
            extensions=extensions,
        )
        return await self._inner.handle_async_request(pinned)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def checked_target(
    field: str, url: httpx.URL, policy: NetPolicy, resolving: anyio.CapacityLimiter | None = None
) -> str:
    """The address a request to ``url`` may connect to: the scheme passes the policy and
    every address the host resolves to passes the rules; InvalidInput naming ``field``
    otherwise (``UrlUnreachable`` when the host does not resolve: a DNS outage or a typo).
    ``resolving``: the limiter of the resolver's thread (not the request thread pool's)."""
    if url.scheme != "https" and not (url.scheme == "http" and policy.allow_http):
        raise InvalidInput(field, f"URL scheme {url.scheme!r} is not allowed; use https")
    host = url.host
    if not host:
        raise InvalidInput(field, "URL has no host")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        ipaddress.ip_address(host)
        addresses: Sequence[str] = [host]
    except ValueError:
        try:
            # Abandoned on the caller's deadline: a resolver that never answers keeps
            # only its own thread, not the request.
            addresses = await anyio.to_thread.run_sync(
                policy.resolver,
                host,
                port,
                abandon_on_cancel=True,
                limiter=resolving or anyio.CapacityLimiter(1),
            )
        except (OSError, UnicodeError) as exc:
            raise UrlUnreachable(field, f"cannot resolve URL host {host!r}") from exc
    if not addresses:
        raise UrlUnreachable(field, f"cannot resolve URL host {host!r}")
    for address in addresses:
        why = address_refusal(address, policy.allow_networks)
        if why is not None:
            raise InvalidInput(field, f"URL host {host!r} is not allowed: {why}")
    return addresses[0].split("%", 1)[0]


@dataclasses.dataclass
class _Share:
    semaphore: anyio.Semaphore
    holders: int = 0


class KeyedLimit:
    """At most ``per_key`` concurrent holders of each key; the rest wait in order. Used on
    one event loop only (no locking); a key is forgotten when nobody holds or awaits it."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._shares: dict[str, _Share] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        share = self._shares.get(key)
        if share is None:
            share = self._shares[key] = _Share(anyio.Semaphore(self.per_key))
        share.holders += 1
        try:
            async with share.semaphore:
                yield
        finally:
            share.holders -= 1
            if share.holders == 0:
                del self._shares[key]
