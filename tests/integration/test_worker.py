"""The worker against a real SQLite file, local storage and a spawned engine child."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import pytest

from vidq.config import PreviewSettings
from vidq.engines.base import EngineJob
from vidq.errors import EngineCrashed, StorageUnavailable
from vidq.jobs import JobState, NewJob
from vidq.storage.local import LocalBlobStore
from vidq.store import open_store
from vidq.store.sqlite import SQLiteStore
from vidq.worker import Worker, WorkerOptions
from vidq.worker.child import EngineProcess

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
    assert Worker(store, storage, options()).run() == 2
    for job_id in ids:
        job = store.get(job_id)
        assert job is not None and job.state is JobState.COMPLETED
        assert job.result_key == f"outputs/free/{job_id}_0_Preview_T2V_00001.mp4"
        assert storage.exists(job.result_key)
        assert job.result_meta["frames"] == 17


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


def test_crash_is_retried_then_failed_after_max_attempts(
    backends: tuple[SQLiteStore, LocalBlobStore],
) -> None:
    store, storage = backends
    job_id = store.enqueue(
        NewJob("alice", "wan22-fast-t2v", "wan22-t2v", 0, 0, INPUTS, max_attempts=2)
    ).id
    worker = Worker(
        store, storage, options(engine_settings={"preview": PreviewSettings(step_seconds=0.5)})
    )
    stop = threading.Event()

    def kill_children() -> None:  # kill every engine child as soon as it appears
        while not stop.is_set():
            for engine in list(worker._engines.values()):
                if engine.alive and engine._proc is not None and engine._proc.pid:
                    os.kill(engine._proc.pid, signal.SIGKILL)
            time.sleep(0.3)

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
    claimed = store.claim(["wan22-t2v"], "w", 30)
    assert claimed is not None
    original_complete = store.complete

    def steal_then_complete(jid: int, token: str, key: str, meta: dict[str, object]) -> bool:
        # Just before completing, another worker takes the job over (as after a lease
        # expiry); the stale worker's fenced complete must change nothing.
        with closing(sqlite3.connect(tmp_path / "vidq.db", isolation_level=None)) as conn:
            conn.execute("UPDATE jobs SET lease_token = 'other' WHERE id = ?", (jid,))
        assert storage.exists(key)
        return original_complete(jid, token, key, meta)

    store.complete = steal_then_complete  # type: ignore[method-assign]
    worker = Worker(store, storage, options())
    worker.execute(claimed)
    job = store.get(job_id)
    assert job is not None and job.state is JobState.RUNNING and job.lease_token == "other"
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
    Worker(store, storage, opts).run()  # burst: waits for the retries
    job = store.get(job_id)
    assert job is not None and job.state is JobState.FAILED and job.attempt == 3
    assert "No space left on device" in (job.error or "")
    assert len(storage.attempts) == 3
    waits = [storage.attempts[i + 1][0] - storage.attempts[i][1] for i in range(2)]
    # 0.4 s then 0.8 s nominal, jitter takes off at most half
    assert waits[0] >= 0.2 and waits[1] >= 0.4, waits
