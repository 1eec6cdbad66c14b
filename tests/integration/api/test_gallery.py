"""The gallery's API, over real HTTP against the in-process stack running real preview jobs,
on SQLite and on PostgreSQL: poster frames (a JPEG still made by the worker at completion,
stored next to the output and served by signed URL), ``GET /requests`` filtered by model,
status and prompt text (``q``), ``DELETE /requests/{id}`` (blobs gone, the row kept as
``deleted``, its result 410), each user seeing and deleting only their own, and retention
deleting a poster with its output. The web app's gallery: tests/acceptance/
test_webapp_gallery.py; the poster of a remote worker: tests/integration/
test_worker_protocol.py."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.media import b64, encode_image, picture
from tests.support.stack import Stack, stack
from tests.support.stores import Database
from tests.support.wait import eventually, wait_status
from vidq.jobs import poster_key

T2V = "wan22-fast-t2v"
PRO = "wan22-fast-t2v-pro"  # the same pool, another model
I2V = "wan22-fast-i2v"
SIZE = {"width": 224, "height": 128, "duration": 1}


def submit(client: httpx.Client, prompt: str, model: str = T2V, **extra: Any) -> str:
    r = client.post(f"/queue/{model}", json={"prompt": prompt, **SIZE, **extra})
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def listed(client: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    """Every page of ``GET /requests`` with ``params``, followed through ``next_before``."""
    found: list[dict[str, Any]] = []
    before = None
    while True:
        query = {**params, **({"before": before} if before else {})}
        r = client.get("/requests", params=query)
        assert r.status_code == 200, r.text
        page = r.json()
        found.extend(page["requests"])
        before = page["next_before"]
        if before is None:
            return found


def prompts(client: httpx.Client, **params: Any) -> list[str]:
    return [r["inputs"]["prompt"] for r in listed(client, **params)]


def job_of(s: Stack, rid: str) -> Any:
    job = s.store.get(int(rid))
    assert job is not None
    return job


def test_posters_filters_and_search(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, preview_step_seconds=0, database=database) as s:
        ann, bob = s.client(s.token("ann")), s.client(s.token("bob"))
        fox = submit(ann, "A Red Fox in the snow")
        joy = submit(ann, "100% pure_joy at noon")
        sea = submit(ann, "a calm sea", PRO)
        gone = submit(ann, "a red balloon, never run")
        submit(bob, "a red fox of bob's")
        cancelled = ann.put(f"/queue/{T2V}/requests/{gone}/cancel")
        assert cancelled.is_success, cancelled.text
        assert s.drain() == 4
        for rid, model in ((fox, T2V), (joy, T2V), (sea, PRO)):
            wait_status(ann, model, rid, {"COMPLETED"})

        # Posters: a signed URL of a JPEG still at most 480 px wide, for completed requests.
        mine = {r["request_id"]: r for r in listed(ann)}
        assert set(mine) == {fox, joy, sea, gone}
        assert mine[gone]["status"] == "CANCELLED" and mine[gone]["poster_url"] is None
        for rid in (fox, joy, sea):
            url = mine[rid]["poster_url"]
            assert "/files/" in url and "signature=" in url, url
            got = httpx.get(url, timeout=30)  # no token: the URL is the credential
            assert got.status_code == 200, got.text
            assert got.headers["content-type"].startswith("image/jpeg")
            still = Image.open(io.BytesIO(got.content))
            assert still.format == "JPEG" and still.size == (224, 128)  # never scaled up
            assert ann.get(f"/requests/{rid}").json()["poster_url"]  # the detail has one too
            assert s.storage.exists(poster_key(job_of(s, rid).result_key))
        tampered = httpx.get(mine[fox]["poster_url"] + "0", timeout=30)  # the signature
        assert tampered.status_code == 401, tampered.text

        # Filters, each alone and together, paged one at a time.
        assert prompts(ann, status="COMPLETED", limit=1) == [
            "a calm sea", "100% pure_joy at noon", "A Red Fox in the snow",
        ]  # fmt: skip
        assert prompts(ann, status="CANCELLED") == ["a red balloon, never run"]
        assert prompts(ann, status="IN_QUEUE") == []
        assert prompts(ann, model_id=PRO) == ["a calm sea"]
        assert prompts(ann, model_id=T2V, status="COMPLETED") == [
            "100% pure_joy at noon", "A Red Fox in the snow",
        ]  # fmt: skip
        # q: a case-insensitive substring of the prompt; bob's fox is not ann's
        assert prompts(ann, q="red FOX") == ["A Red Fox in the snow"]
        assert prompts(ann, q="RED") == ["a red balloon, never run", "A Red Fox in the snow"]
        assert prompts(bob, q="red fox") == ["a red fox of bob's"]
        assert prompts(ann, q="red", status="COMPLETED") == ["A Red Fox in the snow"]
        # SQL wildcards match themselves
        assert prompts(ann, q="%") == ["100% pure_joy at noon"]
        assert prompts(ann, q="0% p") == ["100% pure_joy at noon"]
        assert prompts(ann, q="_") == ["100% pure_joy at noon"]
        assert prompts(ann, q="e_j") == ["100% pure_joy at noon"]
        assert prompts(ann, q="a_c") == []  # "_" is no single-character wildcard
        assert prompts(ann, q="\\") == []

        # Bad filters: 422 naming the parameter.
        for params, name in (
            ({"q": "x" * 201}, "q"),
            ({"q": ""}, "q"),
            ({"status": "DONE"}, "status"),
            ({"model_id": "m" * 201}, "model_id"),
        ):
            r = ann.get("/requests", params=params)
            assert r.status_code == 422, (params, r.text)
            assert any(e["loc"][-1] == name for e in r.json()["detail"]), r.text
        assert ann.get("/requests", params={"q": "x" * 200}).status_code == 200


def test_delete_a_request(tmp_path: Path, database: Database) -> None:
    with stack(
        tmp_path / "data", workers=0, preview_step_seconds=0, database=database, input_ttl=3600
    ) as s:
        ann, bob = s.client(s.token("ann")), s.client(s.token("bob"))
        image = b64(encode_image(picture(224, 128, seed=1), "PNG"))
        rid = submit(ann, "she turns", I2V, data_uri=image, height=128)
        kept = submit(ann, "the one kept")
        queued = submit(ann, "still queued")
        # Queued (and running, below): refused until it has ended; the body says why.
        r = ann.delete(f"/requests/{queued}")
        assert r.status_code == 409 and "cancel it first" in r.json()["detail"], r.text
        assert ann.put(f"/queue/{T2V}/requests/{queued}/cancel").is_success
        assert s.drain() == 2
        wait_status(ann, I2V, rid, {"COMPLETED"})
        job = job_of(s, rid)
        blobs = [job.result_key, poster_key(job.result_key), *job.inputs["_blobs"].values()]
        assert all(s.storage.exists(k) for k in blobs), blobs
        before = ann.get(f"/requests/{rid}").json()
        usage = ann.get("/usage").json()["total"]

        # Another user's request is not found, and stays as it was.
        assert bob.delete(f"/requests/{rid}").status_code == 404
        assert bob.get(f"/requests/{rid}").status_code == 404
        assert all(s.storage.exists(k) for k in blobs)
        assert ann.delete("/requests/999999").status_code == 404

        r = ann.delete(f"/requests/{rid}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["deleted"] is True and body["status"] == "COMPLETED"
        assert body["poster_url"] is None and body["expired"] is True
        assert not any(s.storage.exists(k) for k in blobs), blobs
        # What remains: the row with its status, times and cost, out of the list.
        after = ann.get(f"/requests/{rid}").json()
        for field in ("status", "created_at", "started_at", "finished_at", "metrics", "seed"):
            assert after[field] == before[field], field
        assert after["deleted"] is True and after["inputs"]["prompt"] == "she turns"
        assert [r["request_id"] for r in listed(ann)] == [queued, kept]
        assert ann.get("/usage").json()["total"] == usage  # usage and billing unchanged
        result = ann.get(f"/queue/{I2V}/requests/{rid}")
        assert result.status_code == 410 and "deleted" in result.json()["detail"], result.text
        status = ann.get(f"/queue/{I2V}/requests/{rid}/status").json()
        assert status["status"] == "COMPLETED" and status["expired"] is True
        assert ann.delete(f"/requests/{rid}").json()["deleted"] is True  # again: as it is
        # The collector finds nothing left of it.
        assert s.gc()["blobs_deleted"] == 0

        # A failed or cancelled request is deleted too (no output: its inputs only).
        r = ann.delete(f"/requests/{queued}")
        assert r.status_code == 200 and r.json()["status"] == "CANCELLED"
        assert [r["request_id"] for r in listed(ann)] == [kept]

        # A running one: 409.
        slow = submit(ann, "a slow one")
        worker = s.start_worker(burst=True, preview_step_seconds=0.5)
        wait_status(ann, T2V, slow, {"IN_PROGRESS"})
        r = ann.delete(f"/requests/{slow}")
        assert r.status_code == 409 and "IN_PROGRESS" in r.json()["detail"], r.text
        worker.join(60)
        wait_status(ann, T2V, slow, {"COMPLETED"})
        assert ann.delete(f"/requests/{slow}").status_code == 200


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
def test_retention_deletes_the_poster_with_the_output(tmp_path: Path, database: Database) -> None:
    with stack(tmp_path / "data", workers=0, preview_step_seconds=0, database=database) as s:
        ann = s.client(s.token("ann"))
        rid = submit(ann, "a lighthouse")
        assert s.drain() == 1
        wait_status(ann, T2V, rid, {"COMPLETED"})
        output = job_of(s, rid).result_key
        assert s.storage.exists(output) and s.storage.exists(poster_key(output))
        dry = s.gc(dry_run=True, output_ttl=0)
        assert {output, poster_key(output)} <= set(dry["would_delete"])
        report = s.gc(output_ttl=0)
        assert report["outputs_expired"] == 1
        eventually(lambda: not s.storage.exists(output), 10)
        assert not s.storage.exists(poster_key(output))
        assert ann.get(f"/requests/{rid}").json()["poster_url"] is None
