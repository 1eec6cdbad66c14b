"""`vidq serve` and `vidq worker` as users and operators start them: the shortest walk
(serve, `vidq token create`, submit, wait, decode the MP4); the memory of the processes
under hostile images, read from /proc (issue 12, "bounded decoding"); and `vidq worker`
processes collecting in turn, serving their own /metrics and logging from their engine
children; the API's database connections under floods of claims and lists (counted from
/proc/<pid>/fd), a claim whose worker hung up, and an API without workers collecting."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import io
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.api_calls import local_blobs, submit
from tests.support.media import b64, encode_image, picture, png_header_bomb, probe_mp4, result_mp4
from tests.support.processes import Server, free_port, serve, stop_process
from tests.support.remote import worker_token
from tests.support.stack import Stack, stack
from tests.support.wait import eventually, until, wait_status

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V, I2V_MODEL = "wan22-fast-t2v", "wan22-fast-i2v"
I2V = f"/queue/{I2V_MODEL}"
POOL_T2V, POOL_I2V = "wan22-t2v", "wan22-i2v"
IMAGE = {
    **SMALL,
    "data_uri": f"data:image/png;base64,{b64(encode_image(picture(128, 128), 'PNG'))}",
}
API_PEAK_MB = 600  # the API process, whatever the number of image submits
TREE_PEAK_MB = 600  # serve, its worker and the engine child together


def test_t2v_request_completes_with_a_real_mp4(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as server:
        client = server.client(server.token("alice"))
        r = client.post(
            "/queue/wan22-fast-t2v",
            json={"prompt": "a red fox", "width": 320, "height": 192, "duration": 2},
        )
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        info = probe_mp4(result_mp4(client, "wan22-fast-t2v", rid), tmp_path)
        assert (info.width, info.height, info.frames) == (320, 192, 33)
        assert info.codec == "h264" and info.pix_fmt == "yuv420p"


def _metrics(text: str) -> dict[str, float]:
    """``name{labels} value`` lines -> {"name{labels}": value} (comments dropped)."""
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


# --- memory, measured from /proc -----------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (children of every thread, not just the main one)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += _tree(int(child))
    return found


def _status_mb(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) // 1024
    return None


@dataclasses.dataclass
class TreeMemory:
    """Samples a process tree every 10 ms: the peak (sum over processes of each one's
    VmHWM, an upper bound of the tree's real peak). Past ``kill_mb`` of resident memory
    it kills the descendants, so a regression fails the test instead of the machine."""

    pid: int
    kill_mb: int
    peaks: dict[int, int] = dataclasses.field(default_factory=dict)
    killed: bool = False

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            resident = 0
            for pid in pids:
                hwm, rss = _status_mb(pid, "VmHWM"), _status_mb(pid, "VmRSS")
                if hwm is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
                resident += rss or 0
            if resident > self.kill_mb:
                self.killed = True
                for pid in pids[1:]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return sum(self.peaks.values())


def test_40_parallel_png_header_bombs_keep_the_api_small(tmp_path: Path) -> None:
    bomb = b64(png_header_bomb(6320, 6320))  # 69 bytes; decoded, 160 MB of pixels
    with serve(tmp_path / "data", workers=0) as srv:
        with srv.client(srv.token("mallory")) as c:
            memory = TreeMemory(srv.proc.pid, kill_mb=4 * API_PEAK_MB)

            def submit(_: int) -> httpx.Response:
                return c.post(I2V, json={"prompt": "x", "data_uri": bomb})

            with concurrent.futures.ThreadPoolExecutor(40) as pool:
                answers = list(pool.map(submit, range(40)))
            peak = memory.stop()
            assert {r.status_code for r in answers} == {422}, answers[0].text
            assert "unreadable png" in answers[0].json()["detail"][0]["msg"]
            assert c.get("/requests").json()["requests"] == []  # nothing stored
            assert not [k for k in local_blobs(srv.data_dir) if k.startswith("inputs/")]
    print(f"\nAPI peak with 40 parallel 6320x6320 PNG bombs: {peak} MB")
    assert not memory.killed and peak < API_PEAK_MB, peak


def test_a_1x50_png_at_3840p_completes_in_bounded_memory(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("RGB", (1, 50), (10, 120, 230)).save(out, format="PNG")  # 75 bytes
    body = {"prompt": "x", "data_uri": b64(out.getvalue()), "new_resolution": "3840p"}
    with serve(tmp_path / "data", workers=1) as srv:
        with srv.client(srv.token("mallory")) as c:
            memory = TreeMemory(srv.proc.pid, kill_mb=4 * TREE_PEAK_MB)
            try:
                r = c.post(I2V, json={**body, "duration": 1})
                assert r.status_code == 200, r.text
                rid = r.json()["request_id"]

                def over() -> bool:
                    status = c.get(f"{I2V}/requests/{rid}/status").json()["status"]
                    return memory.killed or status in ("COMPLETED", "FAILED")

                eventually(over, 120, interval=0.1, what="the job to finish (or be killed)")
            finally:
                peak = memory.stop()
            print(f"\nserve tree peak for a 1x50 PNG at 3840p: {peak} MB")
            assert not memory.killed and peak < TREE_PEAK_MB, peak
            assert wait_status(c, I2V_MODEL, rid, {"COMPLETED"})["status"] == "COMPLETED"
            # 1:50 at the default height 480: the width is clamped to 128.
            info = probe_mp4(result_mp4(c, I2V_MODEL, rid), tmp_path)
            assert (info.width, info.height, info.frames) == (128, 480, 17)


# `vidq worker` whose collector passes take 0.3 s more and print when they ran: two such
# workers must never collect at the same time (the fleet-wide gc lease).
_TIMED_WORKER = """
import json, sys, time
from vidq.ops import retention
collect = retention.Collector.collect
def timed(self, renew=None):
    start = time.time()
    time.sleep(0.3)
    report = collect(self, renew)
    print(json.dumps({"holder": self.holder, "start": start, "end": time.time(),
                      "blobs": report.blobs_deleted}), flush=True)
    return report
retention.Collector.collect = timed
from vidq.console import main
sys.argv[0] = "vidq"
main()
"""


class _Worker:
    """A `vidq worker` subprocess (timed collector), its collector passes as they come."""

    def __init__(self, srv: Stack, log: Path, *args: str, **settings: Any) -> None:
        env = {**srv.env, **{f"VIDQ_{k.upper()}": str(v) for k, v in settings.items()}}
        self.log = log
        with log.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", _TIMED_WORKER, "worker", *args],
                env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
            )  # fmt: skip
        self.passes: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.passes.append(json.loads(line))

    def stop(self) -> list[str]:
        """Stop it; its log lines."""
        stop_process(self.proc)
        self._reader.join(10)
        return self.log.read_text().splitlines()


def test_a_worker_process_says_its_comfyui_is_down(tmp_path: Path) -> None:
    """`vidq worker --metrics-port` whose ComfyUI is down from the start: its warm-up's
    probe holds the engine down, so `/health` is 503 with the reason, the engine gauge is
    0 and `/admin/workers` says engine_down, before any claim; SIGTERM: stopped."""
    dead = f"http://127.0.0.1:{free_port()}"
    with stack(tmp_path / "data", workers=0) as srv:
        port = free_port()
        proc = srv.worker_process(
            "--pools", POOL_T2V, "--metrics-port", str(port),
            engines=f"{POOL_T2V}=comfyui", comfyui_url=dead, engine_probe_seconds=0.2,
        )  # fmt: skip
        admin = srv.client(srv.admin_token)

        def health() -> httpx.Response | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            except httpx.TransportError:
                return None  # not listening yet

        def shown() -> dict[str, Any]:  # its one row (named <host>:<pid>:<slot>)
            rows = admin.get("/admin/workers").json()["workers"]
            return dict(rows[0]) if rows else {}

        try:
            down = until(health, lambda r: r is not None and "down" in r.text, 60,
                         what="/health to say the engine is down")  # fmt: skip
            assert down is not None and down.status_code == 503
            detail = down.json()["detail"]
            assert detail.endswith(
                f": engine comfyui down: no ComfyUI server answered: {dead}: "
                "connection refused or unreachable"
            )
            m = _metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
            assert m['vidq_worker_engine_up{engine="comfyui",slot="cpu"}'] == 0
            row = eventually(lambda: (w := shown()).get("state") == "engine_down" and w, 30)
            assert detail == f"{row['name']}: {row['state_reason']}"
        finally:
            stop_process(proc)
        assert shown()["state"] == "stopped"


def test_workers_collect_in_turn_serve_metrics_and_log_from_engines(tmp_path: Path) -> None:
    """Two `vidq worker`s (one pool each) with the collector every 0.2 s and outputs kept 0
    s: the blobs of finished requests go without `vidq gc`, one collector at a time; the
    first serves its own /metrics (``--metrics-port``) and logs JSON, the second logs
    human lines, each with a line logged inside its engine child. The API is the in-process
    stack (the processes under test are the workers)."""
    data = tmp_path / "data"
    with stack(data, workers=0) as srv:
        alice = srv.client(srv.token("alice"))
        port = free_port()
        every = {"gc_interval": 0.2, "output_ttl": 0, "log_level": "INFO"}
        first = _Worker(srv, tmp_path / "a.log", "--pools", POOL_T2V, "--metrics-port",
                        str(port), log_format="json", **every)  # fmt: skip
        second = _Worker(srv, tmp_path / "b.log", "--pools", POOL_I2V, **every)
        try:
            rids = [
                (T2V, submit(alice, T2V, SMALL)),
                (I2V_MODEL, submit(alice, I2V_MODEL, IMAGE)),
            ]
            for model, rid in rids:
                wait_status(alice, model, rid, {"COMPLETED"})
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert scraped.status_code == 200
            m = _metrics(scraped.text)
            assert m[f'vidq_worker_attempts_total{{outcome="completed",pool="{POOL_T2V}"}}'] == 1
            assert m[f'vidq_worker_busy{{pool="{POOL_T2V}"}}'] == 0
            assert m['vidq_worker_engine_up{engine="preview",slot="cpu"}'] == 1
            assert POOL_I2V not in scraped.text  # the other worker's jobs are not its own
            # the t2v output and its poster, the i2v input, output and poster: deleted by the
            # workers' collectors
            eventually(
                lambda: sum(p["blobs"] for p in first.passes + second.passes) >= 5,
                20,
                what="the collectors to delete the five blobs",
            )
            assert local_blobs(data) == []
            for model, rid in rids:
                assert alice.get(f"/queue/{model}/requests/{rid}").status_code == 410
            # a few more passes, taken in turn: both workers' collectors, several times each
            eventually(
                lambda: (
                    all(
                        sum(p["holder"] == h for p in first.passes + second.passes) >= 2
                        for h in {p["holder"] for p in first.passes + second.passes}
                    )
                    and len({p["holder"] for p in first.passes + second.passes}) == 2
                ),
                20,
                what="two passes of each worker's collector",
            )
        finally:
            logs = first.stop(), second.stop()
        passes = sorted(first.passes + second.passes, key=lambda p: p["start"])
        assert len({p["holder"] for p in passes}) == 2, passes  # both took a turn
        for before, after in itertools.pairwise(passes):
            assert after["start"] >= before["end"], (before, after)  # never two at once
        assert sum(p["blobs"] for p in passes) == 5  # each blob deleted once

    # the JSON worker: a line from its engine child, parsed, with time, level and logger
    records = [json.loads(line) for line in logs[0]]  # every line of it is JSON
    assert records[-1]["message"] == "worker finished 1 jobs", records[-1]
    child = [r for r in records if r["logger"] == "vidq.worker.child"]
    assert child and child[0]["level"] == "INFO", records
    assert re.fullmatch(r"engine preview loaded in [0-9.]+ s", child[0]["message"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", child[0]["time"])
    # the human one: time and level on the child's line
    human = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO vidq.worker.child: engine preview loaded"
    assert any(re.match(human, line) for line in logs[1]), logs[1]


# --- the API process's own resources: connections, claims, retention ------------------------
POOL_SIZE = 16  # the SQLite driver's pool (store/sqlite.py)


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
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


def fd_kinds(pid: int) -> dict[str, int]:
    """The open descriptors by what they are (socket, pipe, a file's name)."""
    kinds: dict[str, int] = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            kind = target.split(":")[0] if ":" in target else Path(target).name
            kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def settled_open_files(pid: int) -> tuple[int, int]:
    """``open_files`` once the burst's sockets have closed: the same count twice, 0.5 s
    apart (at most 15 s). A leaked descriptor stays open, so it is still counted."""
    last = open_files(pid)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = open_files(pid)
        if now == last:
            break
        last = now
    return last


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


def test_claims_and_floods_do_not_leak_connections(api_only: Server) -> None:
    server = api_only
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
        counts.append(settled_open_files(server.proc.pid))
    print(f"(open fds, database fds) after each round: {counts}")
    assert all(database <= POOL_SIZE for _, database in counts), counts
    # no growth from round to round (the message says what the open descriptors are)
    assert counts[-1][0] - counts[0][0] <= POOL_SIZE, (counts, fd_kinds(server.proc.pid))
    health = httpx.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200


def test_a_claim_whose_worker_hung_up_takes_no_job(api_only: Server) -> None:
    server = api_only
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


def test_an_api_without_workers_collects(tmp_path: Path) -> None:
    # The upload expires 3 s after it is stored: long enough to see it stored first on a
    # busy machine (with no time to live at all, the collector could take it first).
    with serve(tmp_path / "data", workers=0, upload_ttl=3, gc_interval=0.5) as server:
        token = server.token("alice")
        auth = server.client(token).post("/fal/storage/auth/token", json={}).json()
        cdn = httpx.Client(
            base_url=auth["base_url"], headers={"Authorization": f"Bearer {auth['token']}"}
        )
        up = cdn.post("/files/upload", content=b"\x00" * 64, headers={"Content-Type": "image/png"})
        assert up.status_code == 200, up.text
        blobs = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "uploads" in p.parts]
        assert blobs, "the upload was stored"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(p.exists() for p in blobs):
            time.sleep(0.2)
        assert not any(p.exists() for p in blobs), "the API never collected the expired upload"
        assert server.client(token).get(up.json()["access_url"]).status_code == 404
