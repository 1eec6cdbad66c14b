"""SSRF rules, deadline and shares of input URL fetching. Traffic goes only to loopback
servers, reached through a resolver stub and the local-testing allowances."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.support.hostile import slow_headers
from tests.support.loopback import loopback_http
from tests.support.tls import self_signed
from vidq.errors import InvalidInput, PayloadTooLarge
from vidq.media import fetch as fetching
from vidq.media.fetch import Fetcher, FetchPolicy
from vidq.media.outbound import address_refusal, tls_context

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


def fetch(field: str, url: str, policy: FetchPolicy) -> bytes:
    """``media.fetch.fetch`` run to completion on an event loop of its own."""
    return anyio.run(fetching.fetch, field, url, policy)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1", "127.1.2.3", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254",
        "100.64.0.1", "100.100.100.200", "0.0.0.0", "255.255.255.255", "224.0.0.1",
        "192.0.0.170", "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
        "::ffff:169.254.169.254", "::127.0.0.1", "::ffff:0:7f00:1", "64:ff9b::7f00:1",
        "2002:7f00:1::", "2001::1", "fe80::1", "fe80::1%eth0", "fc00::1", "fd00::1",
        "fec0::1", "ff02::1",
    ],
)  # fmt: skip
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(address) is None


def test_allowed_networks_match_mapped_addresses_too() -> None:
    assert address_refusal("::ffff:127.0.0.1", LOOPBACK) is None
    assert address_refusal("127.0.0.2", LOOPBACK) is not None


def policy(answers: dict[str, list[str]], **changes: Any) -> FetchPolicy:
    """A policy whose resolver answers from ``answers`` (OSError for other names)."""

    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]

    return dataclasses.replace(FetchPolicy(max_bytes=10_000, resolver=resolve), **changes)


def test_a_name_resolving_to_loopback_is_refused_before_connecting() -> None:
    with loopback_http({"/a": (200, {}, b"x")}) as (base, hits):
        port = base.rsplit(":", 1)[1]
        p = policy({"evil.test": ["127.0.0.1"]}, allow_http=True)
        with pytest.raises(InvalidInput, match="not a public address") as err:
            fetch("data_uri", f"http://evil.test:{port}/a", p)
        assert err.value.field == "data_uri"
        assert hits == []


def test_one_private_answer_among_public_ones_is_refused() -> None:
    p = policy({"mixed.test": ["93.184.216.34", "10.0.0.1"]})
    with pytest.raises(InvalidInput, match=r"10\.0\.0\.1"):
        fetch("data_uri", "https://mixed.test/a.png", p)


def test_unresolvable_host_and_bad_schemes_are_invalid_input() -> None:
    p = policy({})
    with pytest.raises(InvalidInput, match="cannot resolve"):
        fetch("audio_uri", "https://nowhere.test/a.wav", p)
    with pytest.raises(InvalidInput, match="use https"):
        fetch("audio_uri", "http://93.184.216.34/a.wav", p)  # refused before any connection


def test_connects_to_the_checked_address_and_keeps_the_name() -> None:
    with loopback_http({"/a.png": (200, {}, b"payload")}) as (base, hits):
        port = base.rsplit(":", 1)[1]
        answers = [["127.0.0.1"], ["10.9.9.9"]]  # a rebinding DNS: second answer differs

        def rebinding(host: str, port: int) -> list[str]:
            return answers.pop(0)

        p = FetchPolicy(
            max_bytes=1000, allow_http=True, allow_networks=LOOPBACK, resolver=rebinding
        )
        assert fetch("data_uri", f"http://pinned.test:{port}/a.png", p) == b"payload"
        assert hits == ["/a.png"] and hits.hosts == [f"pinned.test:{port}"]
        assert answers == [["10.9.9.9"]]  # resolved once, connected to what was checked


def test_relative_redirects_keep_the_name() -> None:
    routes = {"/moved": (302, {"Location": "/a.png"}, b""), "/a.png": (200, {}, b"png")}
    with loopback_http(routes) as (base, hits):
        port = base.rsplit(":", 1)[1]
        looked_up: list[str] = []

        def resolve(host: str, port: int) -> list[str]:
            looked_up.append(host)
            return ["127.0.0.1"]

        p = FetchPolicy(max_bytes=1000, allow_http=True, allow_networks=LOOPBACK, resolver=resolve)
        assert fetch("data_uri", f"http://files.test:{port}/moved", p) == b"png"
        assert hits == ["/moved", "/a.png"]
        assert hits.hosts == [f"files.test:{port}"] * 2
        assert looked_up == ["files.test", "files.test"]  # each hop by name, checked again


def test_redirects_are_checked_hop_by_hop() -> None:
    with loopback_http({}) as (target, target_hits):
        routes = {
            "/ok": (302, {"Location": "/file"}, b""),
            "/file": (200, {}, b"data"),
            "/away": (302, {"Location": target.replace("127.0.0.1", "localhost") + "/x"}, b""),
            "/loop": (302, {"Location": "/loop"}, b""),
        }
        with loopback_http(routes) as (base, hits):
            p = FetchPolicy(
                max_bytes=1000,
                allow_http=True,
                allow_networks=LOOPBACK,
                resolver=lambda h, port: ["::1"] if h == "localhost" else [],
            )
            assert fetch("data_uri", f"{base}/ok", p) == b"data"
            assert hits == ["/ok", "/file"]
            with pytest.raises(InvalidInput, match="not a public address"):
                fetch("data_uri", f"{base}/away", p)
            assert target_hits == []
            with pytest.raises(InvalidInput, match="redirects more than"):
                fetch("data_uri", f"{base}/loop", p)


def test_byte_cap_and_http_errors() -> None:
    routes = {"/big": (200, {}, b"x" * 5000), "/gone": (404, {}, b"")}
    with loopback_http(routes) as (base, _):
        p = FetchPolicy(max_bytes=1000, allow_http=True, allow_networks=LOOPBACK)
        with pytest.raises(PayloadTooLarge, match="data_uri"):
            fetch("data_uri", f"{base}/big", p)
        with pytest.raises(InvalidInput, match="HTTP 404"):
            fetch("data_uri", f"{base}/gone", p)


def test_a_server_trickling_header_lines_is_cut_off_at_the_deadline() -> None:
    with slow_headers(interval=0.2, lifetime=30) as (base, seen):
        p = FetchPolicy(max_bytes=1000, timeout_s=1.5, allow_http=True, allow_networks=LOOPBACK)
        t0 = time.monotonic()
        with pytest.raises(InvalidInput, match=r"took over 1\.5 s") as err:
            fetch("data_uri", f"{base}/slow.png", p)
        assert 1.4 < time.monotonic() - t0 < 3.0
        assert err.value.field == "data_uri"
        assert seen.connections == 1


def test_a_resolver_that_never_answers_is_cut_off_at_the_deadline() -> None:
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(10)
        return ["127.0.0.1"]

    p = FetchPolicy(max_bytes=1000, timeout_s=1.0, resolver=hanging)
    t0 = time.monotonic()
    try:
        with pytest.raises(InvalidInput, match="took over 1 s"):
            fetch("data_uri", "https://slow-dns.test/a.png", p)
        assert time.monotonic() - t0 < 2.5
    finally:
        release.set()


async def fetch_all(fetcher: Fetcher, urls: dict[str, str], user: str) -> dict[str, bytes]:
    async with fetcher.fetching(urls, user) as fetched:
        return fetched


def test_one_users_slow_urls_fill_only_their_share() -> None:
    png = b"\x89PNG fake"

    async def scenario(slow: str, good: str) -> tuple[list[InvalidInput], float]:
        policy = FetchPolicy(
            max_bytes=1000, timeout_s=2.0, allow_http=True, allow_networks=LOOPBACK
        )
        fetcher = Fetcher(policy, total=4, per_user=2)
        errors: list[InvalidInput] = []

        async def mallory(i: int) -> None:
            try:
                await fetch_all(fetcher, {"data_uri": f"{slow}/{i}.png"}, "mallory")
            except InvalidInput as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(mallory, i)
            await anyio.sleep(0.3)
            t0 = anyio.current_time()
            got = await fetch_all(fetcher, {"data_uri": f"{good}/ok.png"}, "bob")
            bob_s = anyio.current_time() - t0
            assert got == {"data_uri": png}
        return errors, bob_s

    with (
        slow_headers(interval=0.2, lifetime=30) as (slow, seen),
        loopback_http({"/ok.png": (200, {}, png)}) as (good, _),
    ):
        errors, bob_s = anyio.run(scenario, slow, good)
    assert bob_s < 1.0  # not queued behind mallory's fetches
    assert seen.most_open <= 2 + 1  # her share (+1: the server notices a close late)
    assert len(errors) == 6
    waited = [e for e in errors if "did not start" in e.reason]
    assert waited  # over her share: refused at the same deadline, never started
    assert all(e.field == "data_uri" and "2 s" in e.reason for e in errors)


@contextlib.contextmanager
def tls_server(tmp: Path, body: bytes) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names localhost and 127.0.0.1."""
    cert, key = self_signed(tmp)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], cert
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_tls_is_verified_against_the_name_not_the_pinned_address(tmp_path: Path) -> None:
    with tls_server(tmp_path, b"secure") as (port, cert):
        trust = ssl.create_default_context(cafile=str(cert))
        p = FetchPolicy(max_bytes=100, allow_networks=LOOPBACK, resolver=lambda h, p: ["127.0.0.1"])
        got = anyio.run(fetching.fetch, "data_uri", f"https://localhost:{port}/a", p, trust)
        assert got == b"secure"
        # The certificate covers 127.0.0.1, the address connected to, but not this name.
        with pytest.raises(InvalidInput, match="URL fetch failed") as err:
            anyio.run(fetching.fetch, "data_uri", f"https://other.test:{port}/a", p, trust)
        assert "hostname mismatch" in str(err.value.__cause__).lower()


def test_check_url_applies_the_fetch_rules_without_connecting() -> None:
    """What the API checks of a LoRA's URL at submit (the worker fetches it later)."""
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        if host == "nowhere.example":
            raise OSError("no such host")
        return {"public.example": ["93.184.216.34"], "inside.example": ["10.1.2.3"]}[host]

    policy = FetchPolicy(max_bytes=10, resolver=resolver)

    def check(url: str, p: FetchPolicy = policy) -> None:
        anyio.run(fetching.check_url, "loras[0].path", url, p)

    check("https://public.example/a.safetensors?sig=1")
    check("https://8.8.8.8/a")  # an address needs no resolver
    refusals = {
        "ftp://public.example/a": "must be an https URL",
        "nope": "must be an https URL",
        "http://public.example/a": "scheme 'http' is not allowed",
        "https://inside.example/a": "not a public address",
        "https://[::127.0.0.1]/a": "is not allowed",
        "https://127.0.0.1/a": "not a public address",
    }
    for url, why in refusals.items():
        with pytest.raises(InvalidInput, match=why) as err:
            check(url)
        assert err.value.field == "loras[0].path"
    with pytest.raises(fetching.UrlUnreachable, match="cannot resolve"):
        check("https://nowhere.example/a")
    check(
        "http://127.0.0.1:9/a",
        dataclasses.replace(policy, allow_http=True, allow_networks=LOOPBACK),
    )
    assert resolved == ["public.example", "inside.example", "nowhere.example"]


def test_the_tls_context_is_built_once_per_trust_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One context per process and trust setting: shared, and SSL_CERT_FILE still counts."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    default = tls_context()
    assert tls_context() is default
    cert, _ = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    own = tls_context()
    assert own is not default and tls_context() is own
    assert [c["subject"] for c in own.get_ca_certs()] == [
        c["subject"] for c in ssl.create_default_context(cafile=str(cert)).get_ca_certs()
    ]
