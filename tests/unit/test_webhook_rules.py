"""Webhook targets (SSRF rules) and signatures."""

from __future__ import annotations

import json
import socket
import time

import pytest

from vidq.api import webhooks
from vidq.api.webhooks import check_target, signature, user_secret
from vidq.client import verify_webhook
from vidq.errors import InvalidInput


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
    ],
)
def test_unsafe_targets_are_rejected_naming_the_field(url: str) -> None:
    with pytest.raises(InvalidInput) as err:
        check_target(url)
    assert err.value.field == "fal_webhook"


def test_public_https_targets_pass_without_resolving() -> None:
    assert check_target("https://hooks.example.com/x?a=1") == "https://hooks.example.com/x?a=1"
    assert check_target("https://93.184.215.14/x")


def test_names_are_resolved_and_checked_before_delivery() -> None:
    with pytest.raises(InvalidInput) as err:
        check_target("https://no-such-host.invalid/hook", resolve=True)
    assert "cannot resolve" in err.value.reason


@pytest.mark.parametrize(("answer", "ok"), [("10.0.0.5", False), ("93.184.215.14", True)])
def test_a_name_pointing_inside_is_refused(
    monkeypatch: pytest.MonkeyPatch, answer: str, ok: bool
) -> None:
    def resolver(host: str, port: int, **kw: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port))]

    monkeypatch.setattr(webhooks.socket, "getaddrinfo", resolver)
    if ok:
        assert check_target("https://hooks.example.com/x", resolve=True)
    else:
        with pytest.raises(InvalidInput, match="not a public address"):
            check_target("https://hooks.example.com/x", resolve=True)


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
