"""The worker against a real SQLite file, local storage and a spawned engine child."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tests.support.processes import vidq_env
from tests.support.stack import stack
from tests.support.stores import seed_sqlite
from tests.support.wait import eventually
from vidq.blobs.local import LocalBlobStore
from vidq.config import PreviewSettings
from vidq.engines.base import EngineJob
from vidq.errors import EngineCrashed, StorageUnavailable, StoreUnavailable
from vidq.jobs import JobState, NewJob, Ran
from vidq.ops.metrics import WorkerMetrics
from vidq.store import open_store
from vidq.store.base import Lease
from vidq.store.sqlite import SQLiteStore
from vidq.worker import Worker, WorkerOptions
from vidq.worker.child import EngineProcess
from vidq.worker.local import LocalSource

INPUTS = {"prompt": "x", "width": 128, "height": 128, "duration": 1}


def new_job(store: SQLiteStore, **inputs: object) -> int:
    job = store.enqueue(NewJob("alice", "wan22-fast-t2v", "wan22-t2v", 0, 0, {**INPUTS, **inputs}))
    return job.id


@pytest.fixture
def backends(tmp_path: Path) -> tuple[SQLiteStore, LocalBlobStore]:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    assert isinstance(store, SQLiteStore)
    yield store, LocalBlobStore(tmp_path / "blobs", b"k")
    store.close()


def options(**kw: object) -> WorkerOptions:
    base: dict[str, object] = {
        "pools": ("wan22-t2v",),
        "engines": {"wan22-t2v": "preview"},
        "burst": True,
        "lease_s": 5.0,
    }
    base.update(kw)
    return WorkerOptions(**base)  # type: ignore[arg-type]


def test_burst_worker_completes_jobs_and_uploads_per_attempt(
    backends: tuple[SQLiteStore, LocalBlobStore],
) -> None:
    store, storage = backends
    ids = [new_job(store) for _ in range(2)]
    assert Worker(LocalSource(store, storage), options(), reaper=store).run() == 2
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None and job.state is JobState.COMPLETED
        assert job.result_key == f"outputs/free/{job_id}_0_Preview_T2V_00001.mp4"
        assert storage.exists(job.result_key)
        assert job.result_meta["frames"] == 17


def test_a_worker_loads_its_engine_before_its_first_claim(
    backends: tuple[SQLiteStore, LocalBlobStore],
) -> None:
    """A (non-burst) worker starts its engine child before it claims anything: ``/health``
    says "warming" until then, and the startup metric holds how long it took; the first
    job then finds the engine loaded."""
    store, storage = backends
    registry = CollectorRegistry()
    worker = Worker(
        LocalSource(store, storage), options(burst=False, poll_s=0.05), WorkerMetrics(registry)
    )
    assert worker.unhealthy() == f"{worker.name}: warming (loading its engines)"
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        eventually(lambda: worker.ready_at is not None, 30, what="the worker to be ready")
        assert worker._engines["preview"].alive  # loaded, and no job was queued
        startup = registry.get_sample_value("vidq_worker_startup_seconds", {"slot": "cpu"})
        assert startup == pytest.approx(worker.ready_at - worker.started)  # type: ignore[operator]
        job_id = new_job(store)
        eventually(lambda: store.get(job_id).state is JobState.COMPLETED, 30)  # type: ignore[union-attr]
    finally:
        worker.stop()
        thread.join(30)


def test_admin_workers_shows_a_worker_warming_while_its_engine_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a worker loads its engine (held here in a slow start) `/admin/workers` says
    ``warming`` and its ``/health`` says so; once loaded, its first claim says ``ready``."""
    loading, go = threading.Event(), threading.Event()
    real_start = EngineProcess.start

    def slow_start(self: EngineProcess) -> None:
        loading.set()
        assert go.wait(30)
        real_start(self)

    monkeypatch.setattr(EngineProcess, "start", slow_start)
    with stack(tmp_path / "data", workers=0) as server:
        admin = server.client(server.admin_token)

        def state() -> str | None:
            rows = {w["name"]: w for w in admin.get("/admin/workers").json()["workers"]}
            return rows.get("loader", {}).get("state")

        thread = server.start_worker(name="loader")
        try:
            assert loading.wait(30)
            assert state() == "warming"
            assert thread.worker.unhealthy() == "loader: warming (loading engine preview)"
            go.set()
            eventually(lambda: state() == "ready", 30, what="the worker to be ready")
            assert thread.worker.unhealthy() is None
        finally:
            go.set()
            thread.stop()
        assert state() == "stopped"


def test_admin_workers_shows_a_worker_draining_its_job_then_stopped(tmp_path: Path) -> None:
    """Asked to stop mid-job (SIGTERM's drain), a worker says ``draining`` with its
    current job, finishes it, and says ``stopped``."""
    with stack(tmp_path / "data", workers=0, preview_step_seconds=0.5, lease_seconds=1) as s:
        admin = s.client(s.admin_token)
        client = s.client(s.token("alice"))

        def row() -> dict[str, object]:
            rows = {w["name"]: w for w in admin.get("/admin/workers").json()["workers"]}
            return dict(rows.get("drainer", {}))

        thread = s.start_worker(name="drainer")
        body = {"prompt": "x", "width": 128, "height": 128, "duration": 1}
        rid = client.post("/queue/wan22-fast-t2v", json=body).json()["request_id"]
        busy = eventually(lambda: (r := row()).get("current_job") == int(rid) and r, 30,
                          what="the worker to run the job")  # fmt: skip
        assert busy["state"] == "ready"
        thread.worker.stop()  # drain
        draining = eventually(lambda: (r := row()).get("state") == "draining" and r, 30,
                              what="the worker to say draining")  # fmt: skip
        assert draining["current_job"] == int(rid)
        assert thread.join(60) == 1
        stopped = row()
        assert stopped["state"] == "stopped" and stopped["current_job"] is None
        status = client.get(f"/queue/wan22-fast-t2v/requests/{rid}/status").json()
        assert status["status"] == "COMPLETED"


def test_warmup_runs_a_tiny_generation_and_a_burst_worker_loads_on_its_first_job(
    backends: tuple[SQLiteStore, LocalBlobStore],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, storage = backends
    starts: list[str] = []
    real_start = EngineProcess.start

    def start(self: EngineProcess) -> None:
        starts.append(self.engine_name)
        real_start(self)

    monkeypatch.setattr(EngineProcess, "start", start)
    # A burst worker on an empty queue exits without loading anything.
    assert Worker(LocalSource(store, storage), options()).run() == 0
    assert starts == []
    # With warmup it loads and runs one tiny text-to-video job first (then finds no job).
    caplog.set_level(logging.INFO, logger="vidq.worker.runner")
    assert Worker(LocalSource(store, storage), options(warmup=True)).run() == 0
    assert starts == ["preview"]
    assert "engine preview warm-up run (wan22-fast-t2v) took" in caplog.text
    assert store.get(1) is None  # the warm-up is no job of the queue's


def test_engine_crash_fails_the_attempt_and_the_child_restarts(tmp_path: Path) -> None:
    engine = EngineProcess("preview", PreviewSettings(step_seconds=1.0))
    job = EngineJob(1, "wan22-fast-t2v", "t2v", "fast", INPUTS, {}, str(tmp_path / "o.mp4"), 4)
    killer = threading.Timer(1.5, lambda: os.kill(engine._proc.pid, signal.SIGKILL))  # type: ignore[union-attr]
    try:
        engine.start()
        killer.start()
        with pytest.raises(EngineCrashed, match="exit code -9"):
            engine.run(job, lambda d, t: None, lambda: False)
        fast = EngineProcess("preview")
        result = fast.run(
            job, lambda d, t: None, lambda: False
        )  # a fresh child serves the next job
        assert result.meta["frames"] == 17 and (tmp_path / "o.mp4").stat().st_size > 0
        fast.stop()
    finally:
        killer.cancel()
        engine.stop()


_FORK_SERVER_MAPS = """
import json, os, sys
from vidq.worker.child import EngineProcess
engine = EngineProcess(sys.argv[1])
try:
    engine.start()
except Exception as exc:  # the wan engine without weights: its fork server stays
    print(type(exc).__name__, file=sys.stderr)
def forkserver(pid):  # a child that exits during the scan (the failed engine's) is skipped
    try:
        parent = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]
        return parent == str(os.getpid()) and (
            b"multiprocessing.forkserver" in open(f"/proc/{pid}/cmdline", "rb").read()
        )
    except (FileNotFoundError, ProcessLookupError):
        return False
(server,) = [pid for pid in os.listdir("/proc") if pid.isdigit() and forkserver(pid)]
maps = open(f"/proc/{server}/maps").read()
print(json.dumps({lib: lib in maps for lib in ("libavcodec", "_multiarray_umath", "libtorch")}))
engine.stop()
"""


@pytest.mark.parametrize(
    ("engine", "held"),
    [("preview", {"libavcodec": True, "_multiarray_umath": True, "libtorch": False}),
     ("wan", {"libavcodec": True, "_multiarray_umath": True, "libtorch": False})],
)  # fmt: skip
def test_the_fork_server_holds_the_media_imports_and_never_torch(
    engine: str, held: dict[str, bool]
) -> None:
    """A worker's fork server imports the preview engine's module (FFmpeg, numpy) once,
    whatever engine started it, so each engine child it forks starts without importing
    them; never torch, which an engine child loads itself after it has chosen its GPU."""
    if engine == "wan":
        pytest.importorskip("torch")
    out = subprocess.run(
        [sys.executable, "-c", _FORK_SERVER_MAPS, engine],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == held


# `vidq worker --burst` as the command builds it (vidq.compose), in a process that then says
# which media libraries it loaded.
_WORKER_LOADS = """
import json, sys
from vidq.compose import build_worker
from vidq.config import Settings
done = build_worker(Settings.load(), burst=True).run()
loaded = sorted(m for m in ("av", "numpy", "PIL") if m in sys.modules)
print(json.dumps({"done": done, "loaded": loaded}))
"""


def test_the_engine_child_describes_the_output_and_the_worker_loads_no_media(
    tmp_path: Path,
) -> None:
    """The engine child reports the video's facts and writes its poster frame (it holds
    PyAV, NumPy and Pillow already); the worker process stores both and never imports
    them (a quarter of a second of CPU at each worker's start)."""
    data = tmp_path / "data"
    seed_sqlite(data)
    store = open_store(f"sqlite:///{data / 'vidq.db'}")
    try:
        job_id = new_job(store)
        out = subprocess.run(
            [sys.executable, "-c", _WORKER_LOADS], env=vidq_env(data),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"done": 1, "loaded": []}
        job = store.get(job_id)
        assert job is not None and job.state is JobState.COMPLETED, job
        assert job.result_meta["video"] == {
            "width": 128, "height": 128, "fps": 16.0, "frames": 17, "seconds": 1.062
        }  # fmt: skip
        assert job.result_meta["poster"] is True
    finally:
        store.close()


def test_crash_is_retried_then_failed_after_max_attempts(
    backends: tuple[SQLiteStore, LocalBlobStore],
) -> None:
    store, storage = backends
    job_id = store.enqueue(
        NewJob("alice", "wan22-fast-t2v", "wan22-t2v", 0, 0, INPUTS, max_attempts=2)
    ).id
    worker = Worker(
        LocalSource(store, storage),
        options(engine_settings={"preview": PreviewSettings(step_seconds=0.5)}),
        reaper=store,
    )
    stop = threading.Event()

    def kill_children() -> None:
        # Kill the engine child of each attempt once it runs the job (it reported a step):
        # a child killed while it loads is a failed start, which holds the engine down
        # after VIDQ_ENGINE_LOAD_FAILURES of them (test_comfyui.py) instead of failing jobs.
        while not stop.is_set():
            job = store.get(job_id)
            if job is not None and job.state is JobState.RUNNING and job.progress_done >= 1:
                for engine in list(worker._engines.values()):
                    if engine.alive and engine._proc is not None and engine._proc.pid:
                        os.kill(engine._proc.pid, signal.SIGKILL)
            time.sleep(0.05)

    t = threading.Thread(target=kill_children, daemon=True)
    t.start()
    try:
        worker.run()
    finally:
        stop.set()
        t.join()
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempt == 2
    assert job.error is not None and "crashed" in job.error
    assert storage.keys("outputs/") == []


def test_a_worker_that_lost_its_lease_does_not_complete_and_deletes_its_upload(
    backends: tuple[SQLiteStore, LocalBlobStore], tmp_path: Path
) -> None:
    store, storage = backends
    job_id = new_job(store)
    source = LocalSource(store, storage)
    claimed = source.claim("w", ["wan22-t2v"], {}, 30)
    assert claimed is not None
    original_complete = store.complete

    def steal_then_complete(
        jid: int, token: str, key: str, meta: dict[str, object], ran: Ran = Ran()
    ) -> bool:
        # Just before completing, another worker takes the job over (as after a lease
        # expiry); the stale worker's fenced complete must change nothing.
        with closing(sqlite3.connect(tmp_path / "vidq.db", isolation_level=None)) as conn:
            conn.execute("UPDATE jobs SET lease_token = 'other' WHERE id = ?", (jid,))
        assert storage.exists(key)
        return original_complete(jid, token, key, meta, ran)

    store.complete = steal_then_complete  # type: ignore[method-assign]
    worker = Worker(source, options(), reaper=store)
    worker.execute(claimed)
    job, held = store.get(job_id), store.claimed(job_id)
    assert job is not None and job.state is JobState.RUNNING
    assert held is not None and held.lease_token == "other"
    assert storage.keys("outputs/") == []  # the stale upload was deleted


class _FullStorage(LocalBlobStore):
    """Local storage whose uploads fail as a full disk would; records, on the database
    clock, when each attempt's upload failed and when that attempt was claimed."""

    def __init__(self, root: Path, store: SQLiteStore) -> None:
        super().__init__(root, b"k")
        self.store = store
        self.attempts: list[tuple[float, float]] = []  # (claimed at, failed at)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        job = self.store.get(int(key.rsplit("/", 1)[1].split("_", 1)[0]))
        assert job is not None and job.started_at is not None
        self.attempts.append((job.started_at, self.store.now()))
        raise StorageUnavailable("No space left on device")


def test_storage_failures_back_off_between_attempts(
    backends: tuple[SQLiteStore, LocalBlobStore], tmp_path: Path
) -> None:
    """Issue 12, row 10: a full disk must not burn every attempt within 100 ms."""
    store, _ = backends
    storage = _FullStorage(tmp_path / "full", store)
    job_id = new_job(store)
    # No upload retries within an attempt (test_storage_full.py covers those): each
    # attempt's upload fails once, and this is about the waits between attempts.
    opts = options(retry_backoff_s=0.4, upload_retry_s=0.0)
    Worker(LocalSource(store, storage), opts, reaper=store).run()  # burst: waits for retries
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempt == 3
    assert "No space left on device" in (job.error or "")
    assert len(storage.attempts) == 3
    waits = [storage.attempts[i + 1][0] - storage.attempts[i][1] for i in range(2)]
    # 0.4 s then 0.8 s nominal, jitter takes off at most half
    assert waits[0] >= 0.2 and waits[1] >= 0.4, waits


@pytest.mark.parametrize("committed", [True, False])
def test_an_attempt_whose_complete_is_in_doubt_keeps_its_upload_until_an_end_rules_it_out(
    backends: tuple[SQLiteStore, LocalBlobStore], tmp_path: Path, committed: bool
) -> None:
    """The store went away during the complete and the loop gave up: the upload may be the
    job's result. The attempt then fails; a fail the store refuses (the complete had
    committed) keeps it, a fail it records (it had not) deletes it."""
    store, storage = backends
    job_id = new_job(store)
    attempt = LocalSource(store, storage).claim("w", ["wan22-t2v"], {}, 30)
    assert attempt is not None
    output = tmp_path / "output.mp4"
    output.write_bytes(b"\x00\x00\x00\x18ftypmp42 video")
    attempt.upload(output, "Test")
    key = f"outputs/free/{job_id}_0_Test_00001.mp4"
    assert storage.exists(key)
    real = store.complete

    def outage(
        jid: int, token: str, result_key: str, meta: dict[str, object], ran: Ran = Ran()
    ) -> bool:
        if committed:
            real(jid, token, result_key, meta, ran)
        raise StoreUnavailable("connection lost")

    store.complete = outage  # type: ignore[method-assign]
    with pytest.raises(StoreUnavailable):
        attempt.complete({"engine": "preview"})
    assert storage.exists(key)  # in doubt: kept while the loop may still retry
    assert attempt.fail("gave up", "unavailable", retry=True, retry_after_s=0) is not committed
    job = store.get(job_id)
    assert job is not None
    if committed:
        assert job.state is JobState.COMPLETED and job.result_key == key and storage.exists(key)
    else:
        assert job.state is JobState.RETRY and storage.keys("outputs/") == []


def test_a_lost_attempt_deletes_its_upload_and_a_retry_sweeps_earlier_ones(
    backends: tuple[SQLiteStore, LocalBlobStore], tmp_path: Path
) -> None:
    store, storage = backends
    job_id = new_job(store)
    source = LocalSource(store, storage)
    first = source.claim("w1", ["wan22-t2v"], {}, 0.2)
    assert first is not None
    output = tmp_path / "output.mp4"
    output.write_bytes(b"video")
    first.upload(output, "Test")  # then the worker is cut off; its lease runs out
    stale = f"outputs/free/{job_id}_0_Test_00001.mp4"
    assert storage.exists(stale)
    time.sleep(0.4)
    assert store.reap().retried == [job_id]
    second = source.claim("w2", ["wan22-t2v"], {}, 30)
    assert second is not None and second.job.attempt == 2
    assert not storage.exists(stale)  # the claim of a retry swept the earlier upload
    assert first.heartbeat() is Lease.LOST
    second.upload(output, "Test")
    with closing(sqlite3.connect(tmp_path / "vidq.db", isolation_level=None)) as conn:
        conn.execute("UPDATE jobs SET lease_token = 'other' WHERE id = ?", (job_id,))
    assert not second.complete({})  # lost: the upload is not kept
    assert storage.keys("outputs/") == []
