"""Outbound HTTP cannot hang the API (issue 12, rows 1, 3 and 7): a slow input-URL server
and a trickling webhook receiver hold only their own user's share, each exchange has a
total deadline, and webhook targets follow the input fetcher's address rules.

Loopback is reachable only through the local-testing settings (VIDQ_FETCH_ALLOW_HTTP,
VIDQ_FETCH_ALLOW_NETWORKS, VIDQ_WEBHOOK_ALLOW_LOOPBACK_HTTP)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.hostile import slow_headers
from tests.support.loopback import loopback_http
from tests.support.media import encode_image, picture
from tests.support.stack import stack
from tests.support.wait import eventually, wait_status

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}
T2V = "/queue/wan22-fast-t2v"
I2V = "/queue/wan22-fast-i2v"
FLOOD = 44  # more submits than the 40 request threads of the API
FETCH_TIMEOUT = 4.0
PER_USER = 4
SLACK = 4.0  # a loaded 2-core test machine


def summary(poller: Poller) -> str:
    ms = sorted(1000 * x for x in poller.latencies)
    return f"p50 {ms[len(ms) // 2]:.0f} ms max {ms[-1]:.0f} ms ({len(ms)})"


def timed(call: Callable[[], httpx.Response], limit: float) -> float:
    """Seconds ``call`` took to answer 200 (``limit`` if it failed or timed out)."""
    t0 = time.monotonic()
    try:
        ok = call().status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.monotonic() - t0 if ok else limit


class Poller(threading.Thread):
    """Polls one route for ``seconds`` once started; ``latencies`` holds each answer's
    time, ``answered`` the moment each answer came."""

    def __init__(self, client: httpx.Client, path: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.client, self.path, self.seconds = client, path, seconds
        self.latencies: list[float] = []
        self.answered: list[float] = []

    def run(self) -> None:
        until = time.monotonic() + self.seconds
        while time.monotonic() < until:
            self.latencies.append(timed(lambda: self.client.get(self.path), 10))
            self.answered.append(time.monotonic())
            time.sleep(0.02)


def test_a_slow_input_url_server_holds_no_request_thread(tmp_path: Path) -> None:
    """44 submits of a URL that trickles its headers (more than the API's 40 request
    threads): while every one of those fetches is still waiting for its deadline, other
    requests are answered. Checked by order, not by speed: every poll answers 200, and
    each poller and the other user's URL submit got answers before the first of the flood
    was answered (a request queued behind the fetches could only be answered after one of
    them ended). Latency under the flood is a benchmark: bench/outbound.py."""
    png = encode_image(picture(64, 48), "PNG")
    with (
        slow_headers(interval=1.0, lifetime=60) as (slow, seen),
        loopback_http({"/ok.png": (200, {}, png)}) as (good, _),
        stack(
            tmp_path / "data",
            fetch_allow_http="true",
            fetch_allow_networks="127.0.0.1/32",
            fetch_timeout=FETCH_TIMEOUT,
            fetch_per_user=PER_USER,
        ) as server,
        server.client(server.token("bob")) as bob,
        server.client(server.token("bob")) as bob_polls,
        server.client(None) as anyone,
        server.client(
            server.token("mallory"),
            timeout=20,
            limits=httpx.Limits(max_connections=FLOOD),  # all her submits at once
        ) as mallory,
    ):
        for c in (bob, bob_polls, anyone):
            c.timeout = httpx.Timeout(10)
        r = bob.post(T2V, json=SMALL)
        assert r.status_code == 200, r.text
        status_url = f"{T2V}/requests/{r.json()['request_id']}/status"
        window = FETCH_TIMEOUT - 1.0
        health, ready = Poller(anyone, "/health", window), Poller(anyone, "/ready", window)
        status = Poller(bob_polls, status_url, window)
        answers: list[tuple[int | None, float, str]] = []
        first_answer: list[float] = []  # when the first of the flood was answered

        def submit(i: int) -> None:
            body = {"prompt": "x", "data_uri": f"{slow}/img-{i}.png"}
            t0 = time.monotonic()
            try:
                got = mallory.post(I2V, json=body)
                answers.append((got.status_code, time.monotonic() - t0, got.text))
            except httpx.HTTPError as exc:
                answers.append((None, time.monotonic() - t0, type(exc).__name__))
            first_answer.append(time.monotonic())

        flood = [threading.Thread(target=submit, args=(i,)) for i in range(FLOOD)]
        for t in flood:
            t.start()
        # the pollers start once the slow server holds its share of mallory's fetches
        eventually(lambda: seen.connections >= PER_USER, 10, what="mallory's fetches")
        for t in (health, ready, status):
            t.start()
        # Another user's URL submit is not queued behind mallory's fetches.
        url_body = {"prompt": "x", "data_uri": f"{good}/ok.png", "duration": 1}
        bob_submit = timed(lambda: bob.post(I2V, json=url_body), 10)
        bob_done = time.monotonic()
        for t in (health, ready, status):
            t.join(15)
        for t in flood:
            t.join(30)
        print(
            f"\nslow-server flood of {FLOOD}: /health {summary(health)}; /ready "
            f"{summary(ready)}; other user's status {summary(status)}; other user's URL "
            f"submit {bob_submit:.2f} s; flood answered in {max(a[1] for a in answers):.1f} s "
            f"at most; the slow server saw at most {seen.most_open} connections at once"
        )
        flood_answered = min(first_answer)
        for poller in (health, ready, status):
            assert 10 not in poller.latencies, (poller.path, poller.latencies)  # all 200
            assert min(poller.answered) < flood_answered, (poller.path, summary(poller))
        assert bob_submit < 10 and bob_done < flood_answered  # 200, before any of the flood
        assert len(answers) == FLOOD
        for code, seconds, text in answers:
            assert code == 422, (code, text)
            assert seconds < FETCH_TIMEOUT + SLACK, (seconds, text)
            detail = json.loads(text)["detail"]
            assert detail[0]["loc"] == ["body", "data_uri"]
            assert f"{FETCH_TIMEOUT:g} s" in detail[0]["msg"], detail
        # One user's share of the fetchers (+1: the server notices a close a moment late).
        assert seen.most_open <= PER_USER + 1


class Recorder(http.server.BaseHTTPRequestHandler):
    """A healthy webhook receiver: records when each delivery arrived."""

    got: list[float] = []  # noqa: RUF012

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        Recorder.got.append(time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def healthy_receiver() -> Iterator[str]:
    Recorder.got = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_a_trickling_webhook_receiver_does_not_delay_another_users(
    tmp_path: Path, healthy_receiver: str
) -> None:
    with (
        slow_headers(interval=5.0, lifetime=90) as (trickle, seen),
        stack(tmp_path / "data", webhook_allow_loopback_http="true") as server,
        server.client(server.token("alice")) as alice,
        server.client(server.token("bob")) as bob,
    ):
        for _ in range(6):
            r = alice.post(T2V, params={"fal_webhook": f"{trickle}/hook"}, json=SMALL)
            assert r.status_code == 200, r.text
        eventually(lambda: seen.connections >= 4, 30, what="alice's deliveries in the trickle")
        r = bob.post(T2V, params={"fal_webhook": healthy_receiver}, json=SMALL)
        assert r.status_code == 200, r.text
        wait_status(bob, "wan22-fast-t2v", r.json()["request_id"], {"COMPLETED"})
        done = time.monotonic()
        eventually(lambda: Recorder.got, 20, what="bob's webhook")
        delay = Recorder.got[0] - done
        print(f"\nbob's webhook delivered {delay:.2f} s after his request completed")
        assert delay < 3.0


UNSAFE_V6 = (
    "https://[::127.0.0.1]/",  # IPv4-compatible loopback
    "https://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "https://[fec0::1]/",  # site-local (deprecated)
)


def test_webhook_targets_follow_the_input_fetchers_address_rules(tmp_path: Path) -> None:
    with (
        stack(tmp_path / "data", workers=0) as server,
        server.client(server.token("mallory")) as client,
    ):
        for url in UNSAFE_V6:
            for path in (T2V, "/queue/vidq/wan22-fast-t2v"):
                r = client.post(path, params={"fal_webhook": url}, json=SMALL)
                assert r.status_code == 422, (url, path, r.text)
                assert r.json()["detail"][0]["loc"] == ["body", "fal_webhook"]
        assert client.get("/requests").json()["requests"] == []
