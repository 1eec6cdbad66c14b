"""The fal-compatible dialect's wire details, over plain HTTP with httpx against the
in-process stack: `Key` auth,
`x-fal-request-id`, queue priority `low`, the status shapes, cancel, the SSE stream."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.support.stack import stack

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}
APP = "/queue/vidq/wan22-fast-t2v"


def test_queue_shapes_priority_cancel_and_stream(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as server:  # nothing runs: jobs stay queued
        token = server.token("falhttp")
        client = server.client(None)
        client.headers["Authorization"] = f"Key {token}"
        normal = client.post(APP, json=SMALL)
        assert normal.status_code == 200, normal.text
        sub = normal.json()
        rid = sub["request_id"]
        assert normal.headers["x-fal-request-id"] == rid
        assert sub["response_url"] == f"{server.url}{APP}/requests/{rid}"
        assert sub["status_url"].endswith("/status") and sub["cancel_url"].endswith("/cancel")
        assert sub["queue_position"] == 0
        low = client.post(APP, json=SMALL, headers={"X-Fal-Queue-Priority": "low"}).json()
        later = client.post(APP, json=SMALL, headers={"X-Fal-Queue-Priority": "normal"}).json()
        assert later["queue_position"] == 1  # ahead of the low one submitted before it
        status = client.get(low["status_url"]).json()
        assert status["status"] == "IN_QUEUE" and status["queue_position"] == 2
        assert status["logs"] is None
        with_logs = client.get(low["status_url"], params={"logs": "true"}).json()
        assert with_logs["logs"][0]["message"].startswith(f"Request {low['request_id']} queued")
        bad = client.post(APP, json=SMALL, headers={"X-Fal-Queue-Priority": "urgent"})
        assert bad.status_code == 422

        not_ready = client.get(sub["response_url"])
        assert not_ready.status_code == 400 and "IN_QUEUE" in not_ready.json()["detail"]
        cancelled = client.put(sub["cancel_url"])
        assert cancelled.status_code == 202
        assert cancelled.json() == {"status": "CANCELLATION_REQUESTED"}
        again = client.put(sub["cancel_url"])
        assert again.status_code == 400 and again.json()["status"] == "ALREADY_COMPLETED"
        final = client.get(sub["status_url"]).json()
        assert final["status"] == "COMPLETED" and final["error_type"] == "request_cancelled"

        # The SSE stream of a finished request: one event, then the stream ends.
        with client.stream("GET", sub["status_url"] + "/stream", params={"logs": "1"}) as s:
            assert s.headers["content-type"].startswith("text/event-stream")
            assert s.headers["x-fal-request-id"] == rid
            events = [line for line in s.iter_lines() if line.startswith("data: ")]
        assert len(events) == 1
        event = json.loads(events[0].removeprefix("data: "))
        assert event["status"] == "COMPLETED" and event["logs"][-1]["message"] == "Cancelled"

        # Bearer works too; other users see 404; unknown models are 404.
        other = server.client(server.token("someone-else"))
        assert other.get(sub["status_url"]).status_code == 404
        assert other.put(later["cancel_url"]).status_code == 404
        assert client.post("/queue/vidq/no-such-model", json=SMALL).status_code == 404
        assert client.get(f"{APP}/requests/abc/status").status_code == 400
        anonymous = server.client(None)
        assert anonymous.post(APP, json=SMALL).status_code == 401
        invalid = client.post(APP, content=b"{not json")
        assert invalid.status_code == 422


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_limits_isolation_and_run_timeout(tmp_path: Path) -> None:
    """fal's upload routes over plain HTTP: both upload paths, the size limit (413, nothing
    kept), another user's upload URL (422 naming the field, 404 to download), bytes that
    do not decode (422 at submit), a lifecycle header, and fal.run's 504 (no worker)."""
    data = tmp_path / "data"
    with stack(data, workers=0, max_input_bytes=64 * 1024, run_timeout=1) as server:
        alice = server.client(None)
        alice.headers["Authorization"] = f"Key {server.token('alice')}"
        bob = server.client(None)
        bob.headers["Authorization"] = f"Key {server.token('bob')}"
        i2v = "/queue/fal-ai/wan/v2.2-a14b/image-to-video/turbo"

        # fal-cdn-v3: a token, then the raw bytes; the expiry asked for is accepted.
        grant = alice.post("/fal/storage/auth/token", params={"storage_type": "fal-cdn-v3"})
        assert grant.status_code == 200 and grant.json()["base_url"] == f"{server.url}/fal"
        cdn = server.client(None)
        cdn.headers["Authorization"] = f"{grant.json()['token_type']} {grant.json()['token']}"
        lifecycle = {"X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 60}'}
        up = cdn.post(
            "/fal/files/upload",
            content=_png(64, 48),
            headers={"Content-Type": "image/png", "X-Fal-File-Name": "a.png", **lifecycle},
        )
        assert up.status_code == 200, up.text
        url = up.json()["access_url"]
        assert url.startswith(f"{server.url}/fal/files/") and url.endswith("/a.png")
        assert server.client(None).post("/fal/files/upload", content=b"x").status_code == 401

        # initiate + PUT to the signed URL (no credentials), then the file URL as input.
        init_b = alice.post(
            "/fal/storage/upload/initiate", json={"content_type": "image/png", "file_name": "b.png"}
        ).json()
        assert httpx.put(init_b["upload_url"], content=_png(48, 64)).status_code == 200
        forged = init_b["upload_url"].replace("signature=", "signature=0")
        assert httpx.put(forged, content=b"x").status_code == 401
        ok = alice.post(
            i2v, json={"prompt": "p", "image_url": init_b["file_url"], "resolution": "480p"}
        )
        assert ok.status_code == 200, ok.text

        # Over the limit: 413 and nothing kept (no blob under uploads/).
        big = cdn.post(
            "/fal/files/upload", content=b"\0" * (65 * 1024), headers={"Content-Type": "image/png"}
        )
        assert big.status_code == 413
        init = alice.post("/fal/storage/upload/initiate", json={"content_type": "image/png"}).json()
        assert httpx.put(init["upload_url"], content=b"\0" * (65 * 1024)).status_code == 413
        kept = sorted(p.name for p in data.rglob("*") if p.is_file() and "uploads" in p.parts)
        assert kept == ["a.png", "b.png"], kept

        # Another user: the URL is not theirs to use or read.
        stolen = bob.post(i2v, json={"prompt": "p", "image_url": url})
        assert stolen.status_code == 422 and stolen.json()["detail"][0]["loc"] == [
            "body",
            "image_url",
        ]
        assert bob.get(url).status_code == 404
        assert alice.get(url).content == _png(64, 48)

        # Bytes that are not an image: accepted as an upload, refused at submit by name.
        text = cdn.post(
            "/fal/files/upload", content=b"hello", headers={"Content-Type": "image/png"}
        )
        bad = alice.post(i2v, json={"prompt": "p", "image_url": text.json()["access_url"]})
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "image_url"]
        # A native model takes fal's URL names on the fal dialect.
        native = alice.post("/queue/vidq/wan22-fast-i2v", json={"prompt": "p", "image_url": url})
        assert native.status_code == 200, native.text

        # fal.run with no worker: 504 naming the request, which stays queued.
        ran = alice.post("/run/vidq/wan22-fast-t2v", json=SMALL)
        assert ran.status_code == 504, ran.text
        rid = ran.json()["request_id"]
        assert ran.headers["x-fal-request-id"] == rid and rid in ran.json()["detail"]
        assert alice.get(ran.json()["status_url"]).json()["status"] == "IN_QUEUE"

        # Retention: uploads without an expiry of their own go after VIDQ_UPLOAD_TTL (here
        # 0); the one that asked for 60 s stays. A dry run deletes nothing.
        def gc(*args: str) -> dict[str, Any]:
            """What `vidq gc ARGS` reports with VIDQ_UPLOAD_TTL=0 (the same collector)."""
            return server.gc(dry_run="--dry-run" in args, upload_ttl=0)

        def uploads() -> list[str]:
            return sorted(p.name for p in data.rglob("*") if p.is_file() and "uploads" in p.parts)

        before = uploads()
        dry = gc("--dry-run")
        # b.png, the text file, and the initiated upload whose PUT was refused (no blob)
        assert dry["uploads_expired"] == 3 and uploads() == before, dry["would_delete"]
        assert gc()["uploads_expired"] == 3
        assert uploads() == ["a.png"]
        assert alice.get(init_b["file_url"]).status_code == 404
        late = alice.post(i2v, json={"prompt": "p", "image_url": init_b["file_url"]})
        assert late.status_code == 422 and late.json()["detail"][0]["loc"] == ["body", "image_url"]
        assert alice.get(url).content == _png(64, 48)
