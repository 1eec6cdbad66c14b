"""The API holds a bounded number of database connections, whatever its thread pools do:
rounds of 256 concurrent worker claims and floods of list requests against a real
`vidq serve` on SQLite, counted from the server's /proc/<pid>/fd."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import Server, serve
from tests.remote import worker_token

POOL_SIZE = 16  # the SQLite driver's pool (store/sqlite.py)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # no in-process worker: the only database users are the requests below
    with serve(tmp_path_factory.mktemp("fds") / "data", workers=0) as s:
        yield s


def open_files(pid: int) -> tuple[int, int]:
    """(every open file descriptor, those on the SQLite database file itself)."""
    total = database = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed meanwhile
        total += 1
        database += target.endswith("/vidq.db")
    return total, database


async def burst(url: str, calls: list[tuple[str, str, str, dict[str, object] | None]]) -> None:
    """Send every call at once; each must answer 200."""
    limits = httpx.Limits(max_connections=len(calls), max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        answers = await asyncio.gather(
            *[
                client.request(method, path, json=body, headers={"Authorization": f"Bearer {t}"})
                for method, path, t, body in calls
            ]
        )
    assert {a.status_code for a in answers} == {200}, {a.status_code for a in answers}


def test_claims_and_floods_do_not_leak_connections(server: Server) -> None:
    worker = worker_token(server)
    user = server.token("alice")
    claim = {"worker": "w", "pools": ["wan22-t2v"], "wait_s": 0.5}
    counts = []
    for _ in range(3):
        # 256 at once, under the worker names one token may keep (max_workers_per_token)
        claims = [("POST", "/worker/v1/claim", worker, {**claim, "worker": f"w{i % 32}"})
                  for i in range(256)]  # fmt: skip
        lists = [("GET", "/requests", user, None) for _ in range(128)]
        asyncio.run(burst(server.url, claims + lists))
        counts.append(open_files(server.proc.pid))
    print(f"(open fds, database fds) after each round: {counts}")
    assert all(database <= POOL_SIZE for _, database in counts), counts
    assert counts[-1][0] - counts[0][0] <= POOL_SIZE, counts  # no growth from round to round
    health = httpx.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200


def test_a_claim_whose_worker_hung_up_takes_no_job(server: Server) -> None:
    """A long-poll claim whose client went away once claimed the next job anyway: RUNNING
    for a ghost until its lease expired, one attempt lost."""
    worker = worker_token(server)
    user = server.client(server.token("hank"))
    body = {"worker": "ghost", "pools": ["wan22-t2v"], "wait_s": 30}
    with pytest.raises(httpx.ReadTimeout):  # the worker hangs up after a second
        httpx.post(f"{server.url}/worker/v1/claim", json=body, timeout=1.0,
                   headers={"Authorization": f"Bearer {worker}"})  # fmt: skip
    time.sleep(1.5)  # past the server's look at the connection (every 0.5 s)
    small = {"prompt": "p", "width": 128, "height": 128, "duration": 1}
    rid = user.post("/queue/wan22-fast-t2v", json=small).json()["request_id"]
    deadline = time.monotonic() + 6  # the ghost's long-poll wakes on this submit
    while time.monotonic() < deadline:
        status = user.get(f"/queue/wan22-fast-t2v/requests/{rid}/status").json()["status"]
        assert status == "IN_QUEUE", status
        time.sleep(0.2)
    live = httpx.post(f"{server.url}/worker/v1/claim", timeout=10,
                      json={**body, "worker": "live", "wait_s": 0},
                      headers={"Authorization": f"Bearer {worker}"}).json()  # fmt: skip
    assert live["job"]["id"] == int(rid) and live["job"]["attempt"] == 1
