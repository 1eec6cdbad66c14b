"""Day-2 operations end to end, on each job store: Prometheus metrics after a scripted
run, JSON logs without secrets, the admin routes (and their 404 for other tokens), pausing
a pool across a restart, and retention with TTLs of seconds on local storage (SQLite) and
S3 (PostgreSQL), including a collector SIGKILLed mid-batch and rerun."""

from __future__ import annotations

import itertools
import json
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

from tests.support.media import b64, encode_image, picture
from tests.support.processes import Server, free_port, run_cli, serve, stop_process
from tests.support.servers import SeaweedServer
from tests.support.wait import wait_status

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V, I2V = "wan22-fast-t2v", "wan22-fast-i2v"
POOL_T2V, POOL_I2V = "wan22-t2v", "wan22-i2v"
PNG = encode_image(picture(128, 128, seed=7), "PNG")
IMAGE = {**SMALL, "data_uri": f"data:image/png;base64,{b64(PNG)}"}


def _metrics(text: str) -> dict[str, float]:
    """``name{labels} value`` lines -> {"name{labels}": value} (comments dropped)."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values


def _submit(client: httpx.Client, model: str, body: dict[str, Any]) -> str:
    r = client.post(f"/queue/{model}", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def _blobs(data_dir: Path) -> list[str]:
    root = data_dir / "blobs" / "vidq"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_metrics_logs_and_admin_routes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with serve(data, log_format="json", log_level="INFO", gc_interval=3600) as srv:
        user = srv.token("alice")
        admin = srv.client(srv.admin_token)
        alice = srv.client(user)
        # /metrics: admin only (401 without a token, 404 for a user token)
        assert srv.client(None).get("/metrics").status_code == 401
        assert alice.get("/metrics").status_code == 404
        # the scripted run: 3 t2v complete; 1 i2v fails (its input blob vanishes while its
        # pool is paused); 1 i2v is cancelled by an operator while queued
        assert admin.post(f"/admin/pools/{POOL_I2V}/pause").json()["paused"] is True
        done = [_submit(alice, T2V, SMALL) for _ in range(3)]
        doomed = _submit(alice, I2V, IMAGE)
        paused = alice.get(f"/queue/{I2V}/requests/{doomed}/status").json()
        assert paused["status"] == "IN_QUEUE" and paused["statusMessages"]["message"] == "PAUSED"
        cancelled = _submit(alice, I2V, IMAGE)
        r = admin.post(f"/admin/requests/{cancelled}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
        assert admin.post(f"/admin/requests/{cancelled}/cancel").status_code == 409
        for rid in done:
            wait_status(alice, T2V, rid, {"COMPLETED"})
        assert alice.get(f"/queue/{I2V}/requests/{doomed}/status").json()["status"] == "IN_QUEUE"
        for key in _blobs(data):
            if key.startswith("inputs/") and key.endswith("/data_uri"):
                (data / "blobs" / "vidq" / key).unlink()
        assert admin.post(f"/admin/pools/{POOL_I2V}/resume").json()["was_paused"] is True
        failed = wait_status(alice, I2V, doomed, {"FAILED", "COMPLETED"})
        assert failed["status"] == "FAILED", failed

        text = admin.get("/metrics").text
        m = _metrics(text)
        t2v = f'model="{T2V}",pool="{POOL_T2V}",tier="base"'
        i2v = f'model="{I2V}",pool="{POOL_I2V}",tier="base"'
        assert m[f"vidq_jobs_submitted_total{{{t2v}}}"] == 3
        assert m[f"vidq_jobs_submitted_total{{{i2v}}}"] == 2
        assert m[f'vidq_jobs_finished_total{{pool="{POOL_T2V}",state="completed"}}'] == 3
        assert m[f'vidq_jobs_finished_total{{pool="{POOL_I2V}",state="failed"}}'] == 1
        assert m[f'vidq_jobs_finished_total{{pool="{POOL_I2V}",state="cancelled"}}'] == 1
        assert m[f'vidq_job_attempts_total{{outcome="completed",pool="{POOL_T2V}"}}'] == 3
        assert m[f'vidq_job_attempts_total{{outcome="failed",pool="{POOL_I2V}"}}'] == 1
        assert m[f'vidq_job_run_seconds_count{{pool="{POOL_T2V}"}}'] == 3
        assert m[f'vidq_job_run_seconds_bucket{{le="+Inf",pool="{POOL_T2V}"}}'] == 3
        assert m[f'vidq_job_queue_wait_seconds_count{{pool="{POOL_I2V}"}}'] == 1
        assert m[f'vidq_queue_depth{{pool="{POOL_T2V}"}}'] == 0
        assert m[f'vidq_jobs_running{{pool="{POOL_T2V}"}}'] == 0
        assert m[f'vidq_workers_alive{{pool="{POOL_T2V}"}}'] == 1
        status_route = "/queue/{model_id}/requests/{rid}/status"
        polls = f'vidq_http_requests_total{{method="GET",route="{status_route}",status="200"}}'
        assert m[polls] >= 4  # the fast path's polls, under the route template
        assert f"/requests/{doomed}" not in text  # request ids never become labels
        assert m['vidq_worker_attempts_total{outcome="completed",pool="wan22-t2v"}'] == 3

        # the admin routes, each 404 for a user token
        listed = admin.get("/admin/requests", params={"state": "FAILED"}).json()["requests"]
        assert [r["request_id"] for r in listed] == [doomed] and listed[0]["user"] == "alice"
        page = admin.get("/admin/requests", params={"pool": POOL_T2V, "limit": 2}).json()
        assert len(page["requests"]) == 2 and page["next_before"] is not None
        bad = admin.get("/admin/requests", params={"state": "NOPE"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "state"]
        users = {u["user"]: u for u in admin.get("/admin/users").json()["users"]}
        assert users["alice"]["completed_today"] == 3 and users["alice"]["failed_today"] == 1
        assert users["alice"]["video_seconds_today"] > 0
        (worker,) = admin.get("/admin/workers").json()["workers"]
        assert worker["jobs_done"] == 3 and worker["engines"][POOL_T2V] == "preview"
        retried = admin.post(f"/admin/requests/{doomed}/retry")
        # back in the queue (a worker may have claimed it already: the answer is read after)
        assert retried.status_code == 200, retried.text
        assert retried.json()["status"] in ("IN_QUEUE", "IN_PROGRESS"), retried.text
        wait_status(alice, I2V, doomed, {"FAILED"})  # its input is still gone
        assert admin.post(f"/admin/requests/{done[0]}/retry").status_code == 409
        assert admin.post("/admin/pools/nope/pause").status_code == 404
        routes = [
            ("GET", "/admin/requests"), ("GET", "/admin/users"), ("GET", "/admin/workers"),
            ("GET", "/admin/queues"), ("POST", f"/admin/requests/{done[0]}/cancel"),
            ("POST", f"/admin/requests/{doomed}/retry"),
            ("POST", f"/admin/pools/{POOL_T2V}/pause"),
            ("POST", f"/admin/pools/{POOL_T2V}/resume"),
        ]  # fmt: skip
        for method, path in routes:
            assert alice.request(method, path).status_code == 404, path
        # a pause survives a restart
        admin.post(f"/admin/pools/{POOL_T2V}/pause")
    with serve(data, gc_interval=3600) as again:
        queues = again.client(again.admin_token or srv.admin_token).get("/admin/queues")
        assert queues.json()["pools"][POOL_T2V]["paused"] is True

    # JSON logs: every line parses, holds no token, signature or input media
    lines = (data / "serve.log").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    queued = [r for r in records if r["message"] == "request queued"]
    assert len(queued) == 5 and all(r["user"] == "alice" and "request_id" in r for r in queued)
    text = "\n".join(lines)
    for secret in (user, srv.admin_token, "signature=", b64(PNG)[:64]):
        assert secret not in text


@pytest.fixture
def storage_kind(e2e_backend: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    """Local storage on SQLite, S3 (SeaweedFS) on PostgreSQL: both kinds get covered."""
    if e2e_backend != "postgres":
        return {}
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    mp = request.getfixturevalue("monkeypatch")
    for key, value in seaweed.env().items():
        mp.setenv(key, value)
    return {"storage_url": f"s3://ret-{time.monotonic_ns() % 10**9}"}


def _keys(srv: Server, prefix: str) -> list[str]:
    """Blob keys under ``prefix``, listed through the configured storage."""
    code = (
        "import sys; from vidq.cli import open_backends; from vidq.config import Settings;"
        "s, b = open_backends(Settings()); print('\\n'.join(b.keys(sys.argv[1])))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, prefix], env=srv.env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    return [k for k in out.stdout.splitlines() if k]


def _gc(srv: Server, *args: str, **ttls: float) -> dict[str, Any]:
    env = {**srv.env, **{f"VIDQ_{k.upper()}": str(v) for k, v in ttls.items()}}
    out = run_cli(env, "gc", *args)
    assert out.returncode == 0, out.stderr
    report: dict[str, Any] = json.loads(out.stdout)
    return report


@pytest.fixture
def retention_server(tmp_path: Path, storage_kind: dict[str, Any]) -> Iterator[Server]:
    with serve(tmp_path / "data", gc_interval=3600, **storage_kind) as srv:
        yield srv


def test_retention_expires_blobs_then_rows(retention_server: Server) -> None:
    srv = retention_server
    alice = srv.client(srv.token("alice"))
    rids = [_submit(alice, I2V, IMAGE), _submit(alice, T2V, SMALL)]
    models = [I2V, T2V]
    for model, rid in zip(models, rids, strict=True):
        wait_status(alice, model, rid, {"COMPLETED"})
    outputs = _keys(srv, "outputs/")
    assert len(outputs) == 2 and len(_keys(srv, "inputs/")) == 1
    # the download route of the t2v video (``bucket/key`` of its result_uri): 200 until it expires
    status = alice.get(f"/queue/{T2V}/requests/{rids[1]}/status").json()
    download = "/fal/download/" + status["statusMessages"]["result_uri"].split("://", 1)[1]
    assert alice.get(download).status_code == 200

    # a dry run lists what would go and deletes nothing
    dry = _gc(srv, "--dry-run", output_ttl=0)
    assert dry["dry_run"] and sorted(dry["would_delete"]) == sorted(_keys(srv, ""))
    assert _keys(srv, "outputs/") == outputs
    assert alice.get(f"/queue/{T2V}/requests/{rids[1]}").status_code == 200

    # inputs go at once (input TTL 0), outputs after theirs: here 0 too
    report = _gc(srv, output_ttl=0)
    assert report["blobs_deleted"] == 3 and report["outputs_expired"] == 2
    assert _keys(srv, "") == []
    for model, rid in zip(models, rids, strict=True):
        gone = alice.get(f"/queue/{model}/requests/{rid}")
        assert gone.status_code == 410 and "expired at" in gone.json()["detail"], gone.text
        status = alice.get(f"/queue/{model}/requests/{rid}/status").json()
        assert status["status"] == "COMPLETED" and status["expired"] is True
        fal = alice.get(f"/queue/vidq/{model}/requests/{rid}")
        assert fal.status_code == 410
    expired = alice.get(download)
    assert expired.status_code == 410 and "expired at" in expired.json()["detail"], expired.text
    # rows go after the job TTL; their counters stay
    before = _metrics(srv.client(srv.admin_token).get("/metrics").text)
    assert _gc(srv, output_ttl=0, job_ttl=0)["jobs_purged"] == 2
    assert alice.get(f"/queue/{T2V}/requests/{rids[1]}/status").status_code == 404
    after = _metrics(srv.client(srv.admin_token).get("/metrics").text)
    for name, value in before.items():
        if name.startswith(("vidq_jobs_", "vidq_job_")):
            assert after[name] == value, name


# Deletes one blob at a time, slowly, and says so: the test kills it mid-batch.
_SLOW_GC = """
import sys, time
from vidq.storage import local, s3
for cls in (local.LocalBlobStore, s3.S3BlobStore):
    def slow(self, key, _orig=cls.delete):
        _orig(self, key)
        print("deleted", key, flush=True)
        time.sleep(2)
    cls.delete = slow
from vidq.cli import app
app(["gc"])
"""


def test_a_collector_killed_mid_batch_is_finished_by_the_next(
    retention_server: Server,
) -> None:
    srv = retention_server
    alice = srv.client(srv.token("alice"))
    rids = [_submit(alice, T2V, SMALL) for _ in range(3)]
    for rid in rids:
        wait_status(alice, T2V, rid, {"COMPLETED"})
    env = {**srv.env, "VIDQ_OUTPUT_TTL": "0", "VIDQ_GC_LEASE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_GC], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first.startswith("deleted outputs/"), first
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    # mid-batch: every job is either intact or says it expired; none points at a
    # missing blob without saying so
    left = set(_keys(srv, "outputs/"))
    assert len(left) == 2
    for rid in rids:
        status = alice.get(f"/queue/{T2V}/requests/{rid}/status").json()
        key = status["statusMessages"]["result_uri"].split("/", 3)[3]
        result = alice.get(f"/queue/{T2V}/requests/{rid}")
        if key in left:
            assert result.status_code in (200, 410)
        else:
            assert result.status_code == 410 and status["expired"] is True
    time.sleep(1.5)  # the dead collector's lease runs out
    report = _gc(srv, output_ttl=0)
    assert report["outputs_expired"] == 3 and _keys(srv, "outputs/") == []
    for rid in rids:
        assert alice.get(f"/queue/{T2V}/requests/{rid}").status_code == 410


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

    def __init__(self, srv: Server, log: Path, *args: str, **settings: Any) -> None:
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


def test_workers_collect_in_turn_serve_metrics_and_log_from_engines(tmp_path: Path) -> None:
    """Two `vidq worker`s (one pool each) with the collector every 0.2 s and outputs kept 0
    s: the blobs of finished requests go without `vidq gc`, one collector at a time; the
    first serves its own /metrics (``--metrics-port``) and logs JSON, the second logs
    human lines, each with a line logged inside its engine child."""
    data = tmp_path / "data"
    with serve(data, workers=0) as srv:
        alice = srv.client(srv.token("alice"))
        port = free_port()
        every = {"gc_interval": 0.2, "output_ttl": 0, "log_level": "INFO"}
        first = _Worker(srv, tmp_path / "a.log", "--pools", POOL_T2V, "--metrics-port",
                        str(port), log_format="json", **every)  # fmt: skip
        second = _Worker(srv, tmp_path / "b.log", "--pools", POOL_I2V, **every)
        try:
            rids = [(T2V, _submit(alice, T2V, SMALL)), (I2V, _submit(alice, I2V, IMAGE))]
            for model, rid in rids:
                wait_status(alice, model, rid, {"COMPLETED"})
            health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=10)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
            assert scraped.status_code == 200
            m = _metrics(scraped.text)
            assert m[f'vidq_worker_attempts_total{{outcome="completed",pool="{POOL_T2V}"}}'] == 1
            assert m[f'vidq_worker_busy{{pool="{POOL_T2V}"}}'] == 0
            assert POOL_I2V not in scraped.text  # the other worker's jobs are not its own
            # the t2v output, the i2v input and output: deleted by the workers' collectors
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                if sum(p["blobs"] for p in first.passes + second.passes) >= 3:
                    break
                time.sleep(0.05)
            assert _blobs(data) == []
            for model, rid in rids:
                assert alice.get(f"/queue/{model}/requests/{rid}").status_code == 410
            time.sleep(1)  # a few more passes, taken in turn
        finally:
            logs = first.stop(), second.stop()
        passes = sorted(first.passes + second.passes, key=lambda p: p["start"])
        assert len({p["holder"] for p in passes}) == 2, passes  # both took a turn
        for before, after in itertools.pairwise(passes):
            assert after["start"] >= before["end"], (before, after)  # never two at once
        assert sum(p["blobs"] for p in passes) == 3  # each blob deleted once

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
