"""Latency of the API while its input fetches hang: a flood of submits whose input URL
trickles its headers (more submits than the API's 40 request threads), and meanwhile
/health, /ready and another user's status polls.

    python bench/outbound.py [--flood 44] [--fetch-timeout 4]

Target (issue 12, row 1): p95 < 500 ms for each of the three while the flood waits on its
fetches. The test that the fetches hold no request thread, whatever the machine's speed,
is tests/integration/api/test_outbound_limits.py; this is the timing target it used to
assert, which a busy 2-core test machine cannot promise.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.hostile import slow_headers  # noqa: E402
from tests.support.processes import serve  # noqa: E402

TARGET_P95_S = 0.5
SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


class Poller(threading.Thread):
    """GETs ``path`` for ``seconds``; ``latencies`` holds each answer's (10 s: failed)."""

    def __init__(self, client: httpx.Client, path: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.client, self.path, self.seconds = client, path, seconds
        self.latencies: list[float] = []

    def run(self) -> None:
        until = time.monotonic() + self.seconds
        while time.monotonic() < until:
            t0 = time.monotonic()
            try:
                ok = self.client.get(self.path).status_code == 200
            except httpx.HTTPError:
                ok = False
            self.latencies.append(time.monotonic() - t0 if ok else 10.0)
            time.sleep(0.02)

    def summary(self) -> str:
        ms = sorted(1000 * x for x in self.latencies)
        return (
            f"p50 {ms[len(ms) // 2]:.0f} ms  p95 {p95(ms):.0f} ms  max {ms[-1]:.0f} ms"
            f"  ({len(ms)} polls)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flood", type=int, default=44)
    parser.add_argument("--fetch-timeout", type=float, default=4.0)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        slow_headers(interval=1.0, lifetime=60) as (slow, seen),
        serve(
            Path(tmp) / "data",
            workers=0,
            fetch_allow_http="true",
            fetch_allow_networks="127.0.0.1/32",
            fetch_timeout=args.fetch_timeout,
            fetch_per_user=4,
        ) as server,
    ):
        bob = server.client(server.token("bob"))
        anyone = server.client(None)
        mallory = httpx.Client(
            base_url=server.url,
            headers={"Authorization": f"Bearer {server.token('mallory')}"},
            timeout=20,
            limits=httpx.Limits(max_connections=args.flood),
        )
        rid = bob.post("/queue/wan22-fast-t2v", json=SMALL).json()["request_id"]
        window = args.fetch_timeout - 1.0
        pollers = [
            Poller(anyone, "/health", window),
            Poller(anyone, "/ready", window),
            Poller(bob, f"/queue/wan22-fast-t2v/requests/{rid}/status", window),
        ]

        def submit(i: int) -> None:
            body = {"prompt": "x", "data_uri": f"{slow}/img-{i}.png"}
            try:
                mallory.post("/queue/wan22-fast-i2v", json=body)
            except httpx.HTTPError:
                pass

        flood = [threading.Thread(target=submit, args=(i,)) for i in range(args.flood)]
        for t in flood:
            t.start()
        time.sleep(0.5)  # a benchmark's fixed phase: the flood is under way
        for t in pollers:
            t.start()
        for t in pollers:
            t.join(30)
        for t in flood:
            t.join(60)
        print(f"flood of {args.flood} slow-URL submits, cpus {os.cpu_count()}")
        for poller in pollers:
            print(f"  {poller.path.split('/requests/')[0]:<28} {poller.summary()}")
        met = all(p95(p.latencies) < TARGET_P95_S for p in pollers)
        print(f"target (p95 < {TARGET_P95_S * 1000:.0f} ms each): {'met' if met else 'NOT met'}")
        print(f"the slow server saw at most {seen.most_open} connections at once")


if __name__ == "__main__":
    main()
