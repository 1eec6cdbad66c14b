"""Dispatch benchmark on PostgreSQL: how fast the queue hands out work.

    python bench/dispatch.py [--database-url postgresql://...] [--samples 50]

Without ``--database-url`` it starts a throwaway PostgreSQL cluster (durable settings:
fsync and synchronous commit on) with tests/support/servers.py. Storage is a local folder: this
measures the queue, not S3. It prints three figures, the first two for local workers
(which reach PostgreSQL) and for remote workers (`vidq worker --server URL --token T`,
which reach only the API's ``/worker/v1`` routes over HTTP on loopback):

1. submit -> RUNNING latency with idle workers: one job at a time over HTTP to a real
   `vidq serve --workers 0`, with 2 idle `vidq worker` processes; the latency is
   ``started_at - created_at`` of each job, both stamped by the database clock
   (target p50 < 20 ms local, < 50 ms remote). Local workers sleep on LISTEN/NOTIFY, not
   on a poll interval; remote workers in a claim the API long-polls on the same wake-ups.
2. jobs/s through the queue for 1, 2 and 4 local and 1 and 4 remote workers with the
   "instant" engine: the preview engine at its smallest request (128x128, 1 s = 17
   frames), which writes a minimal valid MP4 immediately. Jobs are bulk-inserted, then
   `vidq worker --burst` processes drain them; jobs/s = jobs / (last finished_at - first
   started_at). Remote workers upload each output through the API (signed upload URLs on
   local storage) and the API checks its size and sha256 before completing.
3. status latency with 100,000 queued jobs: GET .../status (which counts the job's
   queue position) on random queued jobs over HTTP (target p99 < 10 ms).

    python bench/dispatch.py --fair [--queued 100000 --users 1000 --rounds 1]

prints instead the rows of fair share (issue 24): FIFO (``VIDQ_FAIR_SHARE=false``) and fair
share side by side in one run, each on its own database of one PostgreSQL server and its own
`vidq serve`, both with the same backlog of ``--queued`` jobs over ``--users`` users in the
pool. Every figure's samples alternate between the two (ABBA), so that the shared machine's
noise falls on both alike; a last line per round gives fair share's figures over FIFO's:

- submit -> RUNNING with 2 idle local workers, as in 1., for premium requests of a user
  with nothing queued, while the backlog (base tier) waits in retry back-off, so the idle
  workers leave it queued: the claim must find the one claimable job past it;
- claim: one ``claim`` + ``complete`` at a time, in process, taking jobs from the backlog
  (now claimable): what each claim costs with 1,000 users to choose from;
- status p99 as in 3. (10,000 reads a mode: on a shared machine the p99 of 1,000 moved by
  20 % between runs, of 3,000 by 10 %), on random jobs of the backlog; and again while a
  worker claims 20 jobs a second from it (each position snapshot is then at most
  ``MAX_STALE_S`` old and rebuilt by one of the status reads: the price of the turn-aware
  positions).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import json
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import psycopg
from psycopg import sql

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.processes import Server, serve  # noqa: E402
from tests.support.remote import remote_worker, worker_token  # noqa: E402
from tests.support.servers import start_postgres  # noqa: E402

from vidq.jobs import queue_rank  # noqa: E402

MODEL = "wan22-fast-t2v"
POOL = "wan22-t2v"
TINY = {"prompt": "bench", "width": 128, "height": 128, "duration": 1}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# Starts n worker processes with these extra arguments (e.g. --burst).
Start = Callable[..., list[subprocess.Popen[bytes]]]


def local_workers(server: Server) -> Start:
    def start(n: int, *args: str) -> list[subprocess.Popen[bytes]]:
        return [
            subprocess.Popen(
                [sys.executable, "-m", "vidq", "worker", *args],
                env={**server.env, "VIDQ_POOLS": POOL},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(n)
        ]

    return start


def remote_workers(server: Server, tmp: Path) -> Start:
    """`vidq worker --server --token` with a worker token, in empty directories."""
    token = worker_token(server)
    boxes = itertools.count()

    def start(n: int, *args: str) -> list[subprocess.Popen[bytes]]:
        procs = []
        for _ in range(n):
            box = tmp / f"box-{next(boxes)}"
            procs.append(
                remote_worker(server, token, box, "--pools", POOL, *args,
                              log=tmp / f"{box.name}.log")
            )  # fmt: skip
        return procs

    return start


def create_database(url: str, prefix: str) -> str:
    """A fresh database on ``url``'s server; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()


def wait_done(url: str, ids: list[int], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM jobs WHERE id = ANY(%s) AND state = 'COMPLETED'", (ids,)
            ).fetchone()
            if row and row[0] == len(ids):
                return
            time.sleep(0.02)
    raise RuntimeError("jobs did not complete in time")


def dispatch_latency(
    server: Server, url: str, token: str, samples: int, start: Start, kind: str
) -> None:
    procs = start(2)
    try:
        client = server.client(token)
        # Warm up: workers connected, engine children started.
        for _ in range(3):
            rid = int(client.post(f"/queue/{MODEL}", json=TINY).json()["request_id"])
            wait_done(url, [rid])
        submit_ms, ids = [], []
        for _ in range(samples):
            time.sleep(0.1)  # workers idle, waiting
            t0 = time.perf_counter()
            r = client.post(f"/queue/{MODEL}", json=TINY)
            submit_ms.append((time.perf_counter() - t0) * 1000)
            rid = int(r.json()["request_id"])
            ids.append(rid)
            wait_done(url, [rid])
        with psycopg.connect(url) as conn:
            rows = conn.execute(
                "SELECT (started_at - created_at) * 1000 FROM jobs WHERE id = ANY(%s)", (ids,)
            ).fetchall()
        lat = [float(r[0]) for r in rows]
        print(
            f"submit -> RUNNING ({kind}, idle workers, {samples} jobs): "
            f"p50 {pct(lat, 0.5):.1f} ms, p90 {pct(lat, 0.9):.1f} ms, max {max(lat):.1f} ms; "
            f"HTTP submit p50 {statistics.median(submit_ms):.1f} ms"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def bulk_insert(url: str, n: int, user: str = "bench") -> list[int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state, inputs,
                binary_output, max_attempts, work_units, created_at)
            SELECT %s, %s, %s, 0, 0, %s, 'PENDING', %s, false, 3, 1.0,
                extract(epoch from now())
            FROM generate_series(1, %s)
            RETURNING id""",
            (
                user,
                MODEL,
                POOL,
                queue_rank(0, 0),
                '{"prompt":"bench","width":128,"height":128,"duration":1}',
                n,
            ),
        ).fetchall()
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")
    return [int(r[0]) for r in rows]


def throughput(url: str, jobs: int, start: Start, kind: str, counts: tuple[int, ...]) -> None:
    for n in counts:
        ids = bulk_insert(url, jobs)
        procs = start(n, "--burst")
        for p in procs:
            p.wait(600)
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*), max(finished_at) - min(started_at) FROM jobs "
                "WHERE id = ANY(%s) AND state = 'COMPLETED'",
                (ids,),
            ).fetchone()
        assert row is not None and row[0] == jobs, row
        print(f"throughput, {n} {kind} worker(s), {jobs} jobs: {jobs / float(row[1]):.1f} jobs/s")


def status_latency(server: Server, url: str, token: str, queued: int, samples: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM jobs")
    ids = bulk_insert(url, queued, user="alice")
    lat = status_ms(server, token, ids, samples)
    print(
        f"status with {queued:,} queued jobs ({samples} GETs over HTTP): "
        f"p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms"
    )


def bulk_backlog(url: str, n: int, users: int, *, backoff: bool) -> list[int]:
    """``n`` base-tier jobs over ``users`` users, interleaved (job i is user i mod users);
    ``backoff``: in retry back-off until tomorrow, so no worker takes them yet."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            """
            INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state, inputs,
                binary_output, max_attempts, work_units, created_at, retry_at)
            SELECT 'user-' || lpad(((g - 1) %% %s)::text, 5, '0'), %s, %s, 0, 0, %s,
                CASE WHEN %s THEN 'RETRY' ELSE 'PENDING' END, %s, false, 3, 1.0,
                extract(epoch from now()),
                CASE WHEN %s THEN extract(epoch from now()) + 86400 END
            FROM generate_series(1, %s) AS g
            RETURNING id""",
            (users, MODEL, POOL, queue_rank(0, 0), backoff, json.dumps(TINY), backoff, n),
        ).fetchall()
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")
        conn.execute("VACUUM ANALYZE turns")
    return [int(r[0]) for r in rows]


@dataclasses.dataclass
class Mode:
    """One side of the fair-share comparison: its own database and `vidq serve`."""

    name: str
    fair: bool
    url: str
    server: Server
    ids: list[int] = dataclasses.field(default_factory=list)  # the backlog


def turns(modes: list[Mode], i: int) -> list[Mode]:
    """The modes in sample ``i``'s order: ABBA, so that neither always goes first."""
    return modes if i % 4 in (0, 3) else modes[::-1]


def premium_dispatch(modes: list[Mode], samples: int) -> dict[str, list[float]]:
    """submit -> RUNNING (ms, database clock) of premium requests with 2 idle workers per
    mode, the modes' requests alternating."""
    procs = [p for m in modes for p in local_workers(m.server)(2)]
    premium = f"{MODEL}-premium"
    try:
        clients = {m.name: m.server.client(m.server.token("late")) for m in modes}
        ids: dict[str, list[int]] = {m.name: [] for m in modes}
        for i in range(samples + 3):
            for m in turns(modes, i):
                time.sleep(0.1)  # workers idle, waiting
                answer = clients[m.name].post(f"/queue/{premium}", json=TINY)
                rid = int(answer.json()["request_id"])
                wait_done(m.url, [rid])
                if i >= 3:  # warm-up: workers connected, engine children started
                    ids[m.name].append(rid)
        lat = {}
        for m in modes:
            with psycopg.connect(m.url) as conn:
                rows = conn.execute(
                    "SELECT (started_at - created_at) * 1000 FROM jobs WHERE id = ANY(%s)",
                    (ids[m.name],),
                ).fetchall()
            lat[m.name] = [float(r[0]) for r in rows]
        return lat
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def claim_latency(modes: list[Mode], samples: int) -> dict[str, list[float]]:
    """ms per ``claim`` from the backlog, in process, each job completed at once; the
    modes' claims alternating."""
    from vidq.store import open_store

    stores = {m.name: open_store(m.url, migrate=False, fair_share=m.fair) for m in modes}
    try:
        lat: dict[str, list[float]] = {m.name: [] for m in modes}
        for i in range(samples + 20):
            for m in turns(modes, i):
                store = stores[m.name]
                t0 = time.perf_counter()
                claimed = store.claim([POOL], "bench", 60)
                took = (time.perf_counter() - t0) * 1000
                assert claimed is not None
                job = claimed.job
                store.complete(job.id, claimed.lease_token, f"o/{job.id}.mp4", {})
                if i >= 20:
                    lat[m.name].append(took)
        return lat
    finally:
        for store in stores.values():
            store.close()


@contextlib.contextmanager
def claiming(url: str, fair: bool, per_second: float) -> Iterator[None]:
    """A worker's claims (each job completed at once) at ``per_second`` in a thread, while
    the block runs: the queue moves, so the positions' snapshots are rebuilt."""
    from vidq.store import open_store

    store = open_store(url, migrate=False, fair_share=fair)
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(1 / per_second):
            claimed = store.claim([POOL], "bench-busy", 60)
            if claimed is not None:
                job = claimed.job
                store.complete(job.id, claimed.lease_token, f"o/{job.id}.mp4", {})

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
        store.close()


def status_ms(server: Server, token: str, ids: list[int], samples: int) -> list[float]:
    """GET .../status (ms over HTTP) of random queued jobs of ``ids`` (any user's: the
    token's owner is set on the jobs read)."""
    client = server.client(token)
    lat = []
    for i in range(samples + 50):
        took = status_once(client, ids)
        if i >= 50:  # warm-up
            lat.append(took)
    return lat


def status_once(client: httpx.Client, ids: list[int]) -> float:
    """One GET .../status of a random job of ``ids`` (still queued); ms over HTTP."""
    rid = random.choice(ids)
    t0 = time.perf_counter()
    r = client.get(f"/queue/{MODEL}/requests/{rid}/status")
    took = (time.perf_counter() - t0) * 1000
    assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE", r.text
    return took


def status_pair(
    modes: list[Mode], left: dict[str, list[int]], samples: int
) -> dict[str, list[float]]:
    """``status_ms`` for both modes, their reads alternating."""
    # the status route reads only the caller's jobs: read them as their owner
    clients = {m.name: m.server.client(m.server.token("user-00000")) for m in modes}
    lat: dict[str, list[float]] = {m.name: [] for m in modes}
    for i in range(samples + 50):
        for m in turns(modes, i):
            took = status_once(clients[m.name], left[m.name])
            if i >= 50:  # warm-up
                lat[m.name].append(took)
    return lat


def ratio(figures: dict[str, list[float]], q: float) -> str:
    """Fair share's quantile ``q`` over FIFO's."""
    return f"{pct(figures['fair share'], q) / pct(figures['FIFO'], q):.2f}"


def fair_share(
    tmp: Path, urls: list[str], queued: int, users: int, samples: int, rounds: int
) -> None:
    """The fair-share rows (module docstring): FIFO and fair share side by side, each on
    its own database (``urls``: FIFO's, fair share's) and `vidq serve`, every figure's
    samples alternating between the two, so that the shared machine's noise falls on both
    alike; ``rounds`` times (the rounds show how far the ratios move by themselves)."""
    with contextlib.ExitStack() as stack:
        modes = [
            Mode(name, fair, url, stack.enter_context(
                serve(tmp / f"api-{name}", workers=0, database_url=url,
                      fair_share=str(fair).lower())))
            for (name, fair), url in zip((("FIFO", False), ("fair share", True)), urls, strict=True)
        ]  # fmt: skip
        for _ in range(rounds):
            for m in modes:
                with psycopg.connect(m.url, autocommit=True) as conn:  # the last round's
                    conn.execute("DELETE FROM jobs")
                    conn.execute("DELETE FROM turns")
                m.ids = bulk_backlog(m.url, queued, users, backoff=True)
            dispatch = premium_dispatch(modes, samples)
            left: dict[str, list[int]] = {}
            for m in modes:
                with psycopg.connect(m.url, autocommit=True) as conn:  # the backlog may start
                    conn.execute("UPDATE jobs SET state = 'PENDING', retry_at = NULL "
                                 "WHERE state = 'RETRY'")  # fmt: skip
                    conn.execute("VACUUM ANALYZE jobs")
            claims = claim_latency(modes, samples * 4)
            for m in modes:
                mine = m.ids[::users]  # user-00000's
                with psycopg.connect(m.url) as conn:
                    rows = conn.execute(
                        "SELECT id FROM jobs WHERE id = ANY(%s) AND state = 'PENDING'", (mine,)
                    ).fetchall()
                left[m.name] = sorted(int(r[0]) for r in rows)
            status = status_pair(modes, left, 10_000)
            with contextlib.ExitStack() as busy_stack:
                for m in modes:
                    busy_stack.enter_context(claiming(m.url, m.fair, per_second=20))
                half = {name: ids[len(ids) // 2 :] for name, ids in left.items()}
                busy = status_pair(modes, half, 10_000)
            for m in modes:
                n = m.name
                print(
                    f"{n:>10}, {queued:,} queued over {users:,} users: "
                    f"submit -> RUNNING p50 {pct(dispatch[n], 0.5):.1f} ms "
                    f"(p90 {pct(dispatch[n], 0.9):.1f}); "
                    f"claim p50 {pct(claims[n], 0.5):.2f} ms, p99 {pct(claims[n], 0.99):.2f} ms; "
                    f"status p50 {pct(status[n], 0.5):.2f} ms, p99 {pct(status[n], 0.99):.2f} ms; "
                    f"status while 20 claims/s p50 {pct(busy[n], 0.5):.2f} ms, "
                    f"p99 {pct(busy[n], 0.99):.2f} ms",
                    flush=True,
                )
            print(
                f"fair share / FIFO: submit -> RUNNING p50 {ratio(dispatch, 0.5)}, "
                f"claim p50 {ratio(claims, 0.5)}, status p99 {ratio(status, 0.99)}, "
                f"status while claiming p99 {ratio(busy, 0.99)}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database-url")
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--jobs", type=int, default=200, help="jobs per throughput run")
    parser.add_argument(
        "--queued", type=int, default=100_000, help="for the status latency (0: skip it)"
    )
    parser.add_argument(
        "--fair", action="store_true", help="only the fair-share rows: FIFO against fair share"
    )
    parser.add_argument("--users", type=int, default=1000, help="users of --fair's backlog")
    parser.add_argument("--rounds", type=int, default=1, help="--fair: FIFO/fair pairs to run")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        url = args.database_url
        if url is None:
            pg = start_postgres(durable=True)
            stack.callback(pg.destroy)
            url = pg.create_database("bench")
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidq-bench-")))
        if args.fair:
            urls = [url, create_database(url, "bench_fair")]  # FIFO's, fair share's
            fair_share(tmp, urls, args.queued, args.users, args.samples, args.rounds)
            return
        server = stack.enter_context(serve(tmp / "api", workers=0, database_url=url))
        token = server.token("alice")
        local, remote = local_workers(server), remote_workers(server, tmp / "remote")
        dispatch_latency(server, url, token, args.samples, local, "local")
        dispatch_latency(server, url, token, args.samples, remote, "remote")
        throughput(url, args.jobs, local, "local", (1, 2, 4))
        throughput(url, args.jobs, remote, "remote", (1, 4))
        if args.queued:
            status_latency(server, url, token, args.queued, 1000)


if __name__ == "__main__":
    main()
