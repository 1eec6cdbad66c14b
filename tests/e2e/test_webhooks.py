"""Webhooks: `?fal_webhook=URL` on submit gets a signed POST with fal's body shape once the
request is finished, retried with backoff, and still delivered after an API restart."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import vidq
from tests.helpers import probe_mp4, serve

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records deliveries; answers ``statuses`` in turn (then the last one forever)."""

    statuses: list[int] = []  # noqa: RUF012
    got: list[tuple[dict[str, str], bytes, float]] = []  # noqa: RUF012

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        Receiver.got.append((dict(self.headers), body, time.monotonic()))
        code = Receiver.statuses.pop(0) if len(Receiver.statuses) > 1 else Receiver.statuses[0]
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.statuses, Receiver.got = [200], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?source=test"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(count: int, timeout: float = 30) -> list[tuple[dict[str, str], bytes, float]]:
    deadline = time.monotonic() + timeout
    while len(Receiver.got) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(Receiver.got) >= count, f"{len(Receiver.got)} deliveries, wanted {count}"
    return Receiver.got


def test_fal_webhook_is_signed_retried_and_carries_the_video(tmp_path: Path, receiver: str) -> None:
    Receiver.statuses = [500, 200]  # the first delivery fails, the retry succeeds
    with serve(tmp_path / "data", webhook_allow_loopback_http="true") as server:
        token = server.token("hooked")
        client = server.client(token)
        r = client.post("/queue/vidq/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        got = wait_for(2)
        secret = vidq.Client(server.url, token).webhook_secret()
        for headers, body, _ in got:
            assert vidq.verify_webhook(secret, headers, body)
            assert not vidq.verify_webhook(secret + "x", headers, body)
        assert got[1][2] - got[0][2] >= 1.5  # backoff between the tries
        payload: dict[str, Any] = json.loads(got[1][1])
        assert payload["request_id"] == payload["gateway_request_id"] == rid
        assert payload["status"] == "OK" and payload["error"] is None
        video = payload["payload"]["video"]
        data = httpx.get(video["url"], timeout=30).content
        assert len(data) == video["file_size"]
        assert probe_mp4(data, tmp_path).frames == 17
        time.sleep(1.0)
        assert len(Receiver.got) == 2  # delivered: no more tries
        assert not list((tmp_path / "data" / "blobs" / "vidq" / "webhooks").glob("*.json"))


def test_native_webhook_reports_a_failure(tmp_path: Path, receiver: str) -> None:
    settings = {"engines": "wan22-t2v-fp8=nonexistent", "max_attempts": 1}
    with serve(tmp_path / "data", webhook_allow_loopback_http="true", **settings) as server:
        client = server.client(server.token("hooked"))
        r = client.post("/queue/wan22-t2v-fp8", params={"fal_webhook": receiver}, json=SMALL)
        assert r.status_code == 200, r.text
        payload = json.loads(wait_for(1)[0][1])
        assert payload["status"] == "ERROR" and "nonexistent" in payload["error"]
        assert payload["payload"]["error_type"] == "EngineUnavailable"


def test_unsafe_webhook_targets_are_422(tmp_path: Path) -> None:
    with serve(tmp_path / "data", workers=0) as server:
        client = server.client(server.token("hooked"))
        for url in ("http://127.0.0.1:9/hook", "https://10.0.0.1/x", "https://169.254.169.254/"):
            for path in ("/queue/wan22-fast-t2v", "/queue/vidq/wan22-fast-t2v"):
                r = client.post(path, params={"fal_webhook": url}, json=SMALL)
                assert r.status_code == 422, (url, path, r.text)
                assert r.json()["detail"][0]["loc"] == ["body", "fal_webhook"]
        assert client.get("/requests").json()["requests"] == []


def test_pending_webhook_survives_an_api_restart(tmp_path: Path, receiver: str) -> None:
    Receiver.statuses = [503]  # the receiver is down while the first server runs
    data = tmp_path / "data"
    with serve(data, webhook_allow_loopback_http="true") as server:
        token = server.token("hooked")
        client = server.client(token)
        r = client.post("/queue/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL)
        rid = r.json()["request_id"]
        wait_for(1)
    Receiver.statuses = [200]
    tries = len(Receiver.got)
    with serve(data, webhook_allow_loopback_http="true"):
        got = wait_for(tries + 1)
    payload = json.loads(got[-1][1])
    assert payload["request_id"] == rid and payload["status"] == "OK"
