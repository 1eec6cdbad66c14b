"""What the answers about a request tell its user, in both dialects and ``GET /requests``:
the seed it runs with, where its ETA comes from (the pool's history, else the engine that
serves the pool, else none), and why a queued request waits (a paused pool, the token's
max_running). The app in process over a real SQLite file; burst workers run the jobs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs.local import LocalBlobStore
from vidq.catalog import MODELS
from vidq.config import Settings, WorkerSettings
from vidq.store import open_store
from vidq.store.base import JobStore, Quota
from vidq.worker import Worker, WorkerOptions
from vidq.worker.local import LocalSource

T2V = "wan22-fast-t2v"
POOL = MODELS[T2V].pool
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


@pytest.fixture
def backends(tmp_path: Path) -> Iterator[tuple[JobStore, LocalBlobStore]]:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    yield store, LocalBlobStore(tmp_path / "blobs", b"k")
    store.close()


def _client(app: Any, token: str) -> TestClient:
    client = TestClient(app, base_url="http://localhost")
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _drain(store: JobStore, storage: LocalBlobStore) -> int:
    """Run the queue's jobs with a burst worker (the preview engine)."""
    options = WorkerOptions(pools=(POOL,), engines={POOL: "preview"}, burst=True, lease_s=10.0)
    return Worker(LocalSource(store, storage), options, reaper=store).run()


def _frames(client: TestClient, rid: str, tmp: Path) -> list[np.ndarray[Any, Any]]:
    """The decoded frames of a completed request's video (its signed URL, fetched)."""
    result = client.get(f"/queue/{T2V}/requests/{rid}").json()
    url = result["video"]["data_uri"]
    path = tmp / f"{rid}.mp4"
    path.write_bytes(client.get(url.removeprefix("http://localhost")).content)
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_every_request_runs_with_a_seed_its_answers_report(
    backends: tuple[JobStore, LocalBlobStore], tmp_path: Path
) -> None:
    store, storage = backends
    app = create_app(Settings(), store, storage)
    binary = {"x-pipelet-output": "binary"}
    with _client(app, create_token(store, "alice")) as alice:
        rid = alice.post(f"/queue/{T2V}", json=SMALL, headers=binary).json()["request_id"]
        # Chosen at submit: known while queued, in every answer about the request.
        queued = alice.get(f"/queue/{T2V}/requests/{rid}/status").json()
        seed = queued["seed"]
        assert isinstance(seed, int) and 0 <= seed < 2**32, queued
        mine = alice.get(f"/requests/{rid}").json()
        assert mine["seed"] == mine["inputs"]["seed"] == seed
        assert alice.get(f"/queue/vidq/{T2V}/requests/{rid}/status").json()["seed"] == seed
        given = alice.post(f"/queue/{T2V}", json={**SMALL, "seed": 7}, headers=binary)
        assert alice.get(f"/requests/{given.json()['request_id']}").json()["seed"] == 7
        fal = alice.post("/queue/fal-ai/wan/v2.2-a14b/text-to-video/turbo", json={"prompt": "x"})
        assert isinstance(alice.get(f"/requests/{fal.json()['request_id']}").json()["seed"], int)
        alice.put(f"/queue/{T2V}/requests/{given.json()['request_id']}/cancel")
        alice.put(f"/queue/{T2V}/requests/{fal.json()['request_id']}/cancel")

        # A first attempt fails and is retried: the second runs with the same seed.
        claimed = store.claim([POOL], "a-worker-that-fails", 30)
        assert claimed is not None and claimed.job.id == int(rid) and claimed.lease_token
        assert store.fail(claimed.job.id, claimed.lease_token, "boom", "internal", retry=True)
        # The same inputs and seed again, and the same inputs without a seed.
        again = alice.post(f"/queue/{T2V}", json={**SMALL, "seed": seed}, headers=binary)
        other = alice.post(f"/queue/{T2V}", json=SMALL, headers=binary)
        assert _drain(store, storage) == 3

        done = alice.get(f"/queue/{T2V}/requests/{rid}/status").json()
        assert done["status"] == "COMPLETED" and done["seed"] == seed
        assert alice.get(f"/queue/{T2V}/requests/{rid}").json()["seed"] == seed
        assert alice.get(f"/queue/vidq/{T2V}/requests/{rid}").json()["seed"] == seed
        assert alice.get(f"/requests/{rid}").json()["attempt"] == 2
        first = _frames(alice, rid, tmp_path)
        same = _frames(alice, again.json()["request_id"], tmp_path)
        drawn = _frames(alice, other.json()["request_id"], tmp_path)
        assert len(first) == len(same) == 17
        assert all(np.array_equal(a, b) for a, b in zip(first, same, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, drawn, strict=True))


def test_etas_come_from_history_else_the_engine_else_none(
    backends: tuple[JobStore, LocalBlobStore],
) -> None:
    store, storage = backends
    token = create_token(store, "bob")
    # The preview engine serves the pool (the embedded default) and there is no history
    # yet: no ETA, in any answer.
    with _client(create_app(Settings(), store, storage), token) as bob:
        rid = bob.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
        queued = bob.get(f"/queue/{T2V}/requests/{rid}/status").json()
        assert queued["status"] == "IN_QUEUE" and "etaSeconds" not in queued, queued
        assert bob.get(f"/requests/{rid}").json()["eta_seconds"] is None
        assert bob.get(f"/queue/vidq/{T2V}/requests/{rid}/status").json()["eta_seconds"] is None

    # The same pool served by a GPU engine: its catalog figure (a 1280x720 5 s clip's),
    # one run per request ahead plus its own.
    gpu = Settings(worker=WorkerSettings(engines={POOL: "wan"}))
    with _client(create_app(gpu, store, storage), token) as bob:
        full = bob.post(f"/queue/{T2V}", json={"prompt": "a full-size clip"}).json()
        status = bob.get(f"/queue/{T2V}/requests/{full['request_id']}/status").json()
        assert status["queue_position"] == 1
        assert status["etaSeconds"] == 2 * MODELS[T2V].eta_seconds, status
        bob.put(f"/queue/{T2V}/requests/{full['request_id']}/cancel")

    assert _drain(store, storage) == 1  # history: one completed run of this size
    ran = store.get(int(rid))
    assert ran is not None and ran.started_at is not None and ran.finished_at is not None
    measured = round(ran.finished_at - ran.started_at, 1)
    for settings in (Settings(), gpu):  # the pool's history comes first, whatever the engine
        with _client(create_app(settings, store, storage), token) as bob:
            nxt = bob.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
            status = bob.get(f"/queue/{T2V}/requests/{nxt}/status").json()
            assert status["etaSeconds"] == measured, (status, measured)
            assert bob.get(f"/requests/{nxt}").json()["eta_seconds"] == measured
            bob.put(f"/queue/{T2V}/requests/{nxt}/cancel")


def test_a_queued_request_says_why_it_waits(
    backends: tuple[JobStore, LocalBlobStore],
) -> None:
    store, storage = backends
    admin = create_token(store, "ops", admin=True)
    erin = create_token(store, "erin", quota=Quota(max_running=1))
    # A GPU engine: there would be an ETA, but a paused pool's requests have none.
    app = create_app(Settings(worker=WorkerSettings(engines={POOL: "wan"})), store, storage)
    with _client(app, erin) as client:
        running = client.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
        held = client.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
        assert store.claim([POOL], "w", 30) is not None  # erin's first one runs
        mine = client.get(f"/requests/{held}").json()
        assert (mine["status"], mine["hold"]) == ("IN_QUEUE", "HELD")
        assert mine["eta_seconds"] is not None  # it waits for a run to end: that has an ETA
        assert client.get(f"/queue/vidq/{T2V}/requests/{held}/status").json()["hold"] == "HELD"
        assert client.get(f"/requests/{running}").json()["hold"] is None

        as_admin = {"Authorization": f"Bearer {admin}"}
        assert client.post(f"/admin/pools/{POOL}/pause", headers=as_admin).json()["paused"]
        native = client.get(f"/queue/{T2V}/requests/{held}/status").json()
        assert native["statusMessages"]["message"] == "PAUSED" and "etaSeconds" not in native
        mine = client.get(f"/requests/{held}").json()
        assert (mine["hold"], mine["eta_seconds"], mine["queue_position"]) == ("PAUSED", None, 0)
        fal = client.get(f"/queue/vidq/{T2V}/requests/{held}/status").json()
        assert (fal["hold"], fal["eta_seconds"]) == ("PAUSED", None)
        # A running request goes on in a paused pool: nothing holds it.
        assert client.get(f"/requests/{running}").json()["hold"] is None
