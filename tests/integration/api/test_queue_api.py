"""The spec, walked over real HTTP against the in-process stack (tests/support/stack.py):
positions, order, cancel, progress, results, downloads, error codes and isolation. A worker
killed mid-job is an acceptance test (tests/acceptance/test_faults.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.stack import Stack, stack
from tests.support.wait import eventually, wait_status

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def submit(
    client: httpx.Client, model: str = T2V, headers: dict[str, str] | None = None, **inputs: object
) -> str:
    r = client.post(f"/queue/{model}", json={**SMALL, **inputs}, headers=headers or {})
    assert r.status_code == 200, r.text
    body = r.json()
    rid = body["request_id"]
    assert rid.isdigit()
    base = str(client.base_url).rstrip("/")
    assert body["response_url"] == f"{base}/queue/{model}/requests/{rid}"
    assert body["status_url"] == body["response_url"] + "/status"
    assert body["cancel_url"] == body["response_url"] + "/cancel"
    return str(rid)


def position(client: httpx.Client, rid: str, model: str = T2V) -> int:
    body = client.get(f"/queue/{model}/requests/{rid}/status").json()
    assert body["status"] == "IN_QUEUE", body
    assert body["statusMessages"] == {}
    assert body["response_url"].endswith(f"/queue/{model}/requests/{rid}")
    return int(body["queue_position"])


def completed_in_order(s: Stack, pool: str) -> list[str]:
    """The request ids of a pool's completed jobs, in the order workers started them."""
    admin = s.client(s.admin_token)
    r = admin.get("/admin/requests", params={"pool": pool, "state": "COMPLETED", "limit": 100})
    assert r.status_code == 200, r.text
    jobs = sorted(r.json()["requests"], key=lambda j: j["started_at"])
    return [str(j["request_id"]) for j in jobs]


@pytest.fixture
def api_only(tmp_path: Path) -> Iterator[Stack]:
    with stack(tmp_path / "data", workers=0) as s:
        yield s


def test_queue_positions_cancel_and_order(api_only: Stack) -> None:
    alice = api_only.client(api_only.token("alice", max_priority=100))
    first = submit(alice)
    second = submit(alice)
    assert [position(alice, first), position(alice, second)] == [0, 1]

    # priority jumps the line within the pool; tier (-pro, -premium) outranks priority
    urgent = submit(alice, priority=50)
    pro = submit(alice, "wan22-fast-t2v-pro")
    premium = submit(alice, "wan22-fast-t2v-premium", priority=-5)
    assert position(alice, premium, "wan22-fast-t2v-premium") == 0
    assert position(alice, pro, "wan22-fast-t2v-pro") == 1
    assert position(alice, urgent) == 2
    assert [position(alice, first), position(alice, second)] == [3, 4]

    # another pool has its own queue
    other = submit(alice, "wan22-t2v-fp8")
    assert position(alice, other, "wan22-t2v-fp8") == 0

    # cancel while queued: 204; the jobs behind move up; cancelling again: 409
    assert alice.put(f"/queue/{T2V}/requests/{first}/cancel").status_code == 204
    assert alice.get(f"/queue/{T2V}/requests/{first}/status").json()["status"] == "CANCELLED"
    assert position(alice, second) == 3
    again = alice.put(f"/queue/{T2V}/requests/{first}/cancel")
    assert again.status_code == 409
    assert "CANCELLED" in again.json()["detail"]
    assert alice.get(f"/queue/{T2V}/requests/{first}").status_code == 409

    assert api_only.drain() == 5  # a burst worker (`vidq worker --burst`): these and fp8's
    assert completed_in_order(api_only, "wan22-t2v") == [premium, pro, urgent, second]
    done = alice.get(f"/queue/{T2V}/requests/{second}/status").json()
    assert done["status"] == "COMPLETED"
    assert done["queue_position"] == 0 and done["etaSeconds"] == 0
    assert done["statusMessages"]["result_uri"].startswith("s3://vidq/outputs/free/")
    assert done["statusMessages"]["results"] == [done["statusMessages"]["result_uri"]]
    # finished jobs cannot be cancelled
    assert alice.put(f"/queue/{T2V}/requests/{second}/cancel").status_code == 409


def test_progress_result_and_binary_download(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=1, preview_step_seconds=0.4) as server:
        alice = server.client(server.token("alice"))
        rid = submit(alice, width=256, height=144, duration=2)
        running = wait_status(alice, T2V, rid, {"IN_PROGRESS"})
        messages = running["statusMessages"]
        assert messages["message"] == "PROCESSING"
        assert messages["detail_message"].startswith("Progress: ")
        assert messages["detail_message"].endswith(" Tasks done")
        # The pool has no history yet and the preview engine gives no estimate: the ETA
        # keys are left out rather than guessed (test_service.py: they come with history).
        assert "estimated_total_time_seconds" not in messages and "etaSeconds" not in running
        seen = set()

        def finished() -> dict[str, object] | None:
            body = alice.get(f"/queue/{T2V}/requests/{rid}/status").json()
            if body["status"] != "IN_PROGRESS":
                return dict(body)
            seen.add(body["statusMessages"]["detail_message"])
            return None

        body = eventually(finished, 60, interval=0.1, what="the job to finish")
        assert body["status"] == "COMPLETED"
        assert len(seen) >= 2, seen  # progress moved while we watched
        assert all(m.endswith("/5 Tasks done") for m in seen), seen  # 4 steps + encode

        info = probe_mp4(result_mp4(alice, T2V, rid), tmp_path)
        assert (info.width, info.height, info.frames) == (256, 144, 33)
        assert info.duration == pytest.approx(33 / 16)
        assert (info.codec, info.pix_fmt) == ("h264", "yuv420p")

        # x-pipelet-output: binary -> a signed, expiring URL served by the API
        brid = submit(alice, headers={"x-pipelet-output": "binary"})
        wait_status(alice, T2V, brid, {"COMPLETED"})
        video = alice.get(f"/queue/{T2V}/requests/{brid}").json()["video"]
        url = video["data_uri"]
        assert url == video["data_url"] and url.startswith(server.url + "/files/")
        got = httpx.get(url)
        assert got.status_code == 200
        assert probe_mp4(got.content, tmp_path).frames == 17
        tampered = url.replace("signature=", "signature=0")
        assert httpx.get(tampered).status_code == 401
        assert httpx.get(url.split("?")[0]).status_code == 401

        # /fal/download for the caller's own output
        status = alice.get(f"/queue/{T2V}/requests/{brid}/status").json()
        bucket, key = status["statusMessages"]["result_uri"].removeprefix("s3://").split("/", 1)
        dl = alice.get(f"/fal/download/{bucket}/{key}")
        assert dl.status_code == 200
        assert dl.json()["key"] == key and dl.json()["r2_uri"] == f"r2://{bucket}/{key}"
        assert httpx.get(dl.json()["url"]).content == got.content


def test_error_codes_and_isolation(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=1, max_body_bytes=100_000) as server:
        alice = server.client(server.token("alice", max_priority=40))
        bob = server.client(server.token("bob"))
        rid = submit(alice)
        wait_status(alice, T2V, rid, {"COMPLETED"})

        # 401: no token, unknown token, wrong scheme
        anon = server.client(None)
        assert anon.post(f"/queue/{T2V}", json=SMALL).status_code == 401
        assert (
            server.client("vq_nope").get(f"/queue/{T2V}/requests/{rid}/status").status_code == 401
        )
        basic = anon.get(f"/queue/{T2V}/requests/{rid}", headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401

        # 400: malformed request ids
        for bad in ("abc", "-1", "1.5", "9" * 40):
            r = alice.get(f"/queue/{T2V}/requests/{bad}/status")
            assert r.status_code == 400, (bad, r.text)
            assert "requestId" in r.json()["detail"]

        # 404: unknown model, unknown request, another user's request on all five endpoints
        assert alice.post("/queue/no-such-model", json=SMALL).status_code == 404
        assert alice.get(f"/queue/no-such-model/requests/{rid}/status").status_code == 404
        assert alice.get(f"/queue/{T2V}/requests/999999/status").status_code == 404
        status = alice.get(f"/queue/{T2V}/requests/{rid}/status").json()
        key = status["statusMessages"]["result_uri"].removeprefix("s3://vidq/")
        for method, path in (
            ("GET", f"/queue/{T2V}/requests/{rid}/status"),
            ("GET", f"/queue/{T2V}/requests/{rid}"),
            ("PUT", f"/queue/{T2V}/requests/{rid}/cancel"),
            ("GET", f"/fal/download/vidq/{key}"),
        ):
            r = bob.request(method, path)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert rid not in r.text or "not found" in r.text.lower()
        queued_for_bob = bob.post(f"/queue/{T2V}", json=SMALL)  # the fifth: bob's own submit works
        assert queued_for_bob.status_code == 200

        # 413: body over the limit
        big = alice.post(f"/queue/{T2V}", json={**SMALL, "pad": "x" * 200_000})
        assert big.status_code == 413

        # 422 names the field; nothing odd ever becomes a 500
        cases = {
            '{"prompt": "x", "width": 100}': "width",
            '{"prompt": "x", "width": 200}': "width",  # not a multiple of 16
            '{"prompt": "x", "height": NaN}': "height",
            '{"prompt": "x", "duration": Infinity}': "duration",
            '{"prompt": "x", "duration": 1e999}': "duration",
            '{"prompt": "x", "width": 123456789012345678901234567890}': "width",
            '{"prompt": "x", "priority": 41}': "priority",
            '{"prompt": ["x"]}': "prompt",
            '{"width": 256}': "prompt",
            "[1, 2, 3]": "body",
            '"just a string"': "body",
            "{not json": "body",
            '{"prompt": "x", "seed": -1}': "seed",
        }
        for raw, field in cases.items():
            r = alice.post(
                f"/queue/{T2V}", content=raw, headers={"Content-Type": "application/json"}
            )
            assert r.status_code == 422, (raw, r.status_code, r.text)
            detail = r.json()["detail"]
            assert any(field in [str(x) for x in d["loc"]] for d in detail), (raw, detail)
        # A validator's message reads as it was written, without pydantic's "Value error, "
        # (the type keeps the kind), on both dialects.
        for path in (f"/queue/{T2V}", f"/queue/vidq/{T2V}"):
            side = alice.post(path, json={**SMALL, "width": 200}).json()["detail"]
            assert side == [
                {
                    "loc": ["body", "width"],
                    "msg": "width must be a multiple of 16 (got 200)",
                    "type": "value_error",
                }
            ], (path, side)
        over = alice.post(f"/queue/{T2V}", json={**SMALL, "priority": 41}).json()["detail"]
        assert "maximum of 40" in over[0]["msg"]
