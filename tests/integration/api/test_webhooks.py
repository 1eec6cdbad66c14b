"""Webhooks: `?fal_webhook=URL` on submit gets a signed POST with fal's body shape once the
request is finished, retried with backoff, registered with the job itself (a storage
outage at submit loses nothing), delivered once after an API restart and once by two API
replicas sharing one job store. The job store is the outbox, so those run on SQLite and on
PostgreSQL.

"Delivered once" is watched for as long as a second delivery would take to come: past
the backoff the dispatcher would wait before retrying (``past_the_next_retry``)."""

from __future__ import annotations

import contextlib
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
from tests.support.media import probe_mp4
from tests.support.stack import stack
from tests.support.stores import Database
from tests.support.wait import eventually, holds, wait_status
from vidq.api.webhooks import POLL_S

SMALL = {"prompt": "a kite", "width": 128, "height": 128, "duration": 1}
# The servers' first retry backoff (VIDQ_WEBHOOK_RETRY_BACKOFF_SECONDS), short so that
# watching past a retry takes seconds, not the default's tens of seconds.
BACKOFF_S = 0.5
HOOKS: dict[str, Any] = {
    "webhook_allow_loopback_http": "true",
    "webhook_retry_backoff_seconds": BACKOFF_S,
}


class Receiver(http.server.BaseHTTPRequestHandler):
    """Records deliveries; answers ``statuses`` in turn (then the last one forever)."""

    statuses: list[int] = []  # noqa: RUF012
    got: list[tuple[dict[str, str], bytes, float]] = []  # noqa: RUF012
    accepted: list[str] = []  # noqa: RUF012  # request ids of the deliveries answered 2xx

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        code = Receiver.statuses.pop(0) if len(Receiver.statuses) > 1 else Receiver.statuses[0]
        if 200 <= code < 300:
            Receiver.accepted.append(json.loads(body)["request_id"])
        Receiver.got.append((dict(self.headers), body, time.monotonic()))
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    Receiver.statuses, Receiver.got, Receiver.accepted = [200], [], []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook?source=test"
    finally:
        server.shutdown()
        server.server_close()


def wait_for(count: int, timeout: float = 30) -> list[tuple[dict[str, str], bytes, float]]:
    eventually(lambda: len(Receiver.got) >= count, timeout, what=f"{count} deliveries")
    return Receiver.got


def past_the_next_retry(attempts: int) -> float:
    """How long to watch for a duplicate of a webhook delivered at its ``attempts``-th try:
    the backoff the dispatcher waits after that try, two of its polls, and a second."""
    return BACKOFF_S * 2 ** (attempts - 1) + 2 * POLL_S + 1.0


def test_fal_webhook_is_signed_retried_and_carries_the_video(
    tmp_path: Path, receiver: str, database: Database
) -> None:
    Receiver.statuses = [500, 500, 200]  # two deliveries fail, the second retry succeeds
    with stack(tmp_path / "data", database=database, **HOOKS) as server:
        token = server.token("hooked")
        client = server.client(token)
        r = client.post("/queue/vidq/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL)
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        got = wait_for(3)
        secret = vidq.Client(server.url, token).webhook_secret()
        for headers, body, _ in got:
            assert vidq.verify_webhook(secret, headers, body)
            assert not vidq.verify_webhook(secret + "x", headers, body)
        # The tries are the configured backoff apart, doubling (the default's 2 s + 4 s
        # would put the third at least 6 s after the first).
        assert got[1][2] - got[0][2] >= 0.75 * BACKOFF_S
        assert got[2][2] - got[1][2] >= 0.75 * 2 * BACKOFF_S
        assert got[2][2] - got[0][2] < 6.0
        payload: dict[str, Any] = json.loads(got[2][1])
        assert payload["request_id"] == payload["gateway_request_id"] == rid
        assert payload["status"] == "OK" and payload["error"] is None
        video = payload["payload"]["video"]
        data = httpx.get(video["url"], timeout=30).content
        assert len(data) == video["file_size"]
        assert probe_mp4(data, tmp_path).frames == 17
        # delivered: no more tries, not even after the backoff of a fourth
        holds(lambda: len(Receiver.got) == 3, past_the_next_retry(3), what="three deliveries")
        assert not list((tmp_path / "data" / "blobs" / "vidq" / "webhooks").glob("*.json"))


def test_native_webhook_reports_a_failure(tmp_path: Path, receiver: str) -> None:
    settings = {"preview_fail_prompt": "[fail]", "max_attempts": 1}
    with stack(tmp_path / "data", **HOOKS, **settings) as server:
        client = server.client(server.token("hooked"))
        body = {**SMALL, "prompt": "a [fail] on purpose"}
        r = client.post("/queue/wan22-t2v-fp8", params={"fal_webhook": receiver}, json=body)
        assert r.status_code == 200, r.text
        payload = json.loads(wait_for(1)[0][1])
        assert payload["status"] == "ERROR" and "[fail]" in payload["error"]
        assert payload["payload"]["error_type"] == "PreviewFailure"


def test_unsafe_webhook_targets_are_422(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as server:
        client = server.client(server.token("hooked"))
        for url in ("http://127.0.0.1:9/hook", "https://10.0.0.1/x", "https://169.254.169.254/"):
            for path in ("/queue/wan22-fast-t2v", "/queue/vidq/wan22-fast-t2v"):
                r = client.post(path, params={"fal_webhook": url}, json=SMALL)
                assert r.status_code == 422, (url, path, r.text)
                assert r.json()["detail"][0]["loc"] == ["body", "fal_webhook"]
        assert client.get("/requests").json()["requests"] == []


def test_an_api_stops_its_dispatcher_at_once_not_at_its_next_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutting an API down ends the dispatcher's loop at once: with a poll a minute apart,
    its thread is gone when the server has stopped (``stop`` waits 5 s for it at most)."""
    from vidq.api import webhooks

    monkeypatch.setattr(webhooks, "POLL_S", 60.0)

    def dispatchers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "vidq-webhooks"}

    before = dispatchers()
    with stack(tmp_path / "data", workers=0):
        assert len(dispatchers() - before) == 1
    assert dispatchers() - before == set()


def test_pending_webhook_survives_an_api_restart(
    tmp_path: Path, receiver: str, database: Database
) -> None:
    Receiver.statuses = [503]  # the receiver is down while the first server runs
    data = tmp_path / "data"
    hooks = {"database": database, **HOOKS}
    with stack(data, **hooks) as server:
        token = server.token("hooked")
        client = server.client(token)
        r = client.post("/queue/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL)
        rid = r.json()["request_id"]
        wait_for(1)
    Receiver.statuses = [200]
    tries = len(Receiver.got)
    with stack(data, **hooks):
        got = wait_for(tries + 1)
        # past the next backoff: a second delivery would have come by now
        holds(lambda: len(Receiver.got) == tries + 1, past_the_next_retry(tries + 1),
              what="delivered once")  # fmt: skip
    payload = json.loads(got[-1][1])
    assert payload["request_id"] == rid and payload["status"] == "OK"


def receipts() -> dict[str, list[int]]:
    """The request ids delivered so far, each with the indexes of its deliveries."""
    by_id: dict[str, list[int]] = {}
    for i, (_, body, _) in enumerate(Receiver.got):
        by_id.setdefault(json.loads(body)["request_id"], []).append(i)
    return by_id


@contextlib.contextmanager
def broken(folder: Path) -> Iterator[None]:
    """``folder`` is a regular file for the block: nothing can be written under it, not
    even by root (for whom permissions are no obstacle)."""
    away = folder.with_name(folder.name + ".away")
    folder.rename(away)
    folder.write_bytes(b"not a folder")
    try:
        yield
    finally:
        folder.unlink()
        away.rename(folder)


def test_a_webhook_submitted_during_a_storage_outage_is_delivered_once(
    tmp_path: Path, receiver: str, database: Database
) -> None:
    """Issue 12, row 8: the webhook is registered by the job's own INSERT. A text-to-video
    submit writes nothing to storage, so it succeeds while storage is down; its webhook
    is delivered once the job has run, and a retry with the same Idempotency-Key replays
    the job without a second webhook (before: 503 for a job that existed and ran, then
    200 on the retry, and no webhook ever)."""
    blobs = tmp_path / "blobs"
    settings = {"storage_url": f"file://{blobs}", **HOOKS}
    with stack(tmp_path / "data", workers=0, database=database, **settings) as server:
        client = server.client(server.token("hooked"))
        headers = {"Idempotency-Key": "kite-1"}
        submit = {"params": {"fal_webhook": receiver}, "json": SMALL, "headers": headers}
        with broken(blobs):
            assert client.get("/ready").json()["checks"]["storage"] != "ok"
            r = client.post("/queue/vidq/wan22-fast-t2v", **submit)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            again = client.post("/queue/vidq/wan22-fast-t2v", **submit)
            assert again.status_code == 200, again.text
            assert again.json()["request_id"] == rid
        assert server.drain() == 1
        wait_status(client, "vidq/wan22-fast-t2v", rid, {"COMPLETED"})
        payload = json.loads(wait_for(1)[0][1])
        assert payload["request_id"] == rid and payload["status"] == "OK"
        assert payload["payload"]["video"]["file_size"] > 0
        third = client.post("/queue/vidq/wan22-fast-t2v", **submit)  # after delivery too
        assert third.status_code == 200 and third.json()["request_id"] == rid
        holds(lambda: receipts() == {rid: [0]}, past_the_next_retry(1), what="one delivery")
        assert [q["request_id"] for q in client.get("/requests").json()["requests"]] == [rid]
    assert not (blobs / "vidq" / "webhooks").exists()  # no outbox in the storage


def test_two_api_replicas_deliver_each_webhook_once(
    tmp_path: Path, receiver: str, database: Database
) -> None:
    """Two API replicas on one job store (and one storage): each webhook is delivered by
    one of them, including one that was pending (its receiver down) when the second
    replica started."""
    Receiver.statuses = [503]  # the receiver is down until both replicas run
    data = tmp_path / "data"
    hooks = {"database": database, **HOOKS}
    with stack(data, **hooks) as first:
        token = first.token("hooked")
        one = first.client(token)
        r = one.post("/queue/vidq/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL)
        assert r.status_code == 200, r.text
        rids = [r.json()["request_id"]]
        wait_for(1)  # its first try failed: it is pending, to be retried
        with stack(data, workers=0, **hooks) as second:
            Receiver.statuses = [200]
            two = second.client(token)
            for client in (one, two, two, one):
                r = client.post(
                    "/queue/vidq/wan22-fast-t2v", params={"fal_webhook": receiver}, json=SMALL
                )
                assert r.status_code == 200, r.text
                rids.append(r.json()["request_id"])
            eventually(lambda: set(Receiver.accepted) == set(rids), 30, what="every delivery")
            # past a retry's backoff (the first one's second): a duplicate would have come
            holds(lambda: sorted(Receiver.accepted) == sorted(rids), past_the_next_retry(2),
                  what="each delivered exactly once")  # fmt: skip
    assert sorted(Receiver.accepted) == sorted(rids)  # each delivered exactly once
