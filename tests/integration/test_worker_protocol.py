"""The worker protocol (``/worker/v1``) at the HTTP level, on a real SQLite file and the
local blob store: fencing, idempotent and stale completes, signed upload URLs, the worker
token's role, and 422s that name the field."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.support.loopback import serve_app
from tests.support.processes import free_port
from tests.support.servers import SeaweedServer
from tests.support.wait import eventually
from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.api.worker import outputs
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.s3 import S3BlobStore
from vidq.config import ComfyUISettings, Settings
from vidq.jobs import Ran, poster_key
from vidq.store import open_store
from vidq.store.sql import SQLStore
from vidq.worker.remote import RemoteAPI, RemoteSource, check_server_url
from vidq.worker.runner import Worker, WorkerOptions
from vidq.worker_protocol import LEASE_HEADER, MAX_POSTER_BYTES, MAX_PREVIEW_BYTES

T2V = "wan22-fast-t2v"
POOL = "wan22-t2v"
SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
VIDEO = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40


class Api:
    """The app, its store and blobs, and one token of each role."""

    def __init__(self, tmp: Path, lease_s: float, database_url: str | None = None) -> None:
        self.store: SQLStore = open_store(database_url or f"sqlite:///{tmp / 'vidq.db'}")
        self.blobs = LocalBlobStore(tmp / "blobs", b"k" * 32)
        self.user = create_token(self.store, "alice")
        self.admin = create_token(self.store, "ops", admin=True)
        self.worker = create_token(self.store, "gpu", worker=True, pools=[POOL])
        self.any_pool = create_token(self.store, "gpu-2", worker=True)
        settings = Settings.load(worker={"lease_seconds": lease_s})
        self.client = TestClient(create_app(settings, self.store, self.blobs), "http://localhost")

    def call(self, token: str, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return self.client.request(method, path, json=body, headers=headers)

    def submit(self) -> int:
        r = self.call(self.user, "POST", f"/queue/{T2V}", SMALL)
        assert r.status_code == 200, r.text
        return int(r.json()["request_id"])

    def claim(self, name: str = "w1", wait_s: float = 0.0) -> dict[str, Any]:
        r = self.call(
            self.worker, "POST", "/worker/v1/claim",
            {"worker": name, "pools": [POOL], "engines": {POOL: "preview"}, "wait_s": wait_s},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        return dict(r.json())

    def upload(self, job: dict[str, Any], data: bytes = VIDEO) -> tuple[str, str, str]:
        """(key, sha256, signed URL) of an upload of ``data`` as ``job``'s output."""
        key = output_key(job)
        sha = hashlib.sha256(data).hexdigest()
        body = {"lease_token": job["lease_token"], "key": key, "size": len(data), "sha256": sha}
        r = self.call(self.worker, "POST", f"/worker/v1/jobs/{job['id']}/upload", body)
        assert r.status_code == 200, r.text
        assert r.json()["method"] == "PUT"
        return key, sha, str(r.json()["url"])

    def put(self, url: str, data: bytes = VIDEO) -> httpx.Response:
        parts = urlsplit(url)
        return self.client.put(f"{parts.path}?{parts.query}", content=data)

    def complete(self, job: dict[str, Any], key: str, sha: str, size: int = len(VIDEO)) -> Any:
        body = {
            "lease_token": job["lease_token"], "key": key, "size": size, "sha256": sha,
            "meta": {"engine": "preview"},
        }  # fmt: skip
        return self.call(self.worker, "POST", f"/worker/v1/jobs/{job['id']}/complete", body)


def output_key(job: dict[str, Any]) -> str:
    return f"outputs/free/{job['id']}_0_Test_{job['attempt']:05d}.mp4"


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path, lease_s=30)
    with a.client:
        yield a
    a.store.close()


@pytest.fixture(scope="module")
def shared_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """For tests that change nothing (the 422s)."""
    a = Api(tmp_path_factory.mktemp("protocol"), lease_s=30)
    with a.client:
        yield a
    a.store.close()


def test_claim_heartbeat_complete_fenced_and_idempotent(api: Api) -> None:
    rid = api.submit()
    answer = api.claim()
    job = answer["job"]
    assert job["id"] == rid and job["attempt"] == 1 and job["lease_s"] == 30
    assert job["lease_expires_at"] > time.time() and answer["downloads"] == {}
    beat = f"/worker/v1/jobs/{rid}/heartbeat"
    assert api.call(api.worker, "POST", beat, {"lease_token": "nope"}).status_code == 409
    r = api.call(api.worker, "POST", beat, {"lease_token": job["lease_token"]})
    assert r.status_code == 200 and r.json()["lease"] == "held"
    progress = {"lease_token": job["lease_token"], "done": 2, "total": 4}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/progress", progress).is_success
    stale = {**progress, "lease_token": "x"}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/progress", stale).status_code == 409
    key, sha, url = api.upload(job)
    assert api.put(url).status_code == 201
    assert api.blobs.get_bytes(key) == VIDEO
    assert api.put(url).status_code == 409  # a used URL is refused
    # A complete that names another size or hash is refused, naming the field.
    r = api.complete(job, key, sha, size=len(VIDEO) + 1)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "size"]
    r = api.complete(job, key, "0" * 64)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "sha256"]
    assert api.complete(job, key, sha).json() == {"completed": True, "replayed": False}
    # The answer was lost; the worker retries: a no-op success, one object.
    assert api.complete(job, key, sha).json() == {"completed": True, "replayed": True}
    status = api.call(api.user, "GET", f"/queue/{T2V}/requests/{rid}/status").json()
    assert status["status"] == "COMPLETED"
    assert status["statusMessages"]["result_uri"].endswith(key)
    assert api.blobs.keys("outputs/") == [key]
    # Everything after the end is fenced out.
    assert (
        api.call(api.worker, "POST", beat, {"lease_token": job["lease_token"]}).status_code == 409
    )
    fail = {"lease_token": job["lease_token"], "message": "x", "error_type": "e", "retry": True}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/fail", fail).status_code == 409


def test_stale_attempt_is_refused_and_its_upload_deleted(tmp_path: Path) -> None:
    api = Api(tmp_path, lease_s=0.5)
    with api.client:
        rid = api.submit()
        first = api.claim("w1")["job"]
        key1, sha1, url1 = api.upload(first)
        time.sleep(0.7)  # the first attempt is cut off past its lease
        assert api.store.reap().retried == [rid]
        second = api.claim("w2")["job"]
        assert second["attempt"] == 2 and second["lease_token"] != first["lease_token"]
        assert api.put(url1).status_code == 403  # the stale attempt's URL no longer verifies
        key2, sha2, url2 = api.upload(second)
        assert api.put(url2).status_code == 201
        # The stale attempt got its upload in (e.g. on S3, where URLs are presigned)...
        api.blobs.put_bytes(key1, VIDEO, "video/mp4")
        r = api.complete(first, key1, sha1)
        assert r.status_code == 409  # ... its complete is refused, its upload deleted
        assert not api.blobs.exists(key1) and api.blobs.exists(key2)
        assert api.complete(second, key2, sha2).json()["completed"]
        assert api.blobs.keys("outputs/") == [key2]
    api.store.close()


def test_upload_urls_refuse_tampering_expiry_and_oversize(api: Api) -> None:
    api.submit()
    job = api.claim()["job"]
    key, sha, url = api.upload(job)
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}

    def put(data: bytes = VIDEO, **changes: Any) -> int:
        q = {**query, **{k: str(v) for k, v in changes.items()}}
        path = parts.path if "path" not in changes else q.pop("path")
        q.pop("path", None)
        return api.client.put(path, params=q, content=data).status_code

    assert put(signature="0" * 64) == 403
    assert put(size=len(VIDEO) + 10) == 403  # the size is signed
    assert put(sha256="1" * 64) == 403
    assert put(path=parts.path.replace("_00001", "_00002")) == 403  # so is the key
    past = int(time.time()) - 5  # a correctly signed URL that expired
    signed = api.blobs.sign(
        "worker-upload", job["lease_token"], str(job["id"]), key, str(len(VIDEO)), sha, str(past)
    )
    assert put(expires=past, signature=signed) == 403
    assert put(VIDEO + b"more") == 413  # more than the declared size
    assert put(VIDEO[:-1] + b"!") == 422  # the declared size, another hash
    huge = api.client.put(parts.path.replace(f"/{job['id']}/", f"/{2**64}/"), params=query)
    assert huge.status_code == 422 and huge.json()["detail"][0]["loc"] == ["path", "job_id"]
    assert not api.blobs.exists(key)
    assert put() == 201
    # An upload URL is for this attempt's own output key only.
    body = {"lease_token": job["lease_token"], "key": "outputs/free/1_0_x_00009.mp4",
            "size": 3, "sha256": "0" * 64}  # fmt: skip
    r = api.call(api.worker, "POST", f"/worker/v1/jobs/{job['id']}/upload", body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "key"]
    r = api.call(api.worker, "POST", f"/worker/v1/jobs/{job['id']}/upload", {**body, "key": key,
                 "lease_token": "other"})  # fmt: skip
    assert r.status_code == 409


WORKER_ROUTES = [
    ("GET", "/worker/v1/config", None),
    ("POST", "/worker/v1/claim", {"worker": "w", "pools": [POOL]}),
    ("POST", "/worker/v1/jobs/1/heartbeat", {"lease_token": "t"}),
    ("POST", "/worker/v1/jobs/1/progress", {"lease_token": "t", "done": 1, "total": 2}),
    ("POST", "/worker/v1/jobs/1/fail",
     {"lease_token": "t", "message": "m", "error_type": "e", "retry": False}),
    ("POST", "/worker/v1/jobs/1/cancelled", {"lease_token": "t"}),
    ("POST", "/worker/v1/jobs/1/release", {"lease_token": "t"}),
    ("POST", "/worker/v1/jobs/1/upload",
     {"lease_token": "t", "key": "k", "size": 1, "sha256": "0" * 64}),
    ("POST", "/worker/v1/jobs/1/complete",
     {"lease_token": "t", "key": "k", "size": 1, "sha256": "0" * 64}),
    ("PUT", "/worker/v1/jobs/1/preview", None),
]  # fmt: skip


def test_worker_and_user_tokens_are_kept_apart(api: Api) -> None:
    rid = api.submit()
    for method, path, body in WORKER_ROUTES:
        for token in (api.user, api.admin):
            r = api.call(token, method, path, body)
            assert r.status_code == 404, (path, r.text)
        assert api.client.request(method, path, json=body).status_code == 401, path
        assert api.call(api.worker, method, path, body).status_code != 404 or "jobs/1" in path
    # The signed upload route takes no token: only its signature.
    r = api.call(api.user, "PUT", "/worker/v1/uploads/1/outputs/free/1_0_x_00001.mp4", None)
    assert r.status_code == 403
    user_routes = [
        ("POST", f"/queue/{T2V}", SMALL),
        ("GET", f"/queue/{T2V}/requests/{rid}/status", None),  # the fast path
        ("GET", f"/queue/{T2V}/requests/{rid}", None),
        ("PUT", f"/queue/{T2V}/requests/{rid}/cancel", None),
        ("GET", "/requests", None),
        ("GET", "/webhooks/secret", None),
        ("POST", "/fal/storage/auth/token", None),
        ("POST", "/fal/storage/upload/initiate", {"content_type": "image/png"}),
        ("GET", "/admin/workers", None),
        ("GET", "/admin/queues", None),
    ]
    for token in (api.worker, api.any_pool):
        for method, path, body in user_routes:
            r = api.call(token, method, path, body)
            assert r.status_code == 403, (path, r.status_code, r.text)
            assert "worker" in r.text
    # A worker token claims only from its pools; 403 names the field.
    r = api.call(api.worker, "POST", "/worker/v1/claim", {"worker": "w", "pools": ["wan22-s2v"]})
    assert r.status_code == 403 and r.json()["detail"][0]["loc"] == ["body", "pools"]
    r = api.call(api.any_pool, "POST", "/worker/v1/claim", {"worker": "w", "pools": ["wan22-s2v"]})
    assert r.status_code == 200 and r.json()["job"] is None
    assert api.call(api.worker, "GET", "/worker/v1/config").json()["pools"] == [POOL]
    # /openapi.json documents the protocol.
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/worker/v1/claim" in paths and "/worker/v1/jobs/{job_id}/complete" in paths


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/worker/v1/claim", {"worker": "w", "pools": [POOL], "wait_s": 99}, ["body", "wait_s"]),
        ("/worker/v1/claim", {"worker": "w", "pools": []}, ["body", "pools"]),
        ("/worker/v1/claim", {"worker": "w", "pools": ["nope"]}, ["body", "pools"]),
        ("/worker/v1/claim", {"worker": "", "pools": [POOL]}, ["body", "worker"]),
        ("/worker/v1/claim", {"worker": "w", "pools": [POOL], "x": 1}, ["body", "x"]),
        ("/worker/v1/jobs/1/heartbeat", {}, ["body", "lease_token"]),
        ("/worker/v1/jobs/1/progress", {"lease_token": "t", "done": -1, "total": 1},
         ["body", "done"]),
        ("/worker/v1/jobs/1/fail", {"lease_token": "t", "message": "m", "error_type": "e"},
         ["body", "retry"]),
        ("/worker/v1/jobs/1/complete",
         {"lease_token": "t", "key": "k", "size": 1, "sha256": "xyz"}, ["body", "sha256"]),
        ("/worker/v1/jobs/x/heartbeat", {"lease_token": "t"}, ["path", "job_id"]),
        ("/worker/v1/announce", {"worker": "w1", "pools": [POOL], "state": "sleeping"},
         ["body", "state"]),
        ("/worker/v1/announce",
         {"worker": "w1", "pools": [POOL], "state": "engine_down", "reason": "x" * 1001},
         ["body", "reason"]),
        ("/worker/v1/announce", {"worker": "w1", "pools": ["nope"], "state": "warming"},
         ["body", "pools"]),
    ],
)  # fmt: skip
def test_bad_bodies_name_the_field(shared_api: Api, path: str, body: Any, loc: list[str]) -> None:
    r = shared_api.call(shared_api.worker, "POST", path, body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_admin_workers_shows_each_remote_slot_with_its_current_job(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """Each GPU slot of a remote worker claims under its own name (``host:pid:gpuN``), and
    `/admin/workers` lists it with its engines and its current job, as for a local slot."""
    url = request.getfixturevalue("pg_head_url") if backend == "postgres" else None
    api = Api(tmp_path, lease_s=30, database_url=url)
    with api.client:
        rids = [api.submit() for _ in range(3)]
        jobs = {name: api.claim(name)["job"] for name in ("box:7:gpu0", "box:7:gpu1")}

        def rows() -> dict[str, dict[str, Any]]:
            r = api.call(api.admin, "GET", "/admin/workers")
            assert r.status_code == 200, r.text
            return {w["name"]: w for w in r.json()["workers"]}

        shown = rows()
        assert set(shown) == set(jobs)
        for name, job in jobs.items():
            assert shown[name]["current_job"] == job["id"] and shown[name]["jobs_done"] == 0
            # a claim says ready by itself (an older worker that never announces)
            assert (shown[name]["state"], shown[name]["state_reason"]) == ("ready", None)
            assert shown[name]["engines"] == {POOL: "preview"} and shown[name]["pools"] == [POOL]
        assert {j["id"] for j in jobs.values()} == set(rids[:2])
        # gpu0 finishes: no current job, one done; gpu1 still shows its job.
        first = jobs["box:7:gpu0"]
        key, sha, put_url = api.upload(first)
        assert api.put(put_url).status_code == 201
        assert api.complete(first, key, sha).json()["completed"]
        shown = rows()
        assert shown["box:7:gpu0"]["current_job"] is None
        assert shown["box:7:gpu0"]["jobs_done"] == 1
        assert shown["box:7:gpu1"]["current_job"] == jobs["box:7:gpu1"]["id"]
        # The job itself names the slot that ran it (GET /admin/requests).
        r = api.call(api.admin, "GET", "/admin/requests", None)
        ran = {j["request_id"]: j["worker"] for j in r.json()["requests"]}
        assert ran[str(first["id"])] == "box:7:gpu0"
    api.store.close()


def test_claim_long_polls_and_is_answered_when_a_job_arrives(api: Api) -> None:
    answers: list[tuple[float, dict[str, Any]]] = []

    def wait() -> None:
        started = time.monotonic()
        answer = api.claim(wait_s=10)
        answers.append((time.monotonic() - started, answer))

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.5)
    rid = api.submit()
    thread.join(15)
    took, answer = answers[0]
    assert answer["job"]["id"] == rid and 0.4 < took < 3.0
    empty = api.claim(wait_s=0)
    assert empty == {"job": None, "queued": {POOL: 0}}


def test_remote_workers_need_https_beyond_loopback() -> None:
    assert check_server_url("https://vidq.example.com/") == "https://vidq.example.com"
    assert check_server_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000"
    assert check_server_url("http://[::1]:8000") == "http://[::1]:8000"
    assert check_server_url("http://localhost:8000") == "http://localhost:8000"
    for bad in ("http://vidq.example.com", "http://10.0.0.5:8000", "ftp://x", "https://x/?a=1"):
        with pytest.raises(ValueError):
            check_server_url(bad)
    assert check_server_url("http://10.0.0.5:8000", insecure_http=True)


@pytest.mark.s3
def test_large_outputs_go_to_s3_in_parts_through_the_remote_adapters(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The remote adapters against the API on S3 (SeaweedFS), over real HTTP on loopback: an
    output over the part size is uploaded by presigned part URLs and assembled by the
    complete; a retried complete is a no-op success."""
    monkeypatch.setattr(outputs, "PART_BYTES", 5 << 20)  # S3's smallest part
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = S3BlobStore(
        f"parts-{time.monotonic_ns() % 10**9}", endpoint_url=seaweed.endpoint,
        access_key=seaweed.access_key, secret_key=seaweed.secret_key,
    )  # fmt: skip
    user = create_token(store, "alice")
    token = create_token(store, "gpu", worker=True)
    app = create_app(Settings.load(worker={"lease_seconds": 30}), store, blobs)
    try:
        with serve_app(app) as url, httpx.Client(base_url=url) as client:
            r = client.post(
                f"/queue/{T2V}", json=SMALL, headers={"Authorization": f"Bearer {user}"}
            )
            rid = int(r.json()["request_id"])
            api = RemoteAPI(url, token)
            attempt = RemoteSource(api, wait_s=0.0).claim("w1", [POOL], {}, 30)
            assert attempt is not None and attempt.job.id == rid
            output = tmp_path / "out.mp4"
            output.write_bytes(os.urandom((10 << 20) + 12345))  # 3 parts
            key = f"outputs/free/{rid}_0_Test_00001.mp4"
            attempt.upload(output, "Test")
            assert not blobs.exists(key)  # parts only, until the complete assembles them
            assert attempt.complete({"engine": "preview"})
            assert blobs.get_bytes(key) == output.read_bytes()
            body = {"lease_token": attempt.lease_token, "key": key, "size": output.stat().st_size,
                    "sha256": hashlib.sha256(output.read_bytes()).hexdigest(),
                    "upload_id": "gone", "parts": [{"number": 1, "etag": "x"}]}  # fmt: skip
            again = client.post(
                f"/worker/v1/jobs/{rid}/complete", json=body,
                headers={"Authorization": f"Bearer {token}"},
            )  # fmt: skip
            assert again.json() == {"completed": True, "replayed": True}
            api.close()
    finally:
        store.close()
        blobs.close()


def test_a_remote_worker_reports_what_each_attempt_ran(tmp_path: Path) -> None:
    """A remote worker's attempts record their engine's seconds and device through the
    protocol's ends, as a local worker's do through the store: a failed attempt's time
    counts, the loop measures the engine call around it."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    user = create_token(store, "alice")
    token = create_token(store, "gpu", worker=True)
    settings = Settings.load(worker={"lease_seconds": 30}, preview={"step_seconds": 0.2})
    app = create_app(settings, store, blobs)
    auth = {"Authorization": f"Bearer {user}"}
    try:
        with serve_app(app) as url, httpx.Client(base_url=url, headers=auth) as client:
            rids = [client.post(f"/queue/{T2V}", json=SMALL).json()["request_id"] for _ in "ab"]
            api = RemoteAPI(url, token)
            first = RemoteSource(api, wait_s=0.0).claim("w1", [POOL], {}, 30)
            assert first is not None and str(first.job.id) == rids[0]
            assert first.fail("oom", "EngineError", retry=True, retry_after_s=0.0,
                              ran=Ran(1.5, "cuda:3"))  # fmt: skip
            options = WorkerOptions(
                pools=(POOL,), engines={POOL: "preview"}, lease_s=30, burst=True,
                engine_settings=settings.engine_settings(), name="remote-1",
            )  # fmt: skip
            worker = Worker(RemoteSource(api, wait_s=0.0), options)
            assert worker.run() == 2
            api.close()
            costs = []
            for rid in rids:
                status = client.get(f"/queue/{T2V}/requests/{rid}/status").json()
                assert status["status"] == "COMPLETED", status
                costs.append(status["metrics"])
            retried, plain = costs
            assert plain["attempts"] == 1 and plain["device"] == "cpu"
            assert 4 * 0.2 <= plain["gpu_seconds"] < 30
            assert retried["attempts"] == 2 and retried["device"] == "cpu"
            assert retried["gpu_seconds"] >= 1.5 + 4 * 0.2  # the failed attempt's time counts
    finally:
        store.close()


def _webp(color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(out, format="WEBP")
    return out.getvalue()


def test_a_preview_is_put_fenced_checked_and_deleted_with_the_attempts_end(api: Api) -> None:
    rid = api.submit()
    job = api.claim()["job"]
    path = f"/worker/v1/jobs/{rid}/preview"
    auth = {"Authorization": f"Bearer {api.worker}", "Content-Type": "image/webp"}

    def put(data: bytes, lease: str | None = job["lease_token"], step: int = 1) -> httpx.Response:
        headers = {**auth, **({LEASE_HEADER: lease} if lease is not None else {})}
        return api.client.put(f"{path}?step={step}", content=data, headers=headers)

    r = put(_webp(), lease=None)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", LEASE_HEADER]
    assert put(_webp(), lease="stale").status_code == 409
    r = put(b"GIF89a" + bytes(100))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    assert put(b"RIFF\0\0\0\0WEBP" + bytes(MAX_PREVIEW_BYTES)).status_code == 413
    assert put(_webp(), step=-1).status_code == 422
    assert api.blobs.keys("previews/") == []  # nothing refused was stored
    assert put(_webp(), step=2).json() == {"ok": True}
    assert put(_webp((0, 0, 200)), step=3).json() == {"ok": True}  # over the last one
    status = api.call(api.user, "GET", f"/queue/{T2V}/requests/{rid}/status").json()
    shown = status["preview"]
    assert shown["step"] == 3 and shown["content_type"] == "image/webp"
    got = api.client.get(urlsplit(shown["url"]).path + "?" + urlsplit(shown["url"]).query)
    assert got.status_code == 200 and got.content == _webp((0, 0, 200))
    assert api.blobs.keys("previews/") == [f"previews/{rid}_00001.webp"]
    # The attempt fails (retried): its preview is deleted; the next attempt shows none.
    fail = {"lease_token": job["lease_token"], "message": "x", "error_type": "e", "retry": True}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/fail", fail).is_success
    assert api.blobs.keys("previews/") == []
    assert put(_webp(), step=4).status_code == 409  # fenced out after its end
    again = api.claim()["job"]
    assert again["attempt"] == 2
    status = api.call(api.user, "GET", f"/queue/{T2V}/requests/{rid}/status").json()
    assert status["status"] == "IN_PROGRESS" and "preview" not in status


def test_a_remote_worker_publishes_previews_and_leaves_none(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    user = create_token(store, "alice")
    token = create_token(store, "gpu", worker=True)
    settings = Settings.load(worker={"lease_seconds": 30}, preview={"step_seconds": 0.3})
    app = create_app(settings, store, blobs)
    auth = {"Authorization": f"Bearer {user}"}
    try:
        with serve_app(app) as url, httpx.Client(base_url=url, headers=auth) as client:
            rid = client.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
            api = RemoteAPI(url, token)
            options = WorkerOptions(
                pools=(POOL,), engines={POOL: "preview"}, lease_s=30, burst=True,
                engine_settings=settings.engine_settings(), name="remote-1",
                preview_interval_s=0.2,
            )  # fmt: skip
            seen: list[dict[str, Any]] = []

            def watch() -> None:
                while not done.is_set():
                    body = client.get(f"/queue/{T2V}/requests/{rid}/status").json()
                    if "preview" in body:
                        seen.append(body["preview"])
                    time.sleep(0.05)

            done = threading.Event()
            watcher = threading.Thread(target=watch)
            watcher.start()
            try:
                assert Worker(RemoteSource(api, wait_s=0.0), options).run() == 1
            finally:
                done.set()
                watcher.join(10)
            api.close()
            assert seen and {p["content_type"] for p in seen} == {"image/webp"}
            job = store.get(int(rid))
            assert job is not None and job.result_meta["previews"] >= 1
            assert blobs.keys("previews/") == []
            # The remote worker stored its output's poster frame through the protocol.
            assert job.result_meta["poster"] is True and job.result_key
            assert blobs.exists(poster_key(job.result_key))
            shown = client.get(f"/requests/{rid}").json()["poster_url"]
            still = httpx.get(shown, timeout=30)
            assert still.status_code == 200 and still.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(still.content)).size == (128, 128)
    finally:
        store.close()


def test_a_remote_worker_fetches_a_jobs_loras_itself(tmp_path: Path) -> None:
    """The job a remote worker claims carries its LoRA URLs (the API checked and never
    fetched them); the worker fetches them under its own outbound settings and the result
    records them."""
    from tests.support.loopback import loopback_http
    from vidq.compose import worker_options

    lora = b"lora" * 300
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    user = create_token(store, "alice")
    token = create_token(store, "gpu", worker=True)
    loopback = {"fetch_allow_http": True, "fetch_allow_networks": "127.0.0.1/32"}
    settings = Settings.load(data_dir=tmp_path / "worker", limits=loopback)
    app = create_app(settings, store, blobs)
    auth = {"Authorization": f"Bearer {user}"}
    try:
        with (
            loopback_http({"/l.safetensors": (200, {}, lora)}) as (base, hits),
            serve_app(app) as url,
            httpx.Client(base_url=url, headers=auth) as client,
        ):
            body = {**SMALL, "loras": [{"path": f"{base}/l.safetensors?sig=x", "scale": 0.3}]}
            r = client.post(f"/queue/{T2V}", json=body)
            assert r.status_code == 200, r.text
            assert hits == []
            api = RemoteAPI(url, token)
            options = dataclasses.replace(
                worker_options(settings, burst=True, pools=[POOL], name="remote-1"),
                engines={POOL: "preview"},
            )
            assert Worker(RemoteSource(api, wait_s=0.0), options).run() == 1
            api.close()
            result = client.get(f"/queue/{T2V}/requests/{r.json()['request_id']}").json()
            assert result["loras"] == [{"sha256": hashlib.sha256(lora).hexdigest(),
                                        "bytes": len(lora), "scale": 0.3,
                                        "transformer": "high"}]  # fmt: skip
            assert hits == ["/l.safetensors?sig=x"]
            assert (tmp_path / "worker" / "lora-cache").is_dir()
    finally:
        store.close()


def test_a_remote_workers_state_reaches_admin_workers(tmp_path: Path) -> None:
    """A remote worker that is not claiming says what it is doing over ``/worker/v1``
    (``announce``): its ComfyUI down (found by its warm-up's probe) is shown on
    ``/admin/workers`` with the reason, and its stop too; an announce is held to the
    token's pools like a claim."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    admin = create_token(store, "ops", admin=True)
    token = create_token(store, "gpu", worker=True, pools=[POOL])
    app = create_app(Settings.load(worker={"lease_seconds": 30}), store, blobs)
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        with serve_app(app) as url, httpx.Client(base_url=url) as client:

            def shown() -> dict[str, Any]:
                r = client.get("/admin/workers", headers={"Authorization": f"Bearer {admin}"})
                return {w["name"]: w for w in r.json()["workers"]}.get("remote-1", {})

            refused = client.post(
                "/worker/v1/announce", headers={"Authorization": f"Bearer {token}"},
                json={"worker": "remote-1", "pools": ["wan22-i2v"], "state": "warming"},
            )  # fmt: skip
            assert refused.status_code == 403 and shown() == {}
            api = RemoteAPI(url, token)
            options = WorkerOptions(
                pools=(POOL,), engines={POOL: "comfyui"}, name="remote-1", probe_s=0.2,
                engine_settings={"comfyui": ComfyUISettings(urls=dead, connect_wait=0.2)},
            )  # fmt: skip
            worker = Worker(RemoteSource(api, wait_s=0.0), options)
            thread = threading.Thread(target=worker.run, daemon=True)
            thread.start()
            try:
                row = eventually(lambda: (w := shown()).get("state") == "engine_down" and w,
                                 30, what="the remote worker's engine_down")  # fmt: skip
                assert row["engines"] == {POOL: "comfyui"} and row["current_job"] is None
                assert row["state_reason"].startswith("engine comfyui down: no ComfyUI server")
            finally:
                worker.stop(drain=False)
                thread.join(30)
            assert shown()["state"] == "stopped"
            api.close()
    finally:
        store.close()


def _jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 18), (10, 120, 200)).save(out, format="JPEG")
    return out.getvalue()


def test_a_poster_is_put_fenced_checked_and_swept_with_its_attempt(api: Api) -> None:
    rid = api.submit()
    job = api.claim()["job"]
    key, _, url = api.upload(job)
    assert api.put(url).status_code == 201
    auth = {"Authorization": f"Bearer {api.worker}", "Content-Type": "image/jpeg"}

    def put(data: bytes, lease: str | None = job["lease_token"], of: str = key) -> httpx.Response:
        headers = {**auth, **({LEASE_HEADER: lease} if lease is not None else {})}
        path = f"/worker/v1/jobs/{rid}/poster"
        return api.client.put(path, params={"key": of}, content=data, headers=headers)

    r = put(_jpeg(), lease=None)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["header", LEASE_HEADER]
    assert put(_jpeg(), lease="stale").status_code == 409
    r = put(_webp())
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body"]
    assert put(b"\xff\xd8\xff" + bytes(MAX_POSTER_BYTES)).status_code == 413
    other = key.replace("_00001.mp4", "_00002.mp4")  # not this attempt's upload
    r = put(_jpeg(), of=other)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "key"], r.text
    assert put(_jpeg(), of="x" * 1001).status_code == 422
    assert api.blobs.keys("outputs/") == [key]  # nothing refused was stored
    assert put(_jpeg()).json() == {"ok": True}
    assert api.blobs.get_bytes(poster_key(key)) == _jpeg()
    # The attempt fails before its complete: the next attempt's claim sweeps both.
    fail = {"lease_token": job["lease_token"], "message": "x", "error_type": "e", "retry": True}
    assert api.call(api.worker, "POST", f"/worker/v1/jobs/{rid}/fail", fail).is_success
    assert put(_jpeg()).status_code == 409  # fenced out after its end
    assert api.claim()["job"]["attempt"] == 2
    assert api.blobs.keys("outputs/") == []
