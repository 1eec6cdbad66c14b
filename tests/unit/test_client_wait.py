"""Waiting for a request and getting its result, for both clients, against a loopback
server that plays a request's life: what ``wait`` reports, when it gives up, what
``result``/``download``/``run`` return or raise."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import vidq
from tests.unit.client_harness import (
    KINDS,
    Answer,
    ScriptedServer,
    run_with,
    scripted_server,
    settle,
)

pytestmark = pytest.mark.parametrize("kind", KINDS)

MODEL = "wan22-fast-t2v"
RESULT_PATH = f"/queue/{MODEL}/requests/5"
MP4 = b"\x00\x00\x00\x18ftypmp42 not really a video"


def state(status: str, **fields: Any) -> Answer:
    return Answer(200, {"request_id": "5", "model_id": MODEL, "status": status, **fields})


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with scripted_server() as s:
        yield s


def test_wait_polls_until_finished_and_reports_every_poll(
    kind: str, server: ScriptedServer
) -> None:
    server.script(
        "/requests/5",
        state("IN_QUEUE", queue_position=2, eta_seconds=9.5),
        state("IN_PROGRESS", progress={"done": 1, "total": 4}),
        state("COMPLETED", progress={"done": 4, "total": 4}),
    )
    updates: list[vidq.Status] = []

    async def script(client: Any) -> Any:
        handle = await settle(client.get_handle("5", MODEL))
        return await settle(handle.wait(on_update=updates.append, poll_interval=0.1))

    final = run_with(kind, server.url, script)
    assert final.status == "COMPLETED" and final.finished and (final.done, final.total) == (4, 4)
    assert [u.status for u in updates] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    assert (updates[0].queue_position, updates[0].eta_seconds) == (2, 9.5)
    assert (updates[1].done, updates[1].total, updates[1].finished) == (1, 4, False)
    assert len(server.on("/requests/5")) == 3
    assert all(gap >= 0.1 for gap in server.gaps("/requests/5"))  # the poll interval


def test_status_says_why_a_queued_request_waits_and_its_seed(
    kind: str, server: ScriptedServer
) -> None:
    """A paused queue (no ETA: it waits for an operator), the token's max_running, or
    nothing; the seed the request runs with, from the submit on."""
    server.script(
        "/requests/5",
        state("IN_QUEUE", queue_position=3, hold="PAUSED", eta_seconds=None, seed=42),
        state("IN_QUEUE", queue_position=0, hold="HELD", eta_seconds=8.0, seed=42),
        state("IN_QUEUE", queue_position=0, hold=None, eta_seconds=4.0, seed=42),
        state("IN_PROGRESS", progress={"done": 1, "total": 4}, seed=42),
        state("COMPLETED", progress={"done": 4, "total": 4}, seed=42),
    )
    updates: list[vidq.Status] = []

    async def script(client: Any) -> Any:
        handle = await settle(client.get_handle("5", MODEL))
        return await settle(handle.wait(on_update=updates.append, poll_interval=0.01))

    final = run_with(kind, server.url, script)
    paused, held, free, running = updates[:4]
    assert (paused.paused, paused.held, paused.hold, paused.eta_seconds) == (
        True, False, "PAUSED", None
    )  # fmt: skip
    assert (held.paused, held.held, held.hold, held.eta_seconds) == (False, True, "HELD", 8.0)
    assert (free.paused, free.held, free.hold) == (False, False, None)
    assert not running.paused and not running.held
    assert [u.seed for u in updates] == [42] * 5 and final.seed == 42


def test_wait_gives_up_at_its_timeout(kind: str, server: ScriptedServer) -> None:
    server.script("/requests/5", state("IN_QUEUE", queue_position=0))

    async def script(client: Any) -> Any:
        handle = await settle(client.get_handle("5", MODEL))
        return await settle(handle.wait(poll_interval=0.05, timeout=0.3))

    started = time.monotonic()
    with pytest.raises(vidq.WaitTimeout, match="request 5 is still IN_QUEUE") as timeout:
        run_with(kind, server.url, script)
    assert isinstance(timeout.value, TimeoutError)
    assert time.monotonic() - started >= 0.3
    assert len(server.on("/requests/5")) >= 3  # it kept polling until then


@pytest.mark.parametrize(
    ("final", "error"),
    [
        (state("FAILED", error="out of memory", error_type="EngineError"), vidq.RequestFailed),
        (state("CANCELLED"), vidq.RequestCancelled),
    ],
)
def test_a_request_without_a_result_raises(
    kind: str, server: ScriptedServer, final: Answer, error: type[Exception]
) -> None:
    server.script("/requests/5", final)

    async def script(client: Any) -> Any:
        return await settle((await settle(client.get_handle("5", MODEL))).result())

    with pytest.raises(error) as raised:
        run_with(kind, server.url, script)
    if isinstance(raised.value, vidq.RequestFailed):
        assert raised.value.error == "out of memory" and raised.value.error_type == "EngineError"
    assert server.on(RESULT_PATH) == []  # the result is not asked for


def test_run_submits_waits_and_returns_the_result(kind: str, server: ScriptedServer) -> None:
    result = {"video": {"data_uri": "data:video/mp4;base64," + base64.b64encode(MP4).decode()}}
    server.script(f"/queue/{MODEL}", Answer(200, {"request_id": "5"}))
    server.script("/requests/5", state("IN_PROGRESS"), state("COMPLETED"))
    server.script(RESULT_PATH, Answer(200, result))
    seen: list[str] = []

    def script(client: Any) -> Any:
        return client.run(MODEL, {"prompt": "x"}, on_update=lambda s: seen.append(s.status))

    assert run_with(kind, server.url, script) == result
    assert seen == ["IN_PROGRESS", "COMPLETED"]
    polls = [("GET", "/requests/5")] * 3  # two while waiting, one before the result
    assert [(s.method, s.target) for s in server.seen] == [
        ("POST", f"/queue/{MODEL}"),
        *polls,
        ("GET", RESULT_PATH),
    ]


def test_download_writes_the_video_of_either_result_form(
    kind: str, server: ScriptedServer, tmp_path: Path
) -> None:
    """Base64 in the result, or a signed URL fetched without the client's token."""
    server.script("/requests/5", state("COMPLETED"))
    server.script("/files/5.mp4", Answer(200, MP4, {"Content-Type": "video/mp4"}))
    signed = f"{server.url}/files/5.mp4?sig=abc"
    forms = {
        "base64.mp4": "data:video/mp4;base64," + base64.b64encode(MP4).decode(),
        "signed.mp4": signed,
    }
    for name, value in forms.items():
        server.script(RESULT_PATH, Answer(200, {"video": {"data_uri": value}}))

        async def script(client: Any, name: str = name) -> Any:
            handle = await settle(client.get_handle("5"))  # the model is looked up
            return await settle(handle.download(tmp_path / "out" / name))

        path = run_with(kind, server.url, script)
        assert path == tmp_path / "out" / name and path.read_bytes() == MP4
    (fetch,) = server.on("/files/5.mp4")
    assert fetch.target == "/files/5.mp4?sig=abc" and "authorization" not in fetch.headers
    assert server.on(RESULT_PATH)[0].headers["authorization"] == "Bearer t"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["base64.mp4", "signed.mp4"]
