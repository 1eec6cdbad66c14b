"""The SDK's retry policy, for both clients, against a loopback server that fails on purpose:
how many tries reach the server, how long the client waits between them, and which typed
error the caller finally gets."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

import vidq
from tests.unit.client_harness import KINDS, Answer, ScriptedServer, run_with, scripted_server

pytestmark = pytest.mark.parametrize("kind", KINDS)

PAGE = Answer(200, {"requests": [], "next_before": None})
QUEUED = Answer(200, {"request_id": "5"})


def busy(status: int, retry_after: str = "0") -> Answer:
    return Answer(status, {"detail": "try later"}, {"Retry-After": retry_after})


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as s:
        yield s


def requests_page(client: Any) -> Any:
    return client.requests()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_reads_are_retried(kind: str, server: ScriptedServer, status: int) -> None:
    server.script("/requests", busy(status), busy(status), PAGE)
    assert run_with(kind, server.url, requests_page)["requests"] == []
    assert len(server.on("/requests")) == 3


def test_retries_give_up_with_the_typed_error(kind: str, server: ScriptedServer) -> None:
    server.script("/requests", busy(503))
    with pytest.raises(vidq.ServiceUnavailableError) as error:
        run_with(kind, server.url, requests_page)
    assert error.value.status_code == 503 and error.value.detail == "try later"
    assert len(server.on("/requests")) == 4  # the first try and FAST's 3 retries


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, vidq.BadRequestError), (404, vidq.NotFoundError), (500, vidq.ServerError)],
)
def test_other_errors_are_not_retried(
    kind: str, server: ScriptedServer, status: int, error: type[vidq.APIError]
) -> None:
    server.script("/requests", Answer(status, {"detail": "no"}))
    with pytest.raises(error):
        run_with(kind, server.url, requests_page)
    assert len(server.on("/requests")) == 1


def test_validation_errors_name_the_fields(kind: str, server: ScriptedServer) -> None:
    detail = [{"loc": ["body", "width"], "msg": "must be a multiple of 16", "type": "value_error"}]
    server.script("/queue/wan22-fast-t2v", Answer(422, {"detail": detail}))
    with pytest.raises(vidq.ValidationError) as invalid:
        run_with(kind, server.url, lambda c: c.submit("wan22-fast-t2v", {"width": 100}))
    assert invalid.value.errors == detail
    assert str(invalid.value) == "HTTP 422: width: must be a multiple of 16"


def test_submit_with_a_key_is_retried_with_the_same_key(kind: str, server: ScriptedServer) -> None:
    server.script("/queue/wan22-fast-t2v", busy(502), busy(502), QUEUED)
    handle = run_with(kind, server.url, lambda c: c.submit("wan22-fast-t2v", {"prompt": "x"}))
    assert (handle.request_id, handle.model_id) == ("5", "wan22-fast-t2v")
    tries = server.on("/queue/wan22-fast-t2v")
    keys = {t.headers.get("idempotency-key") for t in tries}
    assert len(tries) == 3 and len(keys) == 1 and None not in keys
    assert all(t.json() == {"prompt": "x"} for t in tries)


def test_submit_without_a_key_is_not_replayed(kind: str, server: ScriptedServer) -> None:
    def submit(client: Any) -> Any:
        return client.submit("wan22-fast-t2v", {"prompt": "x"})

    server.script("/queue/wan22-fast-t2v", busy(502), QUEUED)
    with pytest.raises(vidq.ServiceUnavailableError):
        run_with(kind, server.url, submit, auto_idempotency=False)
    tries = server.on("/queue/wan22-fast-t2v")
    assert [(t.method, t.headers.get("idempotency-key")) for t in tries] == [("POST", None)]
    # ... except on 429, which says the request was not taken.
    server.script("/queue/wan22-fast-t2v", busy(429), QUEUED)
    assert run_with(kind, server.url, submit, auto_idempotency=False).request_id == "5"
    assert len(server.on("/queue/wan22-fast-t2v")) == 3


def test_retry_after_is_honoured_up_to_the_longest_backoff(
    kind: str, server: ScriptedServer
) -> None:
    patient = vidq.RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=5.0)
    server.script("/requests", busy(503, retry_after="1"), PAGE)
    run_with(kind, server.url, requests_page, retry=patient)
    (gap,) = server.gaps("/requests")
    assert 1.0 <= gap < 2.0  # the server's second, not the policy's 10 ms
    # A Retry-After longer than the policy's longest backoff is cut to it.
    server.seen.clear()
    capped = vidq.RetryPolicy(max_retries=2, backoff_s=0.01, max_backoff_s=0.1)
    server.script("/requests", busy(503, retry_after="30"), PAGE)
    run_with(kind, server.url, requests_page, retry=capped)
    (gap,) = server.gaps("/requests")
    assert 0.1 <= gap < 5.0  # not 30 s


def test_backoff_grows_between_tries(kind: str, server: ScriptedServer) -> None:
    policy = vidq.RetryPolicy(max_retries=2, backoff_s=0.1, max_backoff_s=5.0)
    server.script("/requests", busy(503), busy(503), PAGE)
    run_with(kind, server.url, requests_page, retry=policy)
    first, second = server.gaps("/requests")
    assert 0.075 <= first < second and second >= 0.15  # 0.1 s, then 0.2 s, each +-25 %


def test_an_unreachable_server_is_a_transport_error(kind: str) -> None:
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(vidq.TransportError, match="cannot reach"):
        run_with(kind, url, requests_page)


def test_a_limit_that_frees_up_later_than_the_backoff_is_raised_at_once(
    kind: str, server: ScriptedServer
) -> None:
    body = {
        "detail": "daily_video_seconds: this token may request 60 s of video per UTC day",
        "error_type": "rate_limited", "limit": "daily_video_seconds", "value": 60,
    }  # fmt: skip
    server.script("/queue/wan22-fast-t2v", Answer(429, body, {"Retry-After": "3600"}))
    with pytest.raises(vidq.RateLimited) as error:
        run_with(kind, server.url, lambda c: c.submit("wan22-fast-t2v", {"prompt": "x"}))
    assert len(server.on("/queue/wan22-fast-t2v")) == 1  # not retried
    assert error.value.retry_after == 3600 and error.value.limit == "daily_video_seconds"
    assert error.value.value == 60 and "daily_video_seconds" in str(error.value)
