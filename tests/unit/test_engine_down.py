"""The worker loop's hold on an engine that is down, without a server or an engine child:
the probes' backoff (doubling from ``probe_s`` to ``probe_max_s``), no claim while down,
what the worker announces and what ``unhealthy`` says, and its recovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vidq.errors import StoreUnavailable
from vidq.jobs import WorkerState
from vidq.worker.runner import Worker, WorkerOptions


class Backend:
    """An engine child whose backend answers its ``down_for + 1``-th probe."""

    def __init__(self, down_for: int) -> None:
        self.left = down_for
        self.probes: list[float] = []
        self.alive = True

    def ready(self) -> None:
        pass

    def probe(self) -> str | None:
        self.probes.append(time.monotonic())
        self.left -= 1
        return None if self.left < 0 else f"refused ({self.left + 1} more)"

    def stop(self) -> None:
        pass


class Source:
    """Records what the worker announces and when it claims; the first claim stops it."""

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.said: list[tuple[WorkerState, str | None]] = []
        self.health: list[str | None] = []  # ``unhealthy()`` at each announce
        self.claimed_at: float | None = None
        self.fail_announces = False

    def claim(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str], lease_s: float
    ) -> None:
        self.claimed_at = time.monotonic()
        assert self.worker is not None
        self.worker.stop(drain=False)

    def announce(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str],
        state: WorkerState,
        reason: str | None = None,
    ) -> None:
        assert self.worker is not None
        self.said.append((state, reason))
        self.health.append(self.worker.unhealthy())
        if self.fail_announces:
            raise StoreUnavailable("the database is down")

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        time.sleep(timeout)

    def queue_depths(self) -> dict[str, int]:
        return {}


def _worker(source: Source, backend: Backend, **options: Any) -> Worker:
    values: dict[str, Any] = {"probe_s": 0.05, "probe_max_s": 0.2, **options}
    opts = WorkerOptions(pools=("p",), engines={"p": "comfyui"}, name="w", poll_s=0.01, **values)
    worker = Worker(source, opts)  # type: ignore[arg-type]
    worker._engines["comfyui"] = backend  # type: ignore[assignment]
    source.worker = worker
    return worker


def test_probes_back_off_and_the_worker_claims_only_once_the_engine_answers() -> None:
    source, backend = Source(), Backend(down_for=5)
    worker = _worker(source, backend)
    worker.run()
    # The warm-up's probe, then five more: 0.05 s, doubling, at most 0.2 s apart.
    assert len(backend.probes) == 6
    gaps = [b - a for a, b in zip(backend.probes, backend.probes[1:], strict=False)]
    for gap, nominal in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2], strict=True):
        assert nominal <= gap < nominal + 0.4, gaps  # a busy CPU delays, never hastens
    assert source.claimed_at is not None and source.claimed_at > backend.probes[-1]
    states = [state for state, _ in source.said]
    assert states == [WorkerState.WARMING] + [WorkerState.ENGINE_DOWN] * 5 + [
        WorkerState.READY, WorkerState.STOPPED,
    ]  # fmt: skip
    # Each engine_down carries the probe's latest reason; /health said the same.
    assert source.said[1] == (WorkerState.ENGINE_DOWN, "engine comfyui down: refused (5 more)")
    assert source.said[5] == (WorkerState.ENGINE_DOWN, "engine comfyui down: refused (1 more)")
    assert source.health[5] == "w: engine comfyui down: refused (1 more)"
    assert source.health[-1] is None and worker.down == {}


def test_a_worker_held_down_stops_on_request_and_an_announce_that_fails_is_only_logged() -> None:
    source, backend = Source(), Backend(down_for=10**6)
    source.fail_announces = True
    worker = _worker(source, backend, probe_max_s=0.05)
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while len(backend.probes) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(backend.probes) >= 4  # the loop goes on though every announce failed
        assert worker.unhealthy() == "w: engine comfyui down: " + worker.down["comfyui"].reason
    finally:
        worker.stop()
        thread.join(10)
    assert not thread.is_alive() and source.claimed_at is None
    assert source.said[-1] == (WorkerState.STOPPED, None)
