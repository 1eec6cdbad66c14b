"""Operators' routes on the scale-out adapters, in process: /health, /ready (database and
storage), and that an unreachable S3 is a 503, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.support.servers import SeaweedServer, free_port
from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.s3 import S3BlobStore
from vidq.config import Settings
from vidq.errors import StorageUnavailable
from vidq.store import JobStore, open_store

LOCAL = "http://localhost"  # a Host the API answers without VIDQ_PUBLIC_URL


@pytest.fixture
def pg_store(pg_head_url: str) -> Iterator[JobStore]:
    store = open_store(pg_head_url)
    try:
        yield store
    finally:
        store.close()


def test_ready_reports_each_dependency(pg_store: JobStore, seaweed: SeaweedServer) -> None:
    good = S3BlobStore("ready", endpoint_url=seaweed.endpoint, access_key=seaweed.access_key,
                       secret_key=seaweed.secret_key)  # fmt: skip
    with TestClient(create_app(Settings(), pg_store, good), base_url=LOCAL) as client:
        assert client.get("/health").json() == {"status": "ok"}
        r = client.get("/ready")
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}
    dead = S3BlobStore("ready", endpoint_url=f"http://127.0.0.1:{free_port()}",
                       access_key="a", secret_key="b")  # fmt: skip
    token = create_token(pg_store, "alice")
    with TestClient(
        create_app(Settings(), pg_store, dead), base_url=LOCAL, raise_server_exceptions=False
    ) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["checks"]["database"] == "ok"
        assert "S3" in r.json()["checks"]["storage"]
        # A submit whose job would be fine still works: t2v stores no input blobs.
        body = {"prompt": "x", "width": 128, "height": 128, "duration": 1}
        auth = {"Authorization": f"Bearer {token}"}
        r = c.post("/queue/wan22-fast-t2v", json=body, headers=auth)
        assert r.status_code == 200
        claimed = pg_store.claim(["wan22-t2v"], "w", 30)
        assert claimed is not None and claimed.lease_token
        job = claimed.job
        assert pg_store.complete(job.id, claimed.lease_token, "outputs/free/x.mp4", {})
        # Fetching the result needs S3: 503 with Retry-After, not 500.
        r = c.get(f"/queue/wan22-fast-t2v/requests/{job.id}", headers=auth)
        assert r.status_code == 503 and r.headers["retry-after"], r.text
    good.close()
    dead.close()


class _FullDisk(LocalBlobStore):
    """Local storage that is reachable but cannot take a write (ENOSPC)."""

    full = True
    writes = 0

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self.writes += 1
        if self.full:
            raise StorageUnavailable("No space left on device")
        super().put_bytes(key, data, content_type)


def test_ready_says_when_storage_takes_no_writes(tmp_path: Path) -> None:
    """Issue 12, row 10: a full disk answers a reachability check but not a write."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    storage = _FullDisk(tmp_path / "blobs", b"k")
    storage.check()  # reachable and the folder is writable: the old probe said ok
    try:
        with TestClient(create_app(Settings(), store, storage), base_url=LOCAL) as client:
            r = client.get("/ready")
            assert r.status_code == 503, r.text
            assert r.json()["checks"] == {"database": "ok", "storage": "No space left on device"}
            assert client.get("/ready").status_code == 503
            assert storage.writes == 1  # one probe write answers for a few seconds
            storage.full = False
            client.app.state.ctx.storage_probe = (float("-inf"), None)  # type: ignore[attr-defined]
            assert client.get("/ready").status_code == 200
            assert storage.keys("ready/") == []  # the probe object is deleted
    finally:
        store.close()
