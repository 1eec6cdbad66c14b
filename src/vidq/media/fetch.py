"""SSRF-safe download of an input URL (a client's pre-signed S3 URL, say).

The rules, each enforced on every request including each redirect hop:

- https only; http only when the policy allows it (local testing).
- The host is resolved once; *every* address it resolves to must be public (global
  unicast). IPv4 embedded in IPv6 (mapped ``::ffff:a.b.c.d``, compatible ``::a.b.c.d``,
  SIIT, NAT64, 6to4, Teredo) and deprecated site-local addresses are refused outright, so
  ``[::ffff:127.0.0.1]`` cannot reach loopback.
- The connection goes to the address that was checked (the URL's host is replaced by it;
  ``Host`` and TLS SNI keep the name, so certificates are still verified against the name):
  a second DNS answer cannot swap in another address (rebinding).
- At most ``max_redirects`` hops, a whole-fetch deadline, and a cap on the bytes read.

Why not ``drawbridge`` (PyPI): version 0.1.2 (alpha) follows the same pinning design but
checks a denylist of ranges, and let ``::127.0.0.1``, ``::ffff:0:7f00:1`` and ``fec0::1``
through in our probe; this module requires addresses to be global instead.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
import time
from collections.abc import Callable, Sequence

import httpx

from vidq.errors import InvalidInput, PayloadTooLarge

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]  # (host, port) -> addresses

# IPv6 ranges that carry or translate IPv4, or are deprecated: never fetched from, even
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


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclasses.dataclass(frozen=True, slots=True)
class FetchPolicy:
    """Limits and permissions of URL fetching."""

    max_bytes: int
    timeout_s: float = 20.0
    allow_http: bool = False  # local testing only
    allow_networks: tuple[IPNetwork, ...] = ()  # non-global networks allowed (testing only)
    max_redirects: int = 3
    resolver: Resolver = system_resolver


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


class _PinnedTransport(httpx.BaseTransport):
    """Checks scheme and every resolved address, then connects to the checked address."""

    def __init__(self, field: str, policy: FetchPolicy) -> None:
        self.field = field
        self.policy = policy
        # No keep-alive: a pooled connection is keyed by IP and must not serve another name.
        self._inner = httpx.HTTPTransport(limits=httpx.Limits(max_keepalive_connections=0))

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https" and not (url.scheme == "http" and self.policy.allow_http):
            raise InvalidInput(self.field, f"URL scheme {url.scheme!r} is not allowed; use https")
        host = url.host
        if not host:
            raise InvalidInput(self.field, "URL has no host")
        port = url.port or (443 if url.scheme == "https" else 80)
        address = self._checked_address(host, port)
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
        return self._inner.handle_request(pinned)

    def _checked_address(self, host: str, port: int) -> str:
        try:
            ipaddress.ip_address(host)
            addresses: Sequence[str] = [host]
        except ValueError:
            try:
                addresses = self.policy.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise InvalidInput(self.field, f"cannot resolve URL host {host!r}") from exc
        if not addresses:
            raise InvalidInput(self.field, f"cannot resolve URL host {host!r}")
        for address in addresses:
            why = address_refusal(address, self.policy.allow_networks)
            if why is not None:
                raise InvalidInput(self.field, f"URL host {host!r} is not allowed: {why}")
        return addresses[0].split("%", 1)[0]

    def close(self) -> None:
        self._inner.close()


def fetch(field: str, url: str, policy: FetchPolicy) -> bytes:
    """The body of ``url`` under ``policy``; InvalidInput / PayloadTooLarge naming ``field``."""
    deadline = time.monotonic() + policy.timeout_s
    timeout = httpx.Timeout(policy.timeout_s, connect=min(5.0, policy.timeout_s))
    try:
        with (
            httpx.Client(
                transport=_PinnedTransport(field, policy),
                timeout=timeout,
                follow_redirects=True,
                max_redirects=policy.max_redirects,
                trust_env=False,  # never a proxy from the environment
            ) as client,
            client.stream("GET", url, headers={"accept-encoding": "identity"}) as response,
        ):
            if response.status_code != 200:
                raise InvalidInput(field, f"URL answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise PayloadTooLarge(f"{field}: over the limit of {policy.max_bytes} bytes")
            chunks: list[bytes] = []
            size = 0
            # Raw bytes: no content decoding, so no compression bomb past the cap.
            for chunk in response.iter_raw():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise PayloadTooLarge(f"{field}: over the limit of {policy.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise InvalidInput(field, f"URL fetch took over {policy.timeout_s:g} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except httpx.TooManyRedirects as exc:
        raise InvalidInput(field, f"URL redirects more than {policy.max_redirects} times") from exc
    except httpx.TimeoutException as exc:
        raise InvalidInput(field, f"URL fetch timed out after {policy.timeout_s:g} s") from exc
    except httpx.InvalidURL as exc:
        raise InvalidInput(field, "not a valid URL") from exc
    except httpx.HTTPError as exc:
        # The message of a transport error can hold the URL (and a signature): leave it out.
        raise InvalidInput(field, f"URL fetch failed ({type(exc).__name__})") from exc
