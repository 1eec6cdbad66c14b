"""Every GPU of a box, with the preview engine and a faked device list (the API is the
in-process stack; the workers are `vidq worker` processes):
`vidq worker --gpus all` runs one slot per GPU (each engine child sees exactly its device),
never more jobs at once than slots, `/admin/workers` lists the slots with their current
job; `--max-jobs` and `--max-idle` end the worker with exit code 0 at the right time."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.processes import stop_process
from tests.support.stack import Stack, stack
from tests.support.wait import eventually, holds, wait_status

pytestmark = pytest.mark.slow  # three worker processes one after another

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V = "wan22-fast-t2v"


def _submit(client: httpx.Client, body: dict[str, Any]) -> str:
    r = client.post(f"/queue/{T2V}", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def _worker(
    srv: Stack, log: Path, *args: str, env: dict[str, str], **settings: Any
) -> subprocess.Popen[bytes]:
    """`vidq worker` with its stderr (INFO) in ``log``, and ``env`` on top of the server's."""
    # only the faked devices: none of the test machine's own
    full = {k: v for k, v in srv.env.items() if k != "CUDA_VISIBLE_DEVICES"}
    full.update({"VIDQ_LOG_LEVEL": "INFO", **env})
    full.update({f"VIDQ_{k.upper()}": str(v) for k, v in settings.items()})
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "vidq", "worker", *args],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


def _requests(admin: httpx.Client) -> list[dict[str, Any]]:
    r = admin.get("/admin/requests", params={"limit": 100})
    assert r.status_code == 200, r.text
    return list(r.json()["requests"])


def _peak_overlap(jobs: list[dict[str, Any]]) -> int:
    """The most jobs that ran at the same time, from their database start and end times."""
    edges = sorted(
        [(j["finished_at"], -1) for j in jobs] + [(j["started_at"], 1) for j in jobs]
    )  # at equal times an end sorts first: a job that ended as another began
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


FAKE_NVIDIA_SMI = """#!/bin/sh
# A box with two GPUs, as `nvidia-smi --query-gpu=index --format=csv,noheader` lists them.
[ "$1" = "--query-gpu=index" ] && [ "$2" = "--format=csv,noheader" ] || exit 9
printf '0\\n1\\n'
"""


def test_gpu_slots_pinned_concurrent_listed_and_limits_exit_0(tmp_path: Path) -> None:
    """One server, three workers after one another.

    1. Three faked GPUs (CUDA_VISIBLE_DEVICES=0,1,2 handed to the worker, as a container
       runtime would), 7 queued jobs, `--max-jobs 6`: three slots run three jobs at once
       and never more, `/admin/workers` shows each slot with its current job, each job's
       engine saw exactly its slot's GPU; the worker exits 0 after six jobs and leaves the
       seventh queued.
    2. Two GPUs found by `nvidia-smi` (a fake one on PATH), `--max-idle 2`: it takes the
       seventh job; while that runs longer than 2 s the other slot stays (idle time is the
       process's, not a slot's) and takes the next job on the other GPU; 2 s after the
       last job ended the worker exits 0.
    3. Without `--gpus`, `--max-idle 1` on an empty queue: exits 0 after a second."""
    with stack(tmp_path / "data", workers=0) as srv:
        alice = srv.client(srv.token("alice"))
        admin = srv.client(srv.admin_token)
        # 1. three GPUs from CUDA_VISIBLE_DEVICES, --max-jobs 6 of 7 queued jobs
        rids = [_submit(alice, SMALL) for _ in range(7)]
        log = tmp_path / "three.log"
        worker = _worker(
            srv, log, "--gpus", "all", "--max-jobs", "6",
            env={"CUDA_VISIBLE_DEVICES": "0,1,2"}, preview_step_seconds=0.25,
        )  # fmt: skip
        try:
            full: list[dict[str, Any]] = []  # /admin/workers with every slot busy
            peak_running = 0
            deadline = time.monotonic() + 60
            while worker.poll() is None and time.monotonic() < deadline:
                running = admin.get("/admin/requests", params={"state": "RUNNING"}).json()
                peak_running = max(peak_running, len(running["requests"]))
                slots = admin.get("/admin/workers").json()["workers"]
                if not full and sum(w["current_job"] is not None for w in slots) == 3:
                    full = slots
                time.sleep(0.05)
            assert worker.wait(30) == 0
        finally:
            stop_process(worker)
        jobs = {str(j["request_id"]): j for j in _requests(admin)}
        assert set(jobs) == set(rids)
        assert 0 < peak_running <= 3
        _check_three_slots(jobs, full, log.read_text().splitlines())
        (last,) = (rid for rid, j in jobs.items() if j["status"] == "IN_QUEUE")

        # 2. two GPUs from nvidia-smi, --max-idle 2
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
        (bin_dir / "nvidia-smi").chmod(0o755)
        path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
        log = tmp_path / "two.log"
        worker = _worker(
            srv, log, "--gpus", "all", "--max-idle", "2",
            env={"PATH": path}, preview_step_seconds=0.8,
        )  # fmt: skip
        try:
            wait_status(alice, T2V, last, {"IN_PROGRESS"}, timeout=30)
            # the other slot stays idle past --max-idle while the job runs: the worker stays
            holds(lambda: worker.poll() is None, 2.5, what="the worker to keep running")
            assert worker.poll() is None
            second = _submit(alice, SMALL)
            for rid in (last, second):
                wait_status(alice, T2V, rid, {"COMPLETED"}, timeout=30)
            eventually(lambda: worker.poll() is not None, 30, interval=0.02, what="its exit")
            exited = time.time()
            assert worker.wait(30) == 0
        finally:
            stop_process(worker)
        jobs = {str(j["request_id"]): j for j in _requests(admin)}
        first, second_job = jobs[last], jobs[second]
        assert first["status"] == second_job["status"] == "COMPLETED"
        # the second job ran on the other GPU while the first was still running
        assert {first["device"], second_job["device"]} == {"0", "1"}
        assert second_job["started_at"] < first["finished_at"]
        idle = exited - max(first["finished_at"], second_job["finished_at"])
        assert 2.0 <= idle < 8.0, idle
        text = log.read_text()
        assert "worker finished 2 jobs (idle for --max-idle 2 s)" in text, text

        # 3. no --gpus, nothing queued: one unpinned slot that scales to zero
        log_idle = tmp_path / "idle.log"
        started = time.monotonic()
        idle_worker = _worker(srv, log_idle, "--max-idle", "1", env={})
        try:
            assert idle_worker.wait(60) == 0
        finally:
            stop_process(idle_worker)
        assert time.monotonic() - started >= 1.0
        idle_lines = log_idle.read_text().splitlines()
        assert idle_lines[-1].endswith("worker finished 0 jobs (idle for --max-idle 1 s)")


def _check_three_slots(
    jobs: dict[str, dict[str, Any]], full: list[dict[str, Any]], lines: list[str]
) -> None:
    done = [j for j in jobs.values() if j["status"] == "COMPLETED"]
    assert len(done) == 6 and len(jobs) == 7
    assert [j["status"] for j in jobs.values() if j not in done] == ["IN_QUEUE"]
    # never more jobs than slots, and every slot busy at once
    assert _peak_overlap(done) == 3, done
    # each engine child saw exactly its device: the device it reports is its slot's
    for job in done:
        assert re.fullmatch(r".+:\d+:gpu[012]", job["worker"]), job
        assert job["worker"].endswith(f":gpu{job['device']}"), job
    assert {j["device"] for j in done} == {"0", "1", "2"}
    # /admin/workers: the three slots of one process, each with its own current job
    assert sorted(w["name"].rsplit(":", 1)[1] for w in full) == ["gpu0", "gpu1", "gpu2"]
    assert len({w["name"].rsplit(":", 1)[0] for w in full}) == 1  # one host:pid
    for slot in full:
        assert jobs[str(slot["current_job"])]["worker"] == slot["name"], (slot, jobs)
    assert len({w["current_job"] for w in full}) == 3
    pinned = sorted(m[1] for ln in lines if (m := re.search(r"on CUDA_VISIBLE_DEVICES=(\S+)", ln)))
    assert pinned == ["0", "1", "2"], lines
    assert lines[-1].endswith("worker finished 6 jobs (finished --max-jobs 6)"), lines[-1]
