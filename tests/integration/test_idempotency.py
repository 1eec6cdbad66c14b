"""Idempotency-Key: the store returns the first job for a reused key, also under a race,
and the API answers the same request id (the in-process stack, on SQLite and on
PostgreSQL: the store settles a duplicate key)."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.support.stack import stack
from tests.support.stores import Database
from vidq.jobs import NewJob
from vidq.store import open_store


def _new(key: str | None, user: str = "alice") -> NewJob:
    return NewJob(
        user=user, model_id="wan22-fast-t2v", pool="wan22-t2v", tier=0, priority=0,
        inputs={"prompt": "x"}, idempotency_key=key,
    )  # fmt: skip


def test_concurrent_enqueues_with_one_key_make_one_job(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    try:
        ids: list[int] = []
        errors: list[BaseException] = []
        start = threading.Barrier(8)

        def submit() -> None:
            try:
                start.wait()
                ids.append(store.enqueue(_new("key-1")).id)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=submit) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(ids) == 8 and len(set(ids)) == 1
        assert len(store.list_jobs("alice", 100)) == 1
        # The key is per user; no key never deduplicates.
        assert store.enqueue(_new("key-1", user="bob")).id != ids[0]
        assert store.enqueue(_new(None)).id != store.enqueue(_new(None)).id
    finally:
        store.close()


def test_api_replays_the_same_request_id(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as server:
        client = server.client(server.token("alice"))
        body = {"prompt": "a fox", "width": 128, "height": 128, "duration": 1}
        headers = {"Idempotency-Key": "abc-123"}
        first = client.post("/queue/wan22-fast-t2v", json=body, headers=headers)
        again = client.post("/queue/wan22-fast-t2v", json=body, headers=headers)
        assert first.status_code == again.status_code == 200
        assert first.json()["request_id"] == again.json()["request_id"]
        assert "idempotent-replayed" not in first.headers
        assert again.headers["idempotent-replayed"] == "true"
        fal = client.post("/queue/vidq/wan22-fast-t2v", json=body, headers=headers)
        assert fal.json()["request_id"] == first.json()["request_id"]
        other = client.post("/queue/wan22-fast-t2v-pro", json=body, headers=headers)
        assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
        bad = client.post(
            "/queue/wan22-fast-t2v", json=body, headers={"Idempotency-Key": "k" * 201}
        )
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "Idempotency-Key"]
        listed = client.get("/requests").json()["requests"]
        assert [r["request_id"] for r in listed] == [first.json()["request_id"]]


def test_concurrent_http_submits_with_one_key_get_one_request(
    tmp_path: Path, database: Database
) -> None:
    with stack(tmp_path / "data", workers=0, database=database) as server:
        token = server.token("racer")
        body = {"prompt": "a fox", "width": 128, "height": 128, "duration": 1}
        answers: list[tuple[int, str]] = []
        start = threading.Barrier(6)

        def submit() -> None:
            with server.client(token) as client:
                start.wait()
                r = client.post(
                    "/queue/wan22-fast-t2v", json=body, headers={"Idempotency-Key": "k"}
                )
                answers.append((r.status_code, r.json()["request_id"]))

        threads = [threading.Thread(target=submit) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(answers) == 6
        assert {code for code, _ in answers} == {200}
        assert len({rid for _, rid in answers}) == 1
        with server.client(token) as client:
            assert len(client.get("/requests").json()["requests"]) == 1
