"""Live previews end to end on the preview engine: while a job runs, its status carries a
signed URL of an animated WebP of the video so far, which moves on as the run does; the
fal status stream sends it as a ``preview`` event when asked; the preview is deleted when
the job ends, and another user never sees it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.support.stack import Stack, stack
from tests.support.wait import eventually, wait_status
from vidq.engines.previews import MAX_FRAMES, MAX_SIDE

MODEL = "wan22-fast-t2v"
# 4 steps of 1 s over 2 s of 128x128 frames: the run takes about 4 s, so previews at a
# 0.5 s interval show each step, each for about a second: a loaded machine's status polls,
# slower than the steps, would see the first preview late and the job end before a later one.
JOB = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 2}


@pytest.fixture
def running(tmp_path: Path) -> Any:
    with stack(tmp_path / "data", preview_step_seconds=1.0, preview_interval=0.5) as s:
        yield s


def _preview(client: httpx.Client, rid: str) -> dict[str, Any] | None:
    body = client.get(f"/queue/{MODEL}/requests/{rid}/status").json()
    assert body["status"] in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED"), body
    if body["status"] == "COMPLETED":
        assert "preview" not in body
    return body.get("preview") if body["status"] == "IN_PROGRESS" else None


def _frames(data: bytes) -> tuple[list[Image.Image], int]:
    """The frames of an animated WebP and how long it plays (ms)."""
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == "WEBP"
        frames, played = [], 0
        for i in range(getattr(img, "n_frames", 1)):
            img.seek(i)
            frames.append(img.convert("RGB").copy())
            played += int(img.info.get("duration", 0))
        return frames, played


def test_a_running_job_shows_a_moving_preview_that_is_gone_when_it_ends(running: Stack) -> None:
    s = running
    alice = s.client(s.token("alice"))
    rid = alice.post(f"/queue/{MODEL}", json=JOB).json()["request_id"]

    first = eventually(lambda: _preview(alice, rid), 60, interval=0.05, what="a first preview")
    assert first["content_type"] == "image/webp"
    assert first["updated_at"].endswith("Z")
    got = httpx.get(first["url"], timeout=10)
    assert got.status_code == 200 and got.headers["content-type"] == "image/webp"
    assert got.headers["cache-control"] == "no-store"
    early, early_ms = _frames(got.content)
    assert 1 <= len(early) <= MAX_FRAMES and max(early[0].size) <= MAX_SIDE

    # A later preview shows a later step and more of the video. The preview's file is
    # replaced at each step: what a status names may be newer when it is fetched, so its
    # frames are read as they are served, until they show more than the first did.
    def later() -> tuple[dict[str, Any], list[Image.Image], int] | None:
        shown = _preview(alice, rid)
        if shown is None or shown["step"] <= first["step"]:
            return None
        got = httpx.get(shown["url"], timeout=10)
        if got.status_code != 200:  # the job ended meanwhile: its preview is gone
            return None
        frames, played = _frames(got.content)
        return (shown, frames, played) if played > early_ms else None

    second, late, late_ms = eventually(later, 60, interval=0.05, what="a later, longer preview")
    assert len(late) <= MAX_FRAMES and late_ms > early_ms  # more of the video, as long to play

    # The other user sees neither the job nor its preview.
    bob = s.client(s.token("bob"))
    assert bob.get(f"/queue/{MODEL}/requests/{rid}/status").status_code == 404

    done = wait_status(alice, MODEL, rid, {"COMPLETED", "FAILED"})
    assert done["status"] == "COMPLETED" and "preview" not in done
    # the run recorded what its previews cost it
    result = alice.get(f"/queue/{MODEL}/requests/{rid}").json()
    assert "video" in result
    job = s.store.get(int(rid))
    assert job is not None and job.result_meta["previews"] >= 2
    assert job.result_meta["preview_seconds"] < 1.0
    # deleted with the end of the attempt: no preview object is left
    assert s.storage.keys("previews/") == []
    gone = httpx.get(second["url"], timeout=10)
    assert gone.status_code == 404


def test_previews_off_shows_none(tmp_path: Path) -> None:
    with stack(tmp_path / "data", preview_step_seconds=0.3, preview_interval=0) as s:
        alice = s.client(s.token("alice"))
        rid = alice.post(f"/queue/{MODEL}", json=JOB).json()["request_id"]
        seen: list[dict[str, Any]] = []

        def finished() -> bool:
            body = alice.get(f"/queue/{MODEL}/requests/{rid}/status").json()
            if "preview" in body:
                seen.append(body)
            return body["status"] == "COMPLETED"

        eventually(finished, 60, interval=0.05, what="the job to complete")
        assert seen == []
        assert s.storage.keys("previews/") == []


def test_the_fal_status_stream_sends_preview_events_when_asked(running: Stack) -> None:
    s = running
    alice = s.client(s.token("alice"))
    rid = alice.post(f"/queue/{MODEL}", json=JOB).json()["request_id"]
    url = f"/queue/vidq/{MODEL}/requests/{rid}/status/stream"
    events: list[tuple[str, dict[str, Any]]] = []
    with alice.stream("GET", url, params={"previews": "true"}, timeout=60) as response:
        assert response.status_code == 200
        name = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[len("data: ") :])))
                name = "message"
    previews = [data for name, data in events if name == "preview"]
    statuses = [data for name, data in events if name == "message"]
    assert previews, events
    assert all(p["content_type"] == "image/webp" and p["step"] >= 1 for p in previews)
    steps = [p["step"] for p in previews]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # each sent once
    assert statuses[-1]["status"] == "COMPLETED"
    assert all("preview" not in st for st in statuses)  # fal's status objects stay fal's

    # without ?previews the stream is fal's alone: no named events
    rid2 = alice.post(f"/queue/{MODEL}", json=JOB).json()["request_id"]
    url2 = f"/queue/vidq/{MODEL}/requests/{rid2}/status/stream"
    with alice.stream("GET", url2, timeout=60) as response:
        lines = list(response.iter_lines())
    assert not any(line.startswith("event:") for line in lines)
