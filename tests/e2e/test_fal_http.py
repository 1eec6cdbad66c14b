"""The fal-compatible dialect's wire details, over plain HTTP with httpx: `Key` auth,
`x-fal-request-id`, queue priority `low`, the status shapes, cancel, the SSE stream."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import serve

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}
APP = "/queue/vidq/wan22-fast-t2v"


def test_queue_shapes_priority_cancel_and_stream(tmp_path: Path) -> None:
    with serve(tmp_path / "data", workers=0) as server:  # nothing runs: jobs stay queued
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
