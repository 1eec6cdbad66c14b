"""Day-2 operations on the in-process stack, on each job store (the store counts, lists
and expires): Prometheus metrics after a scripted run, JSON logs without secrets, the admin
routes (and their 404 for other tokens), the dashboard's history, pausing a pool across a
restart, and retention with TTLs of seconds on local storage (SQLite) and S3
(PostgreSQL). A collector SIGKILLed mid-batch: tests/acceptance/test_faults.py; `vidq
worker` processes collecting in turn: tests/acceptance/test_service.py; `vidq gc` itself:
tests/acceptance/test_cli_server.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.support.api_calls import local_blobs, submit
from tests.support.media import b64, encode_image, picture
from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import wait_status
from vidq.store.migrate import sqlalchemy_url

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


def test_metrics_logs_and_admin_routes(tmp_path: Path, database: Database) -> None:
    data = tmp_path / "data"
    with stack(
        data, database=database, logs=True, log_format="json", log_level="INFO",
        gc_interval=3600,
    ) as srv:  # fmt: skip
        user = srv.token("alice")
        admin = srv.client(srv.admin_token)
        alice = srv.client(user)
        # /metrics: admin only (401 without a token, 404 for a user token)
        assert srv.client(None).get("/metrics").status_code == 401
        assert alice.get("/metrics").status_code == 404
        # the scripted run: 3 t2v complete; 1 i2v fails (its input blob vanishes while its
        # pool is paused); 1 i2v is cancelled by an operator while queued
        assert admin.post(f"/admin/pools/{POOL_I2V}/pause").json()["paused"] is True
        done = [submit(alice, T2V, SMALL) for _ in range(3)]
        doomed = submit(alice, I2V, IMAGE)
        paused = alice.get(f"/queue/{I2V}/requests/{doomed}/status").json()
        assert paused["status"] == "IN_QUEUE" and paused["statusMessages"]["message"] == "PAUSED"
        cancelled = submit(alice, I2V, IMAGE)
        r = admin.post(f"/admin/requests/{cancelled}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED", r.text
        assert admin.post(f"/admin/requests/{cancelled}/cancel").status_code == 409
        for rid in done:
            wait_status(alice, T2V, rid, {"COMPLETED"})
        assert alice.get(f"/queue/{I2V}/requests/{doomed}/status").json()["status"] == "IN_QUEUE"
        for key in local_blobs(data):
            if key.startswith("inputs/") and key.endswith("/data_uri"):
                (data / "blobs" / "vidq" / key).unlink()
        assert admin.post(f"/admin/pools/{POOL_I2V}/resume").json()["was_paused"] is True
        assert wait_status(alice, I2V, doomed, {"FAILED", "COMPLETED"})["status"] == "FAILED"
        failed = alice.get(f"/requests/{doomed}").json()

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
        # back in the queue; the answer is read after, so a worker may have claimed it, or
        # even failed it again already (its input is still gone): then it ran once more
        assert retried.status_code == 200, retried.text
        again = retried.json()
        ran_again = again["status"] == "FAILED" and again["finished_at"] > failed["finished_at"]
        assert again["status"] in ("IN_QUEUE", "IN_PROGRESS") or ran_again, retried.text
        wait_status(alice, I2V, doomed, {"FAILED"})  # its input is still gone
        second = alice.get(f"/requests/{doomed}").json()
        assert second["finished_at"] > failed["finished_at"], second
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
    with stack(data, database=database, gc_interval=3600) as again:
        queues = again.client(again.admin_token).get("/admin/queues")
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


def test_history_of_the_last_hour(tmp_path: Path, database: Database) -> None:
    """``GET /admin/history``: per pool and minute, the queue depth, first starts with
    their wait p50/p95, completed and failed jobs, for admins only."""
    with stack(tmp_path / "data", database=database, workers=0, gc_interval=3600) as srv:
        alice, admin = srv.client(srv.token("alice")), srv.client(srv.admin_token)
        ids = [submit(alice, T2V, SMALL) for _ in range(3)]
        waiting = admin.get("/admin/history").json()["pools"][POOL_T2V]
        assert waiting["queued"][-1] == 3 and sum(waiting["started"]) == 0
        assert srv.drain() == 3
        # Two of them as if they had run ten minutes ago (the rows' times, rewritten).
        m0 = math.floor(srv.store.now() / 60) * 60 - 600
        engine = sa.create_engine(sqlalchemy_url(srv.settings.resolved_database_url()))
        try:
            with engine.begin() as conn:
                for rid, created, started, finished in (
                    (ids[0], m0 + 5, m0 + 15, m0 + 45), (ids[1], m0 + 5, m0 + 65, m0 + 70),
                ):  # fmt: skip
                    conn.execute(
                        sa.text(
                            "UPDATE jobs SET created_at = :c, first_started_at = :s, "
                            "started_at = :s, finished_at = :f WHERE id = :id"
                        ),
                        {"c": created, "s": started, "f": finished, "id": int(rid)},
                    )
        finally:
            engine.dispose()
        body = admin.get("/admin/history").json()
        assert (body["minutes"], body["step_s"], len(body["times"])) == (60, 60, 60)
        assert body["times"][-1] <= body["now"] < body["times"][-1] + 60
        h, i = body["pools"][POOL_T2V], body["times"].index(m0)
        assert h["queued"][i - 1 : i + 2] == [0, 1, 0]  # the second waited past m0's end
        assert h["started"][i : i + 2] == [1, 1] and sum(h["started"]) == 3
        assert (h["wait_p50_s"][i], h["wait_p95_s"][i]) == (10, 10)
        assert (h["wait_p50_s"][i + 1], h["wait_p95_s"][i + 1]) == (60, 60)
        assert h["completed"][i : i + 2] == [1, 1] and sum(h["completed"]) == 3
        assert sum(h["failed"]) == 0 and h["queued"][-1] == 0
        assert set(body["pools"][POOL_I2V]["completed"]) == {0}
        long = admin.get("/admin/history", params={"minutes": 180}).json()
        assert (long["step_s"], len(long["times"])) == (300, 36)
        assert sum(long["pools"][POOL_T2V]["completed"]) == 3
        bad = admin.get("/admin/history", params={"minutes": 4})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "minutes"]
        assert alice.get("/admin/history").status_code == 404
        assert srv.client(None).get("/admin/history").status_code == 401


@pytest.fixture
def retention_server(
    tmp_path: Path, database: Database, storage_kind: dict[str, Any]
) -> Iterator[Stack]:
    with stack(tmp_path / "data", database=database, gc_interval=3600, **storage_kind) as srv:
        yield srv


def test_retention_expires_blobs_then_rows(retention_server: Stack) -> None:
    """The collector `vidq gc` runs (``Stack.gc``: the same collector, the same report)."""
    srv = retention_server
    keys = srv.storage.keys
    alice = srv.client(srv.token("alice"))
    rids = [submit(alice, I2V, IMAGE), submit(alice, T2V, SMALL)]
    models = [I2V, T2V]
    for model, rid in zip(models, rids, strict=True):
        wait_status(alice, model, rid, {"COMPLETED"})
    outputs = keys("outputs/")  # each video and its poster frame
    assert len(outputs) == 4 and len(keys("inputs/")) == 1
    assert sorted(k.rsplit(".", 1)[-1] for k in outputs) == ["jpg", "jpg", "mp4", "mp4"]
    # the download route of the t2v video (``bucket/key`` of its result_uri): 200 until it expires
    status = alice.get(f"/queue/{T2V}/requests/{rids[1]}/status").json()
    download = "/fal/download/" + status["statusMessages"]["result_uri"].split("://", 1)[1]
    assert alice.get(download).status_code == 200

    # a dry run lists what would go and deletes nothing
    dry = srv.gc(dry_run=True, output_ttl=0)
    assert dry["dry_run"] and sorted(dry["would_delete"]) == sorted(keys(""))
    assert keys("outputs/") == outputs
    assert alice.get(f"/queue/{T2V}/requests/{rids[1]}").status_code == 200

    # inputs go at once (input TTL 0), outputs after theirs: here 0 too
    report = srv.gc(output_ttl=0)
    assert report["blobs_deleted"] == 5 and report["outputs_expired"] == 2
    assert keys("") == []
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
    assert srv.gc(output_ttl=0, job_ttl=0)["jobs_purged"] == 2
    assert alice.get(f"/queue/{T2V}/requests/{rids[1]}/status").status_code == 404
    after = _metrics(srv.client(srv.admin_token).get("/metrics").text)
    for name, value in before.items():
        if name.startswith(("vidq_jobs_", "vidq_job_")):
            assert after[name] == value, name
