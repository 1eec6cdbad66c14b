"""A full storage (ENOSPC faked in the local storage's writes): a submit answers 507 and
stores nothing, status polls keep being answered, and a worker whose upload fails retries
it instead of losing the finished video."""

from __future__ import annotations

import errno
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.media import b64, encode_image, picture
from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs import local
from vidq.blobs.local import LocalBlobStore
from vidq.config import Settings
from vidq.jobs import JobState, NewJob
from vidq.store import open_store
from vidq.store.base import JobStore
from vidq.worker import Worker, WorkerOptions
from vidq.worker.local import LocalSource

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}


class DiskFull:
    """``tempfile.mkstemp`` of the local storage, failing with ENOSPC ``times`` times
    (forever when None)."""

    def __init__(self, times: int | None = None) -> None:
        self.times = times
        self.failed = 0
        self.real = tempfile.mkstemp

    def __call__(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        if self.times is None or self.failed < self.times:
            self.failed += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(*args, **kwargs)


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[tuple[JobStore, LocalBlobStore]]:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    yield store, LocalBlobStore(tmp_path / "blobs", b"k")
    store.close()


def _files(storage: LocalBlobStore) -> list[Path]:
    return [p for p in storage.root.rglob("*") if p.is_file()]


def test_a_submit_on_a_full_disk_is_507_and_stores_nothing(
    backends: tuple[JobStore, LocalBlobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, storage = backends
    token = create_token(store, "alice")
    app = create_app(Settings(), store, storage)
    with TestClient(app, base_url="http://localhost") as client:
        client.headers["Authorization"] = f"Bearer {token}"
        earlier = client.post("/queue/wan22-fast-t2v", json=SMALL).json()["request_id"]
        monkeypatch.setattr(local.tempfile, "mkstemp", DiskFull())
        image = f"data:image/png;base64,{b64(encode_image(picture(128, 128), 'PNG'))}"
        r = client.post("/queue/wan22-fast-i2v", json={**SMALL, "data_uri": image})
        assert r.status_code == 507, r.text
        assert "full" in r.json()["detail"]
        fal = client.post("/queue/vidq/wan22-fast-i2v", json={**SMALL, "data_uri": image})
        assert fal.status_code == 507
        assert _files(storage) == []  # no half-written input is left
        every = store.admin_jobs(user=None, states=(), pool=None, since=0, limit=10)
        assert [j.id for j in every] == [int(earlier)]  # nothing was queued
        status = client.get(f"/queue/wan22-fast-t2v/requests/{earlier}/status")
        assert status.status_code == 200 and status.json()["status"] == "IN_QUEUE"


def test_a_worker_retries_an_upload_that_failed_for_a_full_disk(
    backends: tuple[JobStore, LocalBlobStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, storage = backends
    job = store.enqueue(NewJob("alice", "wan22-fast-t2v", "wan22-t2v", 0, 0, dict(SMALL)))
    full = DiskFull(times=2)
    monkeypatch.setattr(local.tempfile, "mkstemp", full)
    options = WorkerOptions(
        pools=("wan22-t2v",), engines={"wan22-t2v": "preview"}, burst=True, lease_s=5.0,
        upload_retry_s=30.0,
    )  # fmt: skip
    assert Worker(LocalSource(store, storage), options, reaper=store).run() == 1
    done = store.get(job.id)
    assert done is not None and done.state is JobState.COMPLETED, done
    assert done.attempt == 1 and full.failed == 2  # the same attempt, uploaded on its 3rd try
    assert done.result_key is not None and storage.exists(done.result_key)
