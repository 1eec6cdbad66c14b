"""Operators' routes on the scale-out adapters, in process: /health, /ready (database and
storage), and that an unreachable S3 is a 503, never a 500."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.servers import SeaweedServer, free_port
from vidq.api import create_app
from vidq.api.auth import create_token
from vidq.config import Settings
from vidq.storage.s3 import S3BlobStore
from vidq.store import JobStore, open_store


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[JobStore]:
    store = open_store(pg_url)
    try:
        yield store
    finally:
        store.close()


def test_ready_reports_each_dependency(pg_store: JobStore, seaweed: SeaweedServer) -> None:
    good = S3BlobStore("ready", endpoint_url=seaweed.endpoint, access_key=seaweed.access_key,
                       secret_key=seaweed.secret_key)  # fmt: skip
    with TestClient(create_app(Settings(), pg_store, good)) as client:
        assert client.get("/health").json() == {"status": "ok"}
        r = client.get("/ready")
        assert r.status_code == 200 and r.json()["checks"] == {"database": "ok", "storage": "ok"}
    dead = S3BlobStore("ready", endpoint_url=f"http://127.0.0.1:{free_port()}",
                       access_key="a", secret_key="b")  # fmt: skip
    token = create_token(pg_store, "alice")
    with TestClient(create_app(Settings(), pg_store, dead), raise_server_exceptions=False) as c:
        r = c.get("/ready")
        assert r.status_code == 503 and r.headers["retry-after"]
        assert r.json()["checks"]["database"] == "ok"
        assert "S3" in r.json()["checks"]["storage"]
        # A submit whose job would be fine still works: t2v stores no input blobs.
        body = {"prompt": "x", "width": 128, "height": 128, "duration": 1}
        auth = {"Authorization": f"Bearer {token}"}
        r = c.post("/queue/wan22-fast-t2v", json=body, headers=auth)
        assert r.status_code == 200
        job = pg_store.claim(["wan22-t2v"], "w", 30)
        assert job is not None and job.lease_token
        assert pg_store.complete(job.id, job.lease_token, "outputs/free/x.mp4", {})
        # Fetching the result needs S3: 503 with Retry-After, not 500.
        r = c.get(f"/queue/wan22-fast-t2v/requests/{job.id}", headers=auth)
        assert r.status_code == 503 and r.headers["retry-after"], r.text
    good.close()
    dead.close()
