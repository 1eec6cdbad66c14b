"""A worker whose fenced complete meets a store outage: it retries the complete instead of
throwing away an uploaded output, and survives a commit whose answer was lost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.media import probe_mp4
from vidq.blobs.local import LocalBlobStore
from vidq.errors import StoreUnavailable
from vidq.jobs import JobState, NewJob, Ran, poster_key
from vidq.store import open_store
from vidq.store.sqlite import SQLiteStore
from vidq.worker import Worker, WorkerOptions
from vidq.worker.local import LocalSource

POOL = "wan22-t2v"


class FlakyComplete(SQLiteStore):
    """A real SQLite store whose first ``complete`` calls fail like a database outage;
    with ``commit_first`` the first one commits and then loses its answer."""

    def __init__(self, path: str, failures: int, commit_first: bool) -> None:
        super().__init__(path)
        self.failures = failures
        self.commit_first = commit_first
        self.calls = 0

    def complete(
        self, job_id: int, token: str, result_key: str, meta: dict[str, Any], ran: Ran = Ran()
    ) -> bool:
        self.calls += 1
        if self.calls == 1 and self.commit_first:
            super().complete(job_id, token, result_key, meta, ran)
            raise StoreUnavailable("connection lost after commit")
        if self.calls <= self.failures:
            raise StoreUnavailable("database is down")
        return super().complete(job_id, token, result_key, meta, ran)


@pytest.mark.parametrize("commit_first", [False, True])
def test_complete_is_retried_through_an_outage(tmp_path: Path, commit_first: bool) -> None:
    url = f"sqlite:///{tmp_path / 'vidq.db'}"
    open_store(url).close()
    store = FlakyComplete(str(tmp_path / "vidq.db"), failures=3, commit_first=commit_first)
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    job = store.enqueue(
        NewJob(
            user="alice",
            model_id="wan22-fast-t2v",
            pool=POOL,
            tier=0,
            priority=0,
            inputs={"prompt": "x", "width": 128, "height": 128, "duration": 1, "priority": 0},
        )
    )
    options = WorkerOptions(pools=(POOL,), engines={POOL: "preview"}, burst=True)
    worker = Worker(LocalSource(store, blobs), options, reaper=store)
    assert worker.run() == 1
    done = store.get(job.id)
    assert done is not None and done.state is JobState.COMPLETED and done.attempt == 1
    assert store.calls >= 2
    # kept, exactly one, with its poster frame
    assert blobs.keys("outputs/") == sorted([done.result_key, poster_key(done.result_key or "")])
    info = probe_mp4(blobs.get_bytes(done.result_key or ""), tmp_path)
    assert (info.width, info.height, info.frames) == (128, 128, 17)
    store.close()
