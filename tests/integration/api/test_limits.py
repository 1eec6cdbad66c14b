"""Per-token limits, deadlines and cancelling running jobs, over real HTTP against the
in-process stack, on SQLite and on PostgreSQL (the store enforces the limits and orders
the queue): each limit's 429, the 50-submit race across two API replicas on one store,
max-running fairness, deadlines of queued and running jobs, and a running preview job
cancelled (its engine child stopped, no output kept, the next job served). The limits as
`vidq token create/update/list` and `vidq submit` show them: tests/acceptance/test_cli_server.py."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import eventually, until, wait_status
from vidq.client import Client, RateLimited, RetryPolicy
from vidq.store import open_store

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def post(
    client: httpx.Client, headers: dict[str, str] | None = None, **extra: Any
) -> httpx.Response:
    return client.post(f"/queue/{T2V}", json={**SMALL, **extra}, headers=headers or {})


def ok(r: httpx.Response) -> str:
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def refused(r: httpx.Response, limit: str, value: int) -> dict[str, Any]:
    assert r.status_code == 429, r.text
    body: dict[str, Any] = r.json()
    assert (body["limit"], body["value"], body["error_type"]) == (limit, value, "rate_limited")
    assert limit in body["detail"] and str(value) in body["detail"]
    assert int(r.headers["retry-after"]) >= 1
    return body


def own_requests(client: httpx.Client) -> list[dict[str, Any]]:
    r = client.get("/requests", params={"limit": 100})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["requests"]
    return items


def test_each_limit_answers_429_and_stores_nothing(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as server:
        queued = server.token("ann", max_queued=2)
        with server.client(queued) as c:
            first = ok(post(c, {"Idempotency-Key": "one"}))
            ok(post(c))
            refused(post(c), "max_queued", 2)
            refused(c.post(f"/queue/vidq/{T2V}", json=SMALL), "max_queued", 2)  # fal dialect
            replay = post(c, {"Idempotency-Key": "one"})  # a replay is not a new job
            assert ok(replay) == first and replay.headers["idempotent-replayed"] == "true"
            assert len(own_requests(c)) == 2
            sdk = Client(server.url, queued, retry=RetryPolicy(max_retries=0))
            with sdk, pytest.raises(RateLimited) as typed:
                sdk.submit(T2V, SMALL)
            assert typed.value.retry_after and typed.value.limit == "max_queued"
            assert c.put(f"/queue/{T2V}/requests/{first}/cancel").status_code == 204
            ok(post(c))  # the cancelled one freed its slot

        rate = server.token("ben", rate_per_minute=2)
        with server.client(rate) as c:
            ok(post(c))
            ok(post(c))
            body = refused(post(c), "rate_per_minute", 2)
            assert body["retry_after"] <= 60
            assert len(own_requests(c)) == 2

        # 17 frames at 16 fps: 1.0625 s of video per request.
        daily = server.token("cid", daily_video_seconds=2)
        with server.client(daily) as c:
            ok(post(c))
            refused(post(c), "daily_video_seconds", 2)
            assert len(own_requests(c)) == 1


def test_bad_request_timeouts_and_deadlines_of_queued_jobs(
    tmp_path: Path, database: Database
) -> None:
    with (
        stack(
            tmp_path / "data", workers=0, database=database, max_queue_seconds=2,
            reaper_interval=0.2,
        ) as server,
        server.client(server.token("dee")) as c,
    ):  # fmt: skip
        for bad in ("abc", "-1", "0", "inf", "nan", ""):
            r = post(c, {"X-Request-Timeout": bad})
            assert r.status_code == 422, r.text
            assert r.json()["detail"][0]["loc"] == ["header", "x-request-timeout"]
        r = c.post(f"/queue/vidq/{T2V}", json=SMALL, headers={"X-Fal-Request-Timeout": "soon"})
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["header", "x-fal-request-timeout"]
        assert own_requests(c) == []

        timed = ok(post(c, {"X-Request-Timeout": "0.5"}))
        fal = c.post(f"/queue/vidq/{T2V}", json=SMALL, headers={"X-Fal-Request-Timeout": "1"})
        fal_id = ok(fal)
        plain = ok(post(c))
        failed = wait_status(c, T2V, timed, {"FAILED", "COMPLETED"}, timeout=10)
        assert failed["status"] == "FAILED" and failed["error"] == "deadline exceeded"
        fal_status = until(
            lambda: c.get(f"/queue/vidq/{T2V}/requests/{fal_id}/status").json(),
            lambda body: body["status"] == "COMPLETED",
            10,
            what="the fal request to finish",
        )
        assert fal_status["error"] == "deadline exceeded", fal_status
        assert fal_status["error_type"] == "deadline_exceeded"
        gone = wait_status(c, T2V, plain, {"FAILED"}, timeout=10)
        assert gone["error"] == "not started within 2 s"


def test_fifty_submits_across_two_api_replicas_accept_exactly_max_queued(
    tmp_path: Path, database: Database
) -> None:
    """Two API replicas (two apps, each with its own store connections) on one store."""
    with (
        stack(tmp_path / "data", workers=0, database=database) as a,
        stack(tmp_path / "data", workers=0, database=database) as b,
    ):
        token = a.token("eve", max_queued=5)
        clients = [a.client(token), b.client(token)]
        start = threading.Barrier(50)
        codes: list[int] = []

        def submit(i: int) -> None:
            start.wait(20)
            codes.append(post(clients[i % 2]).status_code)

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(codes) == [200] * 5 + [429] * 45
        assert len(own_requests(clients[1])) == 5
        for c in clients:
            c.close()


def test_positions_pass_over_a_user_held_at_max_running(tmp_path: Path, database: Database) -> None:
    """Over HTTP, both dialects: the held user's jobs count ahead of nobody else's, and
    the server's cached positions follow a job that a worker (here: another store
    instance, as another process would hold) starts. First in, first out (held jobs
    under fair share: tests/integration/test_store_contract.py)."""
    with stack(tmp_path / "data", workers=0, database=database, fair_share=False) as server:
        gus = server.client(server.token("gus", max_running=1))
        hal = server.client(server.token("hal"))
        mine = [ok(post(gus)) for _ in range(3)]
        theirs = [ok(post(hal)) for _ in range(2)]

        def status(c: httpx.Client, rid: str) -> tuple[int, str | None]:
            body = c.get(f"/queue/{T2V}/requests/{rid}/status").json()
            fal = c.get(f"/queue/vidq/{T2V}/requests/{rid}/status").json()
            assert fal["queue_position"] == body["queue_position"]
            return body["queue_position"], body["statusMessages"].get("message")

        assert status(gus, mine[0]) == (0, None)
        assert [status(hal, rid) for rid in theirs] == [(1, None), (2, None)]
        assert [status(gus, rid) for rid in mine[1:]] == [(1, "HELD"), (2, "HELD")]
        worker = open_store(
            server.settings.resolved_database_url(), migrate=False, fair_share=False
        )
        try:
            claimed = worker.claim(["wan22-t2v"], "w", 60)
            assert claimed is not None and str(claimed.job.id) == mine[0]
            assert [status(hal, rid) for rid in theirs] == [(0, None), (1, None)]
            assert [status(gus, rid) for rid in mine[1:]] == [(0, "HELD"), (1, "HELD")]
            assert worker.complete(claimed.job.id, claimed.lease_token, "outputs/x.mp4", {})
            assert status(gus, mine[1]) == (0, None)
            assert [status(hal, rid) for rid in theirs] == [(1, None), (2, None)]
        finally:
            worker.close()
        gus.close()
        hal.close()


# -- running jobs: the preview engine, slowed down so a job is seen running -------------------
def engine_children() -> set[int]:
    """Pids of the engine child processes of the stack's worker threads: the children of
    this process's multiprocessing fork server (``vidq.worker.child``)."""
    procs: dict[int, tuple[int, bytes]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            procs[pid] = (ppid, (stat.parent / "cmdline").read_bytes())
    servers = {
        pid
        for pid, (ppid, cmd) in procs.items()
        if ppid == os.getpid() and b"multiprocessing.forkserver" in cmd
    }
    return {pid for pid, (ppid, _) in procs.items() if ppid in servers}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def outputs_of(server: Stack, rid: str) -> list[Path]:
    return list(server.data_dir.rglob(f"{rid}_0_*"))


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Stack]:
    """Two workers whose preview steps take 1.5 s. SQLite only: the statements of a running
    job's cancel and deadline, and of max-running, run on PostgreSQL in the contract suite
    (tests/integration/test_store_contract.py)."""
    with stack(
        tmp_path / "data", workers=2, preview_step_seconds=1.5, lease_seconds=1.5,
        reaper_interval=0.2,
    ) as server:  # fmt: skip
        yield server


def wait_running(c: httpx.Client, rid: str) -> None:
    """Until the engine child reported a step: RUNNING alone may precede its spawn."""

    def stepped() -> bool:
        body = c.get(f"/requests/{rid}").json()
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        return bool((body.get("progress") or {}).get("done", 0) >= 1)

    eventually(stepped, 30, what=f"request {rid} to make progress")


@pytest.mark.slow
def test_cancel_running_deadlines_and_max_running(slow: Stack) -> None:
    c = slow.client(slow.token("fay"))
    # Cancel a running job: 409 without ?running=true, 202 with it, then CANCELLED.
    target = ok(post(c, duration=5))
    wait_running(c, target)
    before = engine_children()
    assert c.put(f"/queue/{T2V}/requests/{target}/cancel").status_code == 409
    r = c.put(f"/queue/{T2V}/requests/{target}/cancel", params={"running": "true"})
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    wait_status(c, T2V, target, {"CANCELLED"}, timeout=10)
    stopped = eventually(lambda: [pid for pid in before if not alive(pid)], 10)
    assert len(stopped) == 1, (before, engine_children())  # its engine child, only
    assert outputs_of(slow, target) == []
    r = c.put(f"/queue/{T2V}/requests/{target}/cancel", params={"running": "true"})
    assert r.status_code == 409  # finished
    nxt = ok(post(c))
    wait_status(c, T2V, nxt, {"COMPLETED"}, timeout=60)

    # The fal dialect (and the SDK) cancel a running request the same way.
    fal = ok(c.post(f"/queue/vidq/{T2V}", json={**SMALL, "duration": 5}))
    wait_running(c, fal)
    r = c.put(f"/queue/vidq/{T2V}/requests/{fal}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "CANCELLATION_REQUESTED"
    wait_status(c, T2V, fal, {"CANCELLED"}, timeout=10)
    sdk_job = ok(post(c, duration=5))
    wait_running(c, sdk_job)
    with Client(slow.url, str(c.headers["authorization"]).split()[1]) as sdk:
        assert sdk.get_handle(sdk_job, T2V).cancel(running=True) is False
    wait_status(c, T2V, sdk_job, {"CANCELLED"}, timeout=10)
    assert outputs_of(slow, fal) == outputs_of(slow, sdk_job) == []

    # A running job past its X-Request-Timeout fails and its engine is stopped.
    # 8 steps of 1.5 s: still running at its deadline even after a slow engine start.
    late = ok(post(c, {"X-Request-Timeout": "8"}, higher_quality_with_more_steps=True))
    wait_running(c, late)
    before = engine_children()
    failed = wait_status(c, T2V, late, {"FAILED", "COMPLETED"}, timeout=15)
    assert failed["status"] == "FAILED" and failed["error"] == "deadline exceeded"
    # its worker's next heartbeat (lease/3) stops the child
    stopped = eventually(lambda: [pid for pid in before if not alive(pid)], 10)
    assert len(stopped) == 1, (before, engine_children())
    assert outputs_of(slow, late) == []

    # Max running: a user with 20 queued and --max-running 1 does not block another.
    busy = slow.client(slow.token("gus", max_running=1))
    mine = [ok(post(busy)) for _ in range(20)]
    other = ok(post(c))
    wait_status(c, T2V, other, {"COMPLETED"}, timeout=60)
    states = [r["status"] for r in own_requests(busy)]
    assert states.count("IN_PROGRESS") <= 1 and states.count("COMPLETED") <= 3, states
    for rid in mine:  # end the test quickly
        c_busy = busy.put(f"/queue/{T2V}/requests/{rid}/cancel", params={"running": "true"})
        assert c_busy.status_code in (202, 204, 409)
    busy.close()
    c.close()
