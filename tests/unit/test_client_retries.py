"""The SDK's retry policy against a real loopback HTTP server that fails on purpose."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator

import pytest

import vidq

FAST = vidq.RetryPolicy(max_retries=3, backoff_s=0.01, max_backoff_s=0.05)


class Flaky(http.server.BaseHTTPRequestHandler):
    """Answers ``failures`` times with ``status``, then 200; records every request."""

    failures = 0
    status = 503
    seen: list[tuple[str, str | None]] = []  # noqa: RUF012

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        Flaky.seen.append((self.command, self.headers.get("idempotency-key")))
        if Flaky.failures > 0:
            Flaky.failures -= 1
            body = json.dumps({"detail": "try later"}).encode()
            self.send_response(Flaky.status)
            self.send_header("Retry-After", "0")
        else:
            body = json.dumps({"request_id": "5", "requests": [], "next_before": None}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky() -> Iterator[str]:
    Flaky.seen = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_reads_are_retried(flaky: str, status: int) -> None:
    Flaky.failures, Flaky.status = 2, status
    with vidq.Client(flaky, "t", retry=FAST) as client:
        assert client.requests()["requests"] == []
    assert len(Flaky.seen) == 3


def test_retries_give_up_with_the_typed_error(flaky: str) -> None:
    Flaky.failures, Flaky.status = 10, 503
    with vidq.Client(flaky, "t", retry=FAST) as client, pytest.raises(vidq.ServiceUnavailableError):
        client.requests()
    assert len(Flaky.seen) == 4


def test_submit_with_a_key_is_retried_with_the_same_key(flaky: str) -> None:
    Flaky.failures, Flaky.status = 2, 502
    with vidq.Client(flaky, "t", retry=FAST) as client:
        assert client.submit("wan22-fast-t2v", {"prompt": "x"}).request_id == "5"
    keys = {key for _, key in Flaky.seen}
    assert len(Flaky.seen) == 3 and len(keys) == 1 and None not in keys


def test_submit_without_a_key_is_not_replayed(flaky: str) -> None:
    Flaky.failures, Flaky.status = 1, 502
    with (
        vidq.Client(flaky, "t", retry=FAST, auto_idempotency=False) as client,
        pytest.raises(vidq.ServiceUnavailableError),
    ):
        client.submit("wan22-fast-t2v", {"prompt": "x"})
    assert Flaky.seen == [("POST", None)]
    # ... except on 429, which says the request was not taken.
    Flaky.failures, Flaky.status = 1, 429
    with vidq.Client(flaky, "t", retry=FAST, auto_idempotency=False) as client:
        client.submit("wan22-fast-t2v", {"prompt": "x"})
    assert len(Flaky.seen) == 3
