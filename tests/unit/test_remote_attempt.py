"""The remote source and attempt (``worker/remote.py``) against a fake API
(``httpx.MockTransport``) that reads every request with the protocol's own models
(``vidq.worker_protocol``), as the real routes do: each attempt holds its own lease token,
download URLs and upload, names its output key from its own job (none is ever parsed),
and what the server would refuse is refused before anything is sent."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from vidq.jobs import WorkerState
from vidq.store.base import Lease
from vidq.worker.remote import ProtocolError, RemoteAPI, RemoteAttempt, RemoteSource
from vidq.worker_protocol import (
    PREFIX,
    AnnounceBody,
    ClaimBody,
    CompleteBody,
    FailBody,
    Fenced,
    ProgressBody,
    UploadBody,
)

POOL = "wan22-t2v"
FILES = "https://files.example"


class FakeAPI:
    """The worker routes, reduced to reading each request with its model and answering
    what the test queued; signed URLs (inputs, outputs) are served under ``FILES``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, BaseModel]] = []  # (route, the request as read)
        self.claims: list[dict[str, Any]] = []  # answers to the next claims
        self.lease = "held"  # the heartbeats' answer; "" for 409
        self.stored: dict[str, bytes] = {}  # signed-URL path -> body
        self.announce_status = 200  # 404: an API from before the announce route

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if str(request.url).startswith(FILES):
            if request.method == "GET":
                return httpx.Response(200, content=f"bytes of {path}".encode())
            self.stored[path] = request.read()
            return httpx.Response(200)
        route = path.removeprefix(PREFIX)
        body = json.loads(request.content)
        name = route.rsplit("/", 1)[-1]
        model: type[BaseModel] = {
            "claim": ClaimBody, "heartbeat": Fenced, "progress": ProgressBody, "fail": FailBody,
            "upload": UploadBody, "complete": CompleteBody, "announce": AnnounceBody,
        }[name]  # fmt: skip
        read = model.model_validate(body)  # as the server would: a 422 here fails the test
        self.sent.append((route, read))
        if name == "claim":
            return httpx.Response(200, json=self.claims.pop(0))
        if name == "announce" and self.announce_status != 200:
            return httpx.Response(self.announce_status, json={"detail": "Not found."})
        if name == "heartbeat":
            if not self.lease:
                return httpx.Response(409, json={"detail": "lost"})
            return httpx.Response(200, json={"lease": self.lease, "lease_s": 30})
        if name == "upload":
            assert isinstance(read, UploadBody)
            url = f"{FILES}/put/{read.key}"
            return httpx.Response(200, json={"method": "PUT", "url": url, "headers": {}})
        if name == "complete":
            return httpx.Response(200, json={"completed": True, "replayed": False})
        return httpx.Response(200, json={"ok": True})

    def of(self, kind: type[BaseModel]) -> list[tuple[str, Any]]:
        return [(route, read) for route, read in self.sent if type(read) is kind]


def claimed(job_id: int, attempt: int, token: str, *, tier: int = 1) -> dict[str, Any]:
    """A claim answer of the API for ``job_id``'s attempt ``attempt``, with one image."""
    return {
        "job": {
            "id": job_id, "model_id": "wan22-fast-i2v", "pool": POOL, "tier": tier,
            "priority": 0, "attempt": attempt, "max_attempts": 3,
            "inputs": {"prompt": "x", "_blobs": {"image": f"inputs/alice/{job_id}.png"}},
            "lease_token": token, "lease_expires_at": 1e9, "lease_s": 30,
        },
        "downloads": {"image": f"{FILES}/get/{job_id}-{attempt}.png"},
    }  # fmt: skip


@pytest.fixture
def fake() -> FakeAPI:
    return FakeAPI()


@pytest.fixture
def source(fake: FakeAPI) -> RemoteSource:
    return RemoteSource(
        RemoteAPI("http://127.0.0.1:9", "vq_test", transport=fake.transport()), wait_s=0.0
    )


def claim(source: RemoteSource, worker: str = "box:1:gpu0") -> RemoteAttempt:
    attempt = source.claim(worker, [POOL], {POOL: "preview"}, 30)
    assert attempt is not None
    return attempt


def test_two_attempts_of_one_job_each_speak_with_their_own_lease_and_upload(
    fake: FakeAPI, source: RemoteSource, tmp_path: Path
) -> None:
    """A stale attempt and the one that took the job over, in one process (two GPU slots
    sharing a source): neither sees the other's lease token, inputs or upload."""
    fake.claims = [claimed(7, 1, "lease-one"), claimed(7, 2, "lease-two")]
    stale, current = claim(source, "box:1:gpu0"), claim(source, "box:1:gpu1")
    assert (stale.lease_token, current.lease_token) == ("lease-one", "lease-two")
    assert stale.job.inputs == {"prompt": "x"}  # the blob keys stay out of the engine's inputs
    for attempt, folder in ((stale, tmp_path / "a"), (current, tmp_path / "b")):
        folder.mkdir()
        files = attempt.download_inputs(folder)
        assert files == {"image": str(folder / "input-image")}
        number = attempt.job.attempt
        assert Path(files["image"]).read_bytes() == f"bytes of /get/7-{number}.png".encode()
    outputs = {}
    for attempt in (stale, current):  # interleaved: both upload before either completes
        outputs[attempt.job.attempt] = tmp_path / f"out-{attempt.job.attempt}.mp4"
        outputs[attempt.job.attempt].write_bytes(b"video %d" % attempt.job.attempt * 100)
        attempt.upload(outputs[attempt.job.attempt], "Test")
    assert current.complete({"engine": "preview"}) and stale.complete({"engine": "preview"})
    uploads, completes = fake.of(UploadBody), fake.of(CompleteBody)
    for number, token in ((1, "lease-one"), (2, "lease-two")):
        data = outputs[number].read_bytes()
        key = f"outputs/pro/7_0_Test_{number:05d}.mp4"  # tier 1: the attempt's own job
        named = (key, len(data), hashlib.sha256(data).hexdigest())
        [upload] = [u for route, u in uploads if u.lease_token == token]
        [done] = [c for route, c in completes if c.lease_token == token]
        assert (upload.key, upload.size, upload.sha256) == named
        assert (done.key, done.size, done.sha256) == named
        assert fake.stored[f"/put/{key}"] == data
    assert {route for route, _ in completes} == {"/jobs/7/complete"}


def test_what_the_server_would_refuse_is_refused_before_sending(
    fake: FakeAPI, source: RemoteSource, tmp_path: Path
) -> None:
    with pytest.raises(ProtocolError, match="ClaimBody: worker"):
        source.claim("w" * 201, [POOL], {}, 30)  # the name's bound is 200
    with pytest.raises(ProtocolError, match="ClaimBody: pools"):
        source.claim("w", [], {}, 30)
    assert fake.sent == []  # nothing left the worker
    fake.claims = [claimed(8, 1, "lease")]
    attempt = claim(source)
    assert attempt.progress(2_000_001, 4)  # over the bound: not sent (progress is advisory)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ProtocolError, match="UploadBody: size"):
        attempt.upload(empty, "Test")
    with pytest.raises(ProtocolError, match="UploadBody: key"):
        attempt.upload(tmp_path / "empty.mp4", "x" * 500)
    assert [route for route, _ in fake.sent] == ["/claim"]


def test_a_fail_is_fitted_to_the_bounds_by_its_model(fake: FakeAPI, source: RemoteSource) -> None:
    """An engine's error text of any length is recorded as far as it fits: the model cuts
    it (no hand truncation at the call site), and the server's model accepts it."""
    fake.claims = [claimed(9, 1, "lease")]
    attempt = claim(source)
    assert attempt.fail("e" * 10_000, "T" * 500, retry=True, retry_after_s=1e9)
    [(route, sent)] = fake.of(FailBody)
    assert route == "/jobs/9/fail"
    assert (len(sent.message), len(sent.error_type), sent.delay_s) == (4000, 100, 3600.0)
    fitted = FailBody.fitted("t", "short", "engine", False, -5.0)
    assert (fitted.message, fitted.error_type, fitted.delay_s) == ("short", "engine", 0.0)


def test_heartbeat_answers_are_read_with_the_protocols_model(
    fake: FakeAPI, source: RemoteSource
) -> None:
    fake.claims = [claimed(10, 1, "lease")]
    attempt = claim(source)
    assert attempt.heartbeat() is Lease.HELD
    fake.lease = "cancel"
    assert attempt.heartbeat() is Lease.CANCEL
    fake.lease = "maybe"  # not an answer of the protocol
    with pytest.raises(ProtocolError, match="HeartbeatAnswer: lease"):
        attempt.heartbeat()
    fake.lease = ""  # 409: another attempt holds the job
    assert attempt.heartbeat() is Lease.LOST
    assert {read.lease_token for _, read in fake.of(Fenced)} == {"lease"}


def test_an_empty_claim_says_how_many_jobs_are_queued(fake: FakeAPI, source: RemoteSource) -> None:
    fake.claims = [{"job": None, "queued": {POOL: 3}}]
    assert source.claim("w", [POOL], {}, 30) is None
    assert source.queue_depths() == {POOL: 3}


def test_announce_sends_the_state_with_its_reason_cut_to_its_bound(
    fake: FakeAPI, source: RemoteSource
) -> None:
    """What an engine said (any length) is sent as far as it fits, never refused; an API
    from before the route (404) or one that refuses is only logged: the loop goes on."""
    source.announce("box:1:gpu0", [POOL], {POOL: "comfyui"}, WorkerState.ENGINE_DOWN, "x" * 5000)
    ((route, sent),) = fake.of(AnnounceBody)
    assert route == "/announce" and sent.state is WorkerState.ENGINE_DOWN
    assert sent.reason == "x" * 1000 and sent.engines == {POOL: "comfyui"}
    for status in (404, 429):
        fake.announce_status = status
        source.announce("box:1:gpu0", [POOL], {}, WorkerState.STOPPED)
    assert [read.state for _, read in fake.of(AnnounceBody)] == [
        WorkerState.ENGINE_DOWN, WorkerState.STOPPED, WorkerState.STOPPED,
    ]  # fmt: skip
