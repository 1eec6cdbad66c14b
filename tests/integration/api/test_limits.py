"""Per-token limits, deadlines and cancelling running jobs, over real HTTP against `vidq
serve` subprocesses (SQLite and PostgreSQL): each limit's 429, the 50-submit race across two
API processes, max-running fairness, deadlines of queued and running jobs, and a running
preview job cancelled (its engine child stopped, no output kept, the next job served)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import Server, run_cli, serve
from tests.support.wait import wait_status
from vidq.client import Client, RateLimited, RetryPolicy
from vidq.store import open_store

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def limited_token(server: Server, user: str, *options: str) -> str:
    out = run_cli(server.env, "token", "create", "--user", user, *options)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


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


def test_each_limit_answers_429_and_stores_nothing(tmp_path: Path) -> None:
    with serve(tmp_path / "data", workers=0) as server:
        queued = limited_token(server, "ann", "--max-queued", "2")
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

        rate = limited_token(server, "ben", "--rate-per-minute", "2")
        with server.client(rate) as c:
            ok(post(c))
            ok(post(c))
            body = refused(post(c), "rate_per_minute", 2)
            assert body["retry_after"] <= 60
            assert len(own_requests(c)) == 2

        # 17 frames at 16 fps: 1.0625 s of video per request.
        daily = limited_token(server, "cid", "--daily-video-seconds", "2")
        with server.client(daily) as c:
            ok(post(c))
            refused(post(c), "daily_video_seconds", 2)
            assert len(own_requests(c)) == 1
        out = run_cli(
            {**server.env, "VIDQ_URL": server.url, "VIDQ_TOKEN": daily},
            "submit", T2V, "-p", "a fox", "--width", "128", "--height", "128",
            "--duration", "1", "--no-wait",
        )  # fmt: skip
        assert out.returncode != 0 and "daily_video_seconds" in out.stderr, out.stderr
        assert "retry in" in out.stderr

        listed = run_cli(server.env, "token", "list")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        columns = rows[0]
        ann = next(dict(zip(columns, row, strict=True)) for row in rows if row[1] == "ann")
        assert (ann["QUEUED"], ann["RUNNING"]) == ("2/2", "0/-"), ann

        # Bad limits on the command line: clear errors, nothing created.
        for bad in ("-1", "abc", "1.5"):
            out = run_cli(server.env, "token", "create", "--user", "x", "--max-queued", bad)
            assert out.returncode == 2 and "--max-queued" in out.stderr, out.stderr
        assert "\tx\t" not in run_cli(server.env, "token", "list").stdout
        token_id = ann["ID"]
        lifted = run_cli(server.env, "token", "update", token_id, "--max-queued", "none")
        assert lifted.returncode == 0, lifted.stderr
        header, row = (line.split("\t") for line in lifted.stdout.splitlines())
        assert header == columns and dict(zip(header, row, strict=True))["QUEUED"] == "-"
        with server.client(queued) as c:
            ok(post(c))  # no limit any more (within the 2 s token cache)
        out = run_cli(server.env, "token", "update", token_id, "--rate-per-minute", "-3")
        assert out.returncode == 2 and "--rate-per-minute" in out.stderr


def test_bad_request_timeouts_and_deadlines_of_queued_jobs(tmp_path: Path) -> None:
    with (
        serve(tmp_path / "data", workers=0, max_queue_seconds=2, reaper_interval=0.2) as server,
        server.client(server.token("dee")) as c,
    ):
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
        r = c.get(f"/queue/vidq/{T2V}/requests/{fal_id}/status")
        deadline = time.monotonic() + 10
        while r.json()["status"] != "COMPLETED" and time.monotonic() < deadline:
            time.sleep(0.1)
            r = c.get(f"/queue/vidq/{T2V}/requests/{fal_id}/status")
        assert r.json()["error"] == "deadline exceeded", r.json()
        assert r.json()["error_type"] == "deadline_exceeded"
        gone = wait_status(c, T2V, plain, {"FAILED"}, timeout=10)
        assert gone["error"] == "not started within 2 s"


def test_fifty_submits_across_two_api_processes_accept_exactly_max_queued(
    tmp_path: Path,
) -> None:
    with serve(tmp_path / "data", workers=0) as a, serve(tmp_path / "data", workers=0) as b:
        token = limited_token(a, "eve", "--max-queued", "5")
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


def test_positions_pass_over_a_user_held_at_max_running(tmp_path: Path) -> None:
    """Over HTTP, both dialects: the held user's jobs count ahead of nobody else's, and
    the server's cached positions follow a job that a worker (here: another process's
    store) starts."""
    with serve(tmp_path / "data", workers=0) as server:
        gus = server.client(limited_token(server, "gus", "--max-running", "1"))
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
        url = server.env.get("VIDQ_DATABASE_URL", f"sqlite:///{server.data_dir / 'vidq.db'}")
        worker = open_store(url, migrate=False)
        try:
            job = worker.claim(["wan22-t2v"], "w", 60)
            assert job is not None and str(job.id) == mine[0]
            assert [status(hal, rid) for rid in theirs] == [(0, None), (1, None)]
            assert [status(gus, rid) for rid in mine[1:]] == [(0, "HELD"), (1, "HELD")]
            assert worker.complete(job.id, job.lease_token or "", "outputs/x.mp4", {})
            assert status(gus, mine[1]) == (0, None)
            assert [status(hal, rid) for rid in theirs] == [(1, None), (2, None)]
        finally:
            worker.close()
        gus.close()
        hal.close()


# -- running jobs: the preview engine, slowed down so a job is seen running -------------------
def engine_children(server: Server) -> set[int]:
    """Pids of the engine child processes under `vidq serve` (spawned by multiprocessing)."""
    found: set[int] = set()
    parents = {server.proc.pid}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmd = (stat.parent / "cmdline").read_bytes()
            if ppid in parents and b"spawn_main" in cmd:
                found.add(pid)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def outputs_of(server: Server, rid: str) -> list[Path]:
    return list(server.data_dir.rglob(f"{rid}_0_*"))


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Server]:
    with serve(
        tmp_path / "data", workers=2, preview_step_seconds=1.5, lease_seconds=1.5,
        reaper_interval=0.2,
    ) as server:  # fmt: skip
        yield server


def wait_running(c: httpx.Client, rid: str) -> None:
    """Until the engine child reported a step: RUNNING alone may precede its spawn."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        body = c.get(f"/requests/{rid}").json()
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        if (body.get("progress") or {}).get("done", 0) >= 1:
            return
        time.sleep(0.05)
    raise AssertionError(f"request {rid} never made progress")


def test_cancel_running_deadlines_and_max_running(slow: Server) -> None:
    c = slow.client(slow.token("fay"))
    # Cancel a running job: 409 without ?running=true, 202 with it, then CANCELLED.
    target = ok(post(c, duration=5))
    wait_running(c, target)
    before = engine_children(slow)
    assert c.put(f"/queue/{T2V}/requests/{target}/cancel").status_code == 409
    r = c.put(f"/queue/{T2V}/requests/{target}/cancel", params={"running": "true"})
    assert r.status_code == 202 and r.json() == {"status": "CANCELLATION_REQUESTED"}
    wait_status(c, T2V, target, {"CANCELLED"}, timeout=10)
    time.sleep(0.5)
    stopped = [pid for pid in before if not alive(pid)]
    assert len(stopped) == 1, (before, engine_children(slow))  # its engine child, only
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
    before = engine_children(slow)
    failed = wait_status(c, T2V, late, {"FAILED", "COMPLETED"}, timeout=15)
    assert failed["status"] == "FAILED" and failed["error"] == "deadline exceeded"
    time.sleep(1.5)  # its worker's next heartbeat (lease/3) stops the child
    assert len([pid for pid in before if not alive(pid)]) == 1
    assert outputs_of(slow, late) == []

    # Max running: a user with 20 queued and --max-running 1 does not block another.
    busy = slow.client(limited_token(slow, "gus", "--max-running", "1"))
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
