"""Outbound HTTP cannot hang the API (issue 12, rows 1, 3 and 7): a slow input-URL server
and a trickling webhook receiver hold only their own user's share, each exchange has a
total deadline, and webhook targets follow the input fetcher's address rules.

Loopback is reachable only through the local-testing settings (VIDQ_FETCH_ALLOW_HTTP,
VIDQ_FETCH_ALLOW_NETWORKS, VIDQ_WEBHOOK_ALLOW_LOOPBACK_HTTP)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.helpers import serve
from tests.hostile import slow_headers
from tests.loopback import loopback_http
from tests.media import encode_image, picture

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}
T2V = "/queue/wan22-fast-t2v"
I2V = "/queue/wan22-fast-i2v"
FLOOD = 44  # more submits than the 40 request threads of the API
FETCH_TIMEOUT = 4.0
PER_USER = 4
SLACK = 4.0  # a loaded 2-core test machine


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def timed(call: Callable[[], httpx.Response], limit: float) -> float:
    """Seconds ``call`` took to answer 200 (``limit`` if it failed or timed out)."""
    t0 = time.monotonic()
    try:
        ok = call().status_code == 200
    except httpx.HTTPError:
        ok = False
    return time.monotonic() - t0 if ok else limit


def test_a_slow_input_url_server_holds_no_request_thread(tmp_path: Path) -> None:
    png = encode_image(picture(64, 48), "PNG")
    with (
        slow_headers(interval=1.0, lifetime=60) as (slow, seen),
        loopback_http({"/ok.png": (200, {}, png)}) as (good, _),
        serve(
            tmp_path / "data",
            fetch_allow_http="true",
            fetch_allow_networks="127.0.0.1/32",
            fetch_timeout=FETCH_TIMEOUT,
            fetch_per_user=PER_USER,
        ) as server,
        server.client(server.token("bob")) as bob,
    ):
        bob.timeout = httpx.Timeout(10)
        r = bob.post(T2V, json=SMALL)
        assert r.status_code == 200, r.text
        status_url = f"{T2V}/requests/{r.json()['request_id']}/status"
        mallory = server.token("mallory")
        answers: list[tuple[int | None, float, str]] = []

        def submit(i: int) -> None:
            t0 = time.monotonic()
            headers = {"Authorization": f"Bearer {mallory}"}
            body = {"prompt": "x", "data_uri": f"{slow}/img-{i}.png"}
            try:
                with httpx.Client(base_url=server.url, headers=headers, timeout=20) as c:
                    got = c.post(I2V, json=body)
                answers.append((got.status_code, time.monotonic() - t0, got.text))
            except httpx.HTTPError as exc:
                answers.append((None, time.monotonic() - t0, type(exc).__name__))

        flood = [threading.Thread(target=submit, args=(i,)) for i in range(FLOOD)]
        for t in flood:
            t.start()
        time.sleep(0.5)
        health: list[float] = []
        ready: list[float] = []
        status: list[float] = []
        with httpx.Client(base_url=server.url, timeout=10) as probe:
            until = time.monotonic() + FETCH_TIMEOUT - 1.0
            while time.monotonic() < until:
                health.append(timed(lambda: probe.get("/health"), 10))
                ready.append(timed(lambda: probe.get("/ready"), 10))
                status.append(timed(lambda: bob.get(status_url), 10))
                time.sleep(0.02)
        # Another user's URL submit is not queued behind mallory's fetches.
        url_body = {"prompt": "x", "data_uri": f"{good}/ok.png", "duration": 1}
        bob_submit = timed(lambda: bob.post(I2V, json=url_body), 10)
        for t in flood:
            t.join(30)
        print(
            f"\nslow-server flood of {FLOOD}: /health p95 {p95(health) * 1000:.0f} ms "
            f"max {max(health) * 1000:.0f} ms ({len(health)} polls); /ready p95 "
            f"{p95(ready) * 1000:.0f} ms; other user's status p95 "
            f"{p95(status) * 1000:.0f} ms max {max(status) * 1000:.0f} ms; other user's URL "
            f"submit {bob_submit:.2f} s; flood answers in {max(a[1] for a in answers):.1f} s "
            f"at most; slow server saw at most {seen.most_open} connections at once"
        )
        assert p95(health) < 0.5, health
        assert p95(ready) < 0.5, ready
        assert p95(status) < 0.5, status
        assert bob_submit < 2.0  # 200, in time
        assert len(answers) == FLOOD
        for code, seconds, text in answers:
            assert code == 422, (code, text)
            assert seconds < FETCH_TIMEOUT + SLACK, (seconds, text)
            detail = json.loads(text)["detail"]
            assert detail[0]["loc"] == ["body", "data_uri"]
            assert f"{FETCH_TIMEOUT:g} s" in detail[0]["msg"], detail
        assert seen.most_open <= PER_USER  # one user's share of the fetchers
