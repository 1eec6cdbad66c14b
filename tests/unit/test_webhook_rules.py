"""Webhook targets (SSRF rules), delivery (pinned address, deadline) and signatures."""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest

from tests.support.hostile import slow_headers
from vidq.api import webhooks
from vidq.api.webhooks import check_target, signature, user_secret
from vidq.client import verify_webhook
from vidq.errors import InvalidInput
from vidq.media.outbound import LOOPBACK, NetPolicy, Resolver


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",  # https only
        "ftp://example.com/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.1/hook",
        "https://192.168.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://100.64.0.1/hook",  # carrier-grade NAT
        "https://0.0.0.0/hook",
        "https://224.0.0.1/hook",
        "https://localhost/hook",
        "https://foo.localhost/hook",
        "https://localhost./hook",
        "https://user:pass@example.com/hook",
        "https:///nohost",
        "https://example.com:99999/x",
        # the input fetcher's rules: IPv4 inside IPv6, and site-local
        "https://[::127.0.0.1]/",
        "https://[64:ff9b::7f00:1]/",
        "https://[2002:7f00:1::]/",
        "https://[fec0::1]/",
        "https://[::ffff:0:7f00:1]/",
        "https://[2001::1]/",
    ],
)
def test_unsafe_targets_are_rejected_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_target(url)
    assert err.value.field == "fal_webhook"


def test_public_https_targets_pass_without_resolving() -> None:
    assert check_target("https://hooks.example.com/x?a=1") == "https://hooks.example.com/x?a=1"
    assert check_target("https://93.184.215.14/x")


@contextlib.contextmanager
def post_receiver() -> Iterator[tuple[int, list[tuple[str, str, bytes]]]]:
    """A loopback server answering POSTs 200; yields its port and (path, Host, body) got."""
    got: list[tuple[str, str, bytes]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            got.append((self.path, self.headers.get("Host", ""), body))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], got
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def deliver(url: str, resolver: Resolver, *, loopback: bool = True, timeout: float = 5) -> int:
    policy = NetPolicy(
        allow_http=loopback, allow_networks=LOOPBACK if loopback else (), resolver=resolver
    )
    return anyio.run(webhooks.post, url, b"{}", {"X-Test": "1"}, policy, timeout)


def test_delivery_connects_to_the_checked_address_and_keeps_the_name() -> None:
    answers = [["127.0.0.1"], ["10.9.9.9"]]  # a rebinding DNS: the second answer differs

    def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0)

    with post_receiver() as (port, got):
        assert deliver(f"http://hooks.test:{port}/hook?a=1", rebinding) == 200
    assert got == [("/hook?a=1", f"hooks.test:{port}", b"{}")]
    assert answers == [["10.9.9.9"]]  # resolved once, connected to what was checked


@pytest.mark.parametrize(
    "answer", ["10.0.0.5", "169.254.169.254", "::127.0.0.1", "64:ff9b::7f00:1", "fec0::1"]
)
def test_a_name_pointing_inside_is_refused_at_delivery(answer: str) -> None:
    with post_receiver() as (port, got):
        with pytest.raises(InvalidInput, match="not allowed") as err:
            deliver(f"https://hooks.example.com:{port}/x", lambda h, p: [answer], loopback=False)
        assert err.value.field == "fal_webhook"
        assert got == []


def test_an_unresolvable_name_is_refused_at_delivery() -> None:
    def nowhere(host: str, port: int) -> list[str]:
        raise OSError("no such host")

    with pytest.raises(InvalidInput, match="cannot resolve"):
        deliver("https://no-such-host.invalid/hook", nowhere, loopback=False)


def test_a_trickling_receiver_is_cut_off_at_the_deadline() -> None:
    with slow_headers(interval=0.2, lifetime=30) as (base, seen):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            deliver(f"{base}/hook", lambda h, p: ["127.0.0.1"], timeout=1.0)
        assert time.monotonic() - t0 < 2.5
        assert seen.connections == 1


def test_a_refusing_receiver_is_an_http_error() -> None:
    with post_receiver() as (port, _):
        pass  # closed: nothing listens on the port any more
    with pytest.raises(httpx.HTTPError):
        deliver(f"http://127.0.0.1:{port}/hook", lambda h, p: ["127.0.0.1"])


def test_loopback_http_only_with_the_test_setting() -> None:
    with pytest.raises(InvalidInput):
        check_target("http://127.0.0.1:9000/hook")
    assert check_target("http://127.0.0.1:9000/hook", allow_loopback_http=True)
    assert check_target("http://[::1]:9000/hook", allow_loopback_http=True)
    with pytest.raises(InvalidInput):  # the setting opens loopback only
        check_target("http://10.0.0.1/hook", allow_loopback_http=True)


def test_signature_round_trip_and_tampering() -> None:
    secret = user_secret(b"server-secret", "alice")
    assert secret != user_secret(b"server-secret", "bob")
    body = json.dumps({"request_id": "7", "status": "OK"}).encode()
    now = int(time.time())
    headers = {
        "X-Vidq-Webhook-Request-Id": "7",
        "X-Vidq-Webhook-Timestamp": str(now),
        "X-Vidq-Webhook-Signature": signature(secret, "7", now, body),
    }
    assert verify_webhook(secret, headers, body)
    assert not verify_webhook(secret, headers, body + b" ")
    assert not verify_webhook(user_secret(b"server-secret", "bob"), headers, body)
    assert not verify_webhook(secret, {**headers, "X-Vidq-Webhook-Request-Id": "8"}, body)
    old = now - 3600
    stale = {**headers, "X-Vidq-Webhook-Timestamp": str(old)}
    stale["X-Vidq-Webhook-Signature"] = signature(secret, "7", old, body)
    assert not verify_webhook(secret, stale, body)
