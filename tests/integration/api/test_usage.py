"""What each request cost, over real HTTP against the in-process stack running real preview
jobs, on SQLite and on PostgreSQL (the store sums the figures and enforces the limit): the
native status and result ``metrics``, the fal dialect's ``metrics.inference_time``,
``GET /usage`` and ``GET /admin/usage`` as the sums of the requests' own metrics (each user
sees only theirs), ``vidq_gpu_seconds_total``, and the daily GPU-seconds limit's 429.
``vidq usage`` and ``vidq admin usage``: tests/integration/test_cli_usage.py."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.stack import stack
from tests.support.stores import Database
from tests.support.wait import eventually, wait_status

T2V = "wan22-fast-t2v"
PRO = "wan22-fast-t2v-pro"  # the same pool, another model
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}
STEP_S = 0.25  # the preview engine's sleep per denoising step (4 steps a job)


def submit(client: httpx.Client, model: str = T2V) -> str:
    r = client.post(f"/queue/{model}", json=SMALL)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def usage_of(client: httpx.Client, path: str = "/usage", **params: Any) -> dict[str, Any]:
    r = client.get(path, params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_usage_is_the_sum_of_the_requests_metrics(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, preview_step_seconds=STEP_S, database=database) as s:
        ann, bob = s.client(s.token("ann")), s.client(s.token("bob"))
        admin = s.client(s.admin_token)
        jobs = {"ann": [(T2V, submit(ann)), (T2V, submit(ann)), (PRO, submit(ann, PRO))],
                "bob": [(T2V, submit(bob))]}  # fmt: skip
        queued = ann.get(f"/queue/{T2V}/requests/{jobs['ann'][0][1]}/status").json()
        assert "metrics" not in queued  # nothing spent before the first start
        assert ann.get(f"/requests/{jobs['ann'][0][1]}").json()["output"] is None
        assert s.drain() == 4

        metrics: dict[str, list[tuple[str, dict[str, Any]]]] = {"ann": [], "bob": []}
        for user, client in (("ann", ann), ("bob", bob)):
            for model, rid in jobs[user]:
                status = wait_status(client, model, rid, {"COMPLETED"})
                m = status["metrics"]
                assert set(m) == {"gpu_seconds", "queue_seconds", "attempts", "device"}
                assert (m["attempts"], m["device"]) == (1, "cpu")
                assert m["queue_seconds"] >= 0
                # the engine's own run: its 4 sleeping steps and the encode, within the attempt
                run = client.get(f"/requests/{rid}").json()
                assert run["metrics"] == m
                assert 4 * STEP_S <= m["gpu_seconds"] <= run["run_seconds"] + 0.05
                # the video as the worker measured it (the web app's result facts)
                size = client.get(f"/queue/vidq/{model}/requests/{rid}").json()["video"]
                assert run["output"] == {
                    "width": SMALL["width"], "height": SMALL["height"], "fps": 16.0,
                    "frames": 17, "seconds": 1.062, "file_size": size["file_size"],
                }  # fmt: skip
                result = client.get(f"/queue/{model}/requests/{rid}").json()
                assert result["metrics"] == m and result["video"]["data_uri"]
                fal = client.get(f"/queue/vidq/{model}/requests/{rid}/status").json()
                assert fal["metrics"]["inference_time"] == m["gpu_seconds"]
                metrics[user].append((model, m))

        today = time.strftime("%Y-%m-%d", time.gmtime())
        one = usage_of(bob)["usage"][0]["video_seconds"]  # bob's one request's duration
        assert 1.0 <= one <= 1.2  # the requested second, as frames at the model's rate
        for user, client in (("ann", ann), ("bob", bob)):
            mine = usage_of(client)
            assert mine["days"] == 7 and all("user" not in row for row in mine["usage"])
            expected = {}
            for model, m in metrics[user]:
                jobs_n, gpu = expected.get(model, (0, 0.0))
                expected[model] = (jobs_n + 1, gpu + m["gpu_seconds"])
            got = {row["model_id"]: row for row in mine["usage"]}
            assert set(got) == set(expected)  # only the caller's: bob never sees ann's
            for model, (n, gpu) in expected.items():
                assert (got[model]["day"], got[model]["jobs"]) == (today, n)
                assert got[model]["gpu_seconds"] == pytest.approx(gpu, abs=0.002)
                assert got[model]["video_seconds"] == pytest.approx(n * one, abs=0.002)
            total = sum(m["gpu_seconds"] for _, m in metrics[user])
            assert mine["total"]["gpu_seconds"] == pytest.approx(total, abs=0.005)
            assert mine["total"]["jobs"] == len(jobs[user])
        assert usage_of(bob, days=1)["total"]["jobs"] == 1
        assert usage_of(s.client(s.token("cat")))["usage"] == []

        every = usage_of(admin, "/admin/usage", days=30)
        per_user: dict[str, float] = {}
        for row in every["usage"]:
            per_user[row["user"]] = per_user.get(row["user"], 0.0) + row["gpu_seconds"]
        assert set(per_user) == {"ann", "bob"}
        for user in ("ann", "bob"):
            own = sum(m["gpu_seconds"] for _, m in metrics[user])
            assert per_user[user] == pytest.approx(own, abs=0.005)
        assert ann.get("/admin/usage").status_code == 404  # an operator's route
        for bad in ("0", "91", "x"):
            for client, path in ((ann, "/usage"), (admin, "/admin/usage")):
                r = client.get(path, params={"days": bad})
                assert r.status_code == 422, r.text
                assert r.json()["detail"][0]["loc"] == ["query", "days"]

        scraped = admin.get("/metrics").text
        found = re.findall(
            r'^vidq_gpu_seconds_total\{model="([^"]+)",pool="([^"]+)"\} (\S+)$', scraped, re.M
        )
        counted = {(model, pool): float(value) for model, pool, value in found}
        t2v = sum(
            m["gpu_seconds"] for user in metrics for model, m in metrics[user] if model == T2V
        )
        assert counted[(T2V, "wan22-t2v")] == pytest.approx(t2v, abs=0.01)
        assert (PRO, "wan22-t2v") in counted


def test_daily_gpu_seconds_refuse_with_429_until_midnight(
    tmp_path: Path, database: Database
) -> None:
    """A running request counts its time so far: once the day's GPU-seconds reach the
    token's limit, submits get 429 naming the limit with Retry-After until 00:00 UTC; the
    running request finishes."""
    with stack(tmp_path / "data", workers=0, preview_step_seconds=0.6, database=database) as s:
        limited = s.client(s.token("dee", daily_gpu_seconds=1))
        rid = submit(limited)
        s.start_worker(burst=True)

        def over() -> dict[str, Any] | None:
            status = limited.get(f"/queue/{T2V}/requests/{rid}/status").json()
            running = status["status"] == "IN_PROGRESS"
            return status if running and status["metrics"]["gpu_seconds"] >= 1 else None

        assert eventually(over, 30)["metrics"]["attempts"] == 1
        r = limited.post(f"/queue/{T2V}", json=SMALL)
        assert r.status_code == 429, r.text
        body = r.json()
        assert (body["limit"], body["value"]) == ("daily_gpu_seconds", 1)
        assert "daily_gpu_seconds" in body["detail"]
        midnight = 86400 - time.time() % 86400
        assert abs(int(r.headers["retry-after"]) - midnight) <= 5
        done = wait_status(limited, T2V, rid, {"COMPLETED"})  # the running one finished
        assert done["metrics"]["gpu_seconds"] >= 4 * 0.6
        assert limited.post(f"/queue/{T2V}", json=SMALL).status_code == 429
        other = s.client(s.token("eve", daily_gpu_seconds=1))
        assert other.post(f"/queue/{T2V}", json=SMALL).status_code == 200  # per user
