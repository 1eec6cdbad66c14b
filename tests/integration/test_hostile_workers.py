"""The worker protocol attacked by a worker token holder: upload URLs only the API can sign,
for its own attempt's output key; nothing answered about a job before its lease is checked;
a released attempt's number never reused; what a worker reports checked before users see it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.integration.test_worker_protocol import POOL, T2V, VIDEO, Api, output_key
from tests.support.servers import SeaweedServer
from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.s3 import S3BlobStore
from vidq.config import Settings
from vidq.store import open_store


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, lease_s=30)
    with a.client:
        yield a
    a.store.close()


def _self_signed(job: dict[str, Any], key: str, data: bytes, url: str) -> str:
    """An upload URL for ``key`` that a worker signs itself with the lease it holds (what the
    URLs were keyed by)."""
    sha = hashlib.sha256(data).hexdigest()
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    msg = f"{job['id']}\n{key}\n{len(data)}\n{sha}\n{expires}".encode()
    signature = hmac.new(job["lease_token"].encode(), msg, hashlib.sha256).hexdigest()
    query = urlencode({"size": len(data), "sha256": sha, "expires": expires,
                       "signature": signature})  # fmt: skip
    return f"/worker/v1/uploads/{job['id']}/{key}?{query}"


def test_a_worker_cannot_write_any_other_key(api: Api) -> None:
    """With the lease of its own job, a worker once signed PUTs for any key: another
    pool's output keys, users' inputs and uploads. Only the API signs now, and only this
    attempt's output key."""
    api.submit()
    job = api.claim()["job"]
    _, _, url = api.upload(job)
    for key in (
        "outputs/pro/99_0_Test_00001.mp4",
        "inputs/alice/1/data_uri",
        "uploads/alice/abc/x.png",
        output_key(job),
    ):
        answer = api.client.put(_self_signed(job, key, VIDEO, url), content=VIDEO)
        assert answer.status_code == 403, (key, answer.text)
        assert not api.blobs.exists(key)
    assert api.blobs.keys("") == []


def test_nothing_is_answered_about_a_job_before_its_lease(api: Api) -> None:
    rid = api.submit()
    job = api.claim()["job"]
    key, sha, url = api.upload(job)
    assert api.put(url).status_code == 201
    forged = {**job, "lease_token": "made-up"}
    # running: a made-up lease learns neither the object's size nor that the key is its
    r = api.complete(forged, key, sha, size=4)
    assert r.status_code == 409 and "bytes" not in r.text, r.text
    assert api.blobs.exists(key)  # and the running attempt's upload is left alone
    assert api.complete(job, key, sha).json() == {"completed": True, "replayed": False}
    # completed: only the attempt that won is told so
    r = api.complete(forged, key, sha)
    assert r.status_code == 409 and "replayed" not in r.text, r.text
    assert api.blobs.exists(key)  # the result is never deleted by whoever names it
    assert api.complete(job, key, sha).json() == {"completed": True, "replayed": True}
    # a worker token of another pool does not see the job at all
    other = create_token(api.store, "gpu-3", worker=True, pools=["wan22-i2v"])
    for path, body in ((f"/worker/v1/jobs/{rid}/complete",
                        {"lease_token": job["lease_token"], "key": key, "size": len(VIDEO),
                         "sha256": sha}),
                       (f"/worker/v1/jobs/{rid}/upload",
                        {"lease_token": job["lease_token"], "key": key, "size": 1,
                         "sha256": "0" * 64})):  # fmt: skip
        assert api.call(other, "POST", path, body).status_code == 404


def test_what_a_worker_reports_is_checked(api: Api) -> None:
    rid = api.submit()
    job = api.claim()["job"]
    bad = {"lease_token": job["lease_token"], "done": 5, "total": 1}
    r = api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/progress", bad)
    assert r.status_code == 422, r.text
    key, sha, url = api.upload(job)
    assert api.put(url).status_code == 201
    body = {"lease_token": job["lease_token"], "key": key, "size": len(VIDEO), "sha256": sha,
            "meta": {"engine": "preview", "file_size": -1,
                     "video": {"width": "<b>wide</b>", "height": 128, "fps": True,
                               "seconds": 1.5, "extra": "x" * 100}}}  # fmt: skip
    r = api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/complete", body)
    assert r.json() == {"completed": True, "replayed": False}
    result = api.call(api.user, "GET", f"/queue/vidq/{T2V}/requests/{rid}").json()
    assert result["video"]["file_size"] == len(VIDEO)
    # the video's facts the worker reported: its numbers only, the size the API checked
    output = api.call(api.user, "GET", f"/requests/{rid}").json()["output"]
    assert output == {"width": None, "height": 128, "fps": None, "frames": None,
                      "seconds": 1.5, "file_size": len(VIDEO)}  # fmt: skip


def test_a_released_attempt_number_is_not_reused(api: Api) -> None:
    """A release gave the next attempt the released one's number: its upload then met the
    released attempt's object (409), or completed with it."""
    rid = api.submit()
    first = api.claim()["job"]
    key1, _, url1 = api.upload(first)
    assert api.put(url1).status_code == 201
    release = {"lease_token": first["lease_token"]}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/release", release).is_success
    second = api.claim()["job"]
    assert second["attempt"] == first["attempt"] + 1
    assert not api.blobs.exists(key1)  # the released attempt's upload is swept at the claim
    key2, sha2, url2 = api.upload(second, VIDEO + b"2")
    assert key2 != key1 and api.put(url2, VIDEO + b"2").status_code == 201
    done = api.complete(second, key2, sha2, size=len(VIDEO) + 1)
    assert done.json()["completed"] and api.blobs.get_bytes(key2) == VIDEO + b"2"
    assert POOL == second["pool"]


def test_a_worker_token_keeps_a_bounded_number_of_names(tmp_path: Path) -> None:
    """2000 claims under distinct names once made 2000 'live workers' (12 MB of
    /admin/workers); made-up pools in `engines` went into the registry too."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    try:
        app = create_app(
            Settings.load(limits={"max_workers_per_token": 3}), store,
            LocalBlobStore(tmp_path / "blobs", b"k" * 32),
        )  # fmt: skip
        worker = create_token(store, "gpu", worker=True)
        admin = create_token(store, "ops", admin=True)
        with TestClient(app, "http://localhost") as client:

            def claim(name: str, **extra: Any) -> Any:
                body = {"worker": name, "pools": [POOL], **extra}
                return client.post("/worker/v1/claim", json=body,
                                   headers={"Authorization": f"Bearer {worker}"})  # fmt: skip

            assert [claim(f"w{i}").status_code for i in range(3)] == [200, 200, 200]
            refused = claim("w3")
            assert refused.status_code == 429 and refused.json()["limit"] == "max_workers_per_token"
            assert claim("w0").status_code == 200  # a name it has is always refreshed
            bad = claim("w1", engines={"not-a-pool": "preview"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "engines"]
            bad = claim("w1", engines={POOL: "made-up"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "engines"]

            # An announce (a worker not claiming) is held to the same names and engines.
            def announce(name: str, **extra: Any) -> Any:
                body = {"worker": name, "pools": [POOL], "state": "engine_down", **extra}
                return client.post("/worker/v1/announce", json=body,
                                   headers={"Authorization": f"Bearer {worker}"})  # fmt: skip

            refused = announce("w4", reason="down")
            assert refused.status_code == 429 and refused.json()["limit"] == "max_workers_per_token"
            bad = announce("w1", engines={"not-a-pool": "preview"})
            assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "engines"]
            assert announce("w2", reason="comfyui refused").json() == {"ok": True}
            listed = client.get("/admin/workers", headers={"Authorization": f"Bearer {admin}"})
            rows = {w["name"]: w for w in listed.json()["workers"]}
            assert sorted(rows) == ["w0", "w1", "w2"]
            assert (rows["w2"]["state"], rows["w2"]["state_reason"]) == (
                "engine_down", "comfyui refused"
            )  # fmt: skip
            assert rows["w1"]["state"] == "ready"
    finally:
        store.close()


@pytest.mark.s3
def test_s3_completes_are_checked_by_the_checksum_s3_verified(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete on S3 once read the whole object back onto the API's disk to hash it
    (up to 10,000 parts of 64 MiB, declared by the worker): now the PUT carries the sha256,
    S3 refuses other bytes and keeps the checksum, and the complete reads only that."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = S3BlobStore(
        f"sums-{time.monotonic_ns() % 10**9}", endpoint_url=seaweed.endpoint,
        access_key=seaweed.access_key, secret_key=seaweed.secret_key,
    )  # fmt: skip
    downloads: list[str] = []
    real_download = blobs.download
    monkeypatch.setattr(
        blobs, "download", lambda key, path: (downloads.append(key), real_download(key, path))[1]
    )
    try:
        user = create_token(store, "alice")
        worker = create_token(store, "gpu", worker=True)
        app = create_app(Settings.load(worker={"lease_seconds": 30}), store, blobs)
        with TestClient(app, "http://localhost") as client:
            auth = {"Authorization": f"Bearer {worker}"}
            client.post(f"/queue/{T2V}", json={"prompt": "p", "width": 128, "height": 128,
                        "duration": 1}, headers={"Authorization": f"Bearer {user}"})  # fmt: skip
            job = client.post("/worker/v1/claim", json={"worker": "w", "pools": [POOL]},
                              headers=auth).json()["job"]  # fmt: skip
            key, sha = output_key(job), hashlib.sha256(VIDEO).hexdigest()
            body = {"lease_token": job["lease_token"], "key": key, "size": len(VIDEO),
                    "sha256": sha}  # fmt: skip
            target = client.post(f"/worker/v1/jobs/{job['id']}/upload", json=body,
                                 headers=auth).json()  # fmt: skip
            other = VIDEO[:-1] + b"!"  # the declared size, other bytes: S3 refuses them
            refused = httpx.put(target["url"], content=other, headers=target["headers"])
            assert refused.status_code == 400 and not blobs.exists(key)
            put = httpx.put(target["url"], content=VIDEO, headers=target["headers"])
            assert put.status_code == 200, put.text
            done = client.post(f"/worker/v1/jobs/{job['id']}/complete", json=body, headers=auth)
            assert done.json() == {"completed": True, "replayed": False}
            assert downloads == []  # verified by S3's checksum, never read back
    finally:
        store.close()
        blobs.close()
