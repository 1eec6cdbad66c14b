"""GPU slots and run limits without a server: which devices `--gpus` resolves to (from
CUDA_VISIBLE_DEVICES or a fake `nvidia-smi` on PATH), which values `VIDQ_GPUS` accepts, and
the shared budget and idle clock of `--max-jobs` / `--max-idle` under many threads."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from vidq.config import WorkerSettings
from vidq.errors import EngineUnavailable
from vidq.worker.limits import RunLimits
from vidq.worker.slots import resolve_gpus


def _nvidia_smi(tmp_path: Path, script: str) -> dict[str, str]:
    """An environment whose PATH finds only a fake `nvidia-smi` running ``script``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin"}


def test_gpus_resolve_from_the_list_the_environment_or_nvidia_smi(tmp_path: Path) -> None:
    assert resolve_gpus(None, {}) is None  # no --gpus: one unpinned slot
    assert resolve_gpus(("1", "3"), {"CUDA_VISIBLE_DEVICES": "0"}) == ("1", "3")
    uuid = "GPU-8f6ad5b2-6a4f-4f0e-9d0c-3b1f2a7e9c11"
    assert resolve_gpus(("all",), {"CUDA_VISIBLE_DEVICES": f"2, {uuid}"}) == ("2", uuid)
    listed = _nvidia_smi(
        tmp_path,
        '[ "$1 $2" = "--query-gpu=index --format=csv,noheader" ] || exit 9\nprintf "0\\n1\\n3\\n"',
    )
    assert resolve_gpus(("all",), listed) == ("0", "1", "3")


@pytest.mark.parametrize(
    ("visible", "script", "message"),
    [
        ("-1", None, "names no GPU"),
        ("", None, "names no GPU"),
        (None, "echo 'NVIDIA-SMI has failed' >&2; exit 9", "nvidia-smi failed"),
        (None, "exit 0", "lists no GPU"),
        (None, "", "nvidia-smi is not on PATH"),
    ],
)
def test_gpus_all_without_a_gpu_is_a_clear_error(
    tmp_path: Path, visible: str | None, script: str | None, message: str
) -> None:
    environ = {"PATH": str(tmp_path)}  # an empty folder: no nvidia-smi
    if script:
        environ = _nvidia_smi(tmp_path, script)
    if visible is not None:
        environ["CUDA_VISIBLE_DEVICES"] = visible
    with pytest.raises(EngineUnavailable, match=message):
        resolve_gpus(("all",), environ)


def test_gpus_setting_accepts_all_or_distinct_devices() -> None:
    assert WorkerSettings(gpus=" 0, 2 ,").gpus == ("0", "2")
    assert WorkerSettings(gpus="all").gpus == ("all",)
    assert WorkerSettings(gpus="").gpus is None
    for bad in ("all,0", "0,0", "0,x", "-1", "cuda:0"):
        with pytest.raises(ValidationError, match="gpus"):
            WorkerSettings(gpus=bad)


def test_max_jobs_is_one_budget_across_slots() -> None:
    """Eight slots racing for a budget of 20: never more than 20 claimed, and every
    reservation a claim gives back can be taken again."""
    limits = RunLimits(max_jobs=20)
    claimed = []
    lock = threading.Lock()

    def slot(index: int) -> None:
        turn = 0
        while limits.begin_claim():
            turn += 1
            got = (index + turn) % 3 != 0  # every third claim finds the queue empty
            limits.end_claim(got)
            if got:
                with lock:
                    claimed.append(index)
                limits.job_done()

    threads = [threading.Thread(target=slot, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(claimed) == 20
    assert limits.reason == "finished --max-jobs 20"
    assert not limits.begin_claim()


def test_max_idle_counts_from_the_last_work_of_any_slot() -> None:
    now = [100.0]
    limits = RunLimits(max_idle_s=5.0, clock=lambda: now[0])
    assert limits.begin_claim()
    limits.end_claim(True)  # slot A runs a job from t=100
    now[0] = 120.0
    assert not limits.idle_expired()  # slot B idle for 20 s, but A is busy
    limits.job_done()  # A's job ends at t=120
    now[0] = 124.9
    assert not limits.idle_expired()
    assert limits.begin_claim()  # slot B long-polls: a claim in flight is not work
    now[0] = 125.0
    assert limits.idle_expired() and limits.reason == "idle for --max-idle 5 s"
    assert not limits.begin_claim()  # no slot begins a claim after the decision
    limits.end_claim(True)  # B's claim in flight got a job: B runs it, then ends
    limits.job_done()
    assert limits.idle_expired() and not limits.begin_claim()
    assert RunLimits().begin_claim() and not RunLimits().idle_expired()  # no limits


def test_health_route_follows_the_slots_last_answer_from_the_store() -> None:
    """`/health` on `--metrics-port`: 503 "warming" until every slot loaded its engines,
    503 until every slot got an answer from its store,
    200 while the answers are recent, 503 with the silent slot's name after three leases
    (at least a minute); `/metrics` is served next to it, other paths are 404."""
    import time
    from typing import Any, cast

    import httpx
    from prometheus_client import CollectorRegistry

    from tests.support.processes import free_port
    from vidq.ops.metrics import serve_worker_metrics
    from vidq.worker.runner import Worker, WorkerOptions
    from vidq.worker.slots import WorkerGroup

    options = WorkerOptions(pools=("p",), engines={"p": "preview"}, lease_s=30.0)
    slots = [Worker(cast(Any, None), options), Worker(cast(Any, None), options)]
    group = WorkerGroup(slots)
    port = free_port()
    serve_worker_metrics(CollectorRegistry(), port, host="127.0.0.1", unhealthy=group.unhealthy)
    url = f"http://127.0.0.1:{port}"

    def health() -> httpx.Response:
        return httpx.get(f"{url}/health", timeout=5)

    warming = health()
    assert warming.status_code == 503 and warming.json()["detail"].endswith(
        "warming (loading its engines)"
    )
    for slot in slots:
        slot.ready_at = time.monotonic()  # as ``_warm`` leaves it
    first = health()
    assert first.status_code == 503 and "has not reached its job store" in first.json()["detail"]
    now = time.monotonic()
    slots[0].last_contact = now
    assert health().status_code == 503  # the second slot has not answered yet
    slots[1].last_contact = now - 80  # a long-poll ago: within three 30 s leases
    assert health().status_code == 200 and health().json() == {"status": "ok"}
    slots[1].last_contact = now - 95
    silent = health()
    assert silent.status_code == 503 and slots[1].name in silent.json()["detail"]
    assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200
    assert httpx.get(f"{url}/other", timeout=5).status_code == 404
