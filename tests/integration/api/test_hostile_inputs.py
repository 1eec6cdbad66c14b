"""Hostile request bodies and images (issue 12, "bounded inputs" and "bounded decoding"),
over HTTP against `vidq serve`, on SQLite and PostgreSQL:

- NUL or a lone surrogate in any string: 422 naming the field, nothing stored (PostgreSQL
  used to store the job and then answer 503 on every read of it);
- invalid UTF-8, a 5,000-digit integer, deep nesting: 422 with a ``detail`` list, never
  the framework's 400 or 500, on the native and the fal routes;
- unknown fields over ``VIDQ_MAX_FIELDS_BYTES``: 413 naming the limit (media not counted);
- memory, read from /proc: 40 parallel tiny PNGs declaring 6320x6320 (the API decoded
  each: 113 MB -> 1.1 GB), and a 1x50 PNG at ``new_resolution: 3840p`` (the engine child
  planned a 3840x192000 intermediate: 8.56 GB for a 128x480 video).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import io
import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.media import b64, png_header_bomb, probe_mp4, result_mp4
from tests.support.processes import Server, serve
from tests.support.wait import wait_status

NATIVE = "/queue/wan22-fast-t2v"
FAL = "/queue/fal-ai/wan22-fast-t2v"
I2V = "/queue/wan22-fast-i2v"
FIELDS_LIMIT = 256 * 1024  # VIDQ_MAX_FIELDS_BYTES's default
API_PEAK_MB = 600  # the API process, whatever the number of image submits
TREE_PEAK_MB = 600  # serve, its worker and the engine child together


class _Servers:
    """One `vidq serve` and one user per job-store backend, started on first use (the e2e
    conftest points helpers.DEFAULT_SETTINGS at the backend under test)."""

    def __init__(self, stack: contextlib.ExitStack, root: Path) -> None:
        self.stack, self.root = stack, root
        self.running: dict[str, tuple[Server, str]] = {}

    def get(self, backend: str) -> tuple[Server, str]:
        if backend not in self.running:
            server = self.stack.enter_context(serve(self.root / backend, workers=0))
            self.running[backend] = (server, server.token("mallory"))
        return self.running[backend]


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Servers]:
    with contextlib.ExitStack() as stack:
        yield _Servers(stack, tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def server(servers: _Servers, e2e_backend: str) -> Server:
    return servers.get(e2e_backend)[0]


@pytest.fixture
def client(servers: _Servers, e2e_backend: str) -> Iterator[httpx.Client]:
    server, token = servers.get(e2e_backend)
    with server.client(token) as c:
        yield c


def _stored(server: Server, client: httpx.Client) -> tuple[list[str], list[Path]]:
    r = client.get("/requests", params={"limit": 100})
    assert r.status_code == 200, r.text
    inputs = server.data_dir / "blobs" / "vidq" / "inputs"
    blobs = sorted(p for p in inputs.rglob("*") if p.is_file()) if inputs.exists() else []
    return [item["request_id"] for item in r.json()["requests"]], blobs


@pytest.fixture
def nothing_stored(server: Server, client: httpx.Client) -> Callable[[], None]:
    """Call it at the end of a test: no request and no input blob since the test began."""
    before = _stored(server, client)

    def check() -> None:
        assert _stored(server, client) == before

    return check


def post_raw(client: httpx.Client, route: str, body: bytes) -> httpx.Response:
    return client.post(route, content=body, headers={"Content-Type": "application/json"})


def detail_of_422(r: httpx.Response) -> list[dict[str, Any]]:
    assert r.status_code == 422, (r.status_code, r.text[:300])
    detail = r.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    for item in detail:
        assert set(item) == {"loc", "msg", "type"} and item["loc"][0] == "body", item
    return detail


# --- strings PostgreSQL cannot store ------------------------------------------------------

_STRINGS = {"NUL": "\u0000", "lone surrogate": "\ud800"}


@pytest.mark.parametrize("route", [NATIVE, FAL])
@pytest.mark.parametrize("char", list(_STRINGS))
@pytest.mark.parametrize("where", ["prompt", "unknown field", "key"])
def test_unstorable_strings_are_422_naming_the_field(
    client: httpx.Client, nothing_stored: Callable[[], None], route: str, char: str, where: str
) -> None:
    bad = _STRINGS[char]
    body: dict[str, Any] = {"prompt": "a lighthouse", "width": 128, "height": 128}
    if where == "prompt":
        body["prompt"], loc = f"a light{bad}house", ["body", "prompt"]
    elif where == "unknown field":
        body["style"], loc = {"tags": ["calm", f"dus{bad}k"]}, ["body", "style", "tags", 1]
    else:  # a key is shown escaped in the error
        body[f"opt{bad}"], loc = 1, ["body", "opt\\x00" if char == "NUL" else "opt\\ud800"]
    # json.dumps escapes both (\u0000, \ud800): the bytes on the wire are valid UTF-8.
    detail = detail_of_422(post_raw(client, route, json.dumps(body).encode()))
    assert detail[0]["loc"] == loc, detail
    assert ("NUL" if char == "NUL" else "surrogate") in detail[0]["msg"]
    nothing_stored()


def test_a_valid_surrogate_pair_is_an_ordinary_character(client: httpx.Client) -> None:
    body = b'{"prompt": "a lighthouse \\ud83c\\udf05", "width": 128, "height": 128}'
    r = post_raw(client, NATIVE, body)
    assert r.status_code == 200, r.text
    status = client.get(f"{NATIVE}/requests/{r.json()['request_id']}/status")
    assert status.status_code == 200 and status.json()["status"] == "IN_QUEUE"


# --- bodies the framework answered 400 or 500 ---------------------------------------------

_BAD_BODIES = {
    "invalid UTF-8": (b'{"prompt": "caf\xe9 au lait"}', "UTF-8", ["body"]),
    "5,000-digit integer": (
        b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}",
        "5000 digits",
        ["body", "seed"],
    ),
    "5,000-digit unknown": (
        b'{"prompt": "x", "n": [-' + b"9" * 5000 + b"]}",
        "5000 digits",
        ["body", "n", 0],
    ),
    "NaN": (b'{"prompt": "x", "cfg": NaN}', "NaN", ["body", "cfg"]),
    "1e999": (b'{"prompt": "x", "cfg": 1e999}', "out of range", ["body", "cfg"]),
    "nested 300 deep": (
        b'{"prompt": "x", "a": ' + b"[" * 300 + b"]" * 300 + b"}",
        "deeper than 32",
        ["body", "a", *[0] * 31],
    ),
    "nested 100k deep": (
        b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "deeper than 32",
        ["body"],
    ),
    "truncated": (b'{"prompt": "x", ', "invalid JSON", ["body"]),
    "not an object": (b'["prompt", "x"]', "JSON object", ["body"]),
}


@pytest.mark.parametrize("route", [NATIVE, FAL])
@pytest.mark.parametrize("case", list(_BAD_BODIES))
def test_bad_bodies_are_422_with_detail(
    client: httpx.Client, nothing_stored: Callable[[], None], route: str, case: str
) -> None:
    body, words, loc = _BAD_BODIES[case]
    detail = detail_of_422(post_raw(client, route, body))
    assert words in detail[0]["msg"] and detail[0]["loc"] == loc, detail
    nothing_stored()


# --- the JSON apart from media is bounded -------------------------------------------------


@pytest.mark.parametrize("route", [NATIVE, FAL])
def test_oversize_unknown_fields_are_413_naming_the_limit(
    client: httpx.Client, nothing_stored: Callable[[], None], route: str
) -> None:
    base = {"prompt": "x", "width": 128, "height": 128}
    one_big = {**base, "junk": "A" * (FIELDS_LIMIT + 1)}
    many_small = {**base, **{f"k{i}": [0] * 10 for i in range(FIELDS_LIMIT // 20)}}
    # data_uri is not a media field of text-to-video: it counts like any unknown field.
    t2v_data_uri = {**base, "data_uri": "A" * (FIELDS_LIMIT + 1)}
    for body in (one_big, many_small, t2v_data_uri):
        r = client.post(route, json=body)
        assert r.status_code == 413, (r.status_code, r.text[:300])
        assert f"limit of {FIELDS_LIMIT} bytes (VIDQ_MAX_FIELDS_BYTES)" in r.json()["detail"]
    assert "'junk'" in client.post(route, json=one_big).json()["detail"]
    # A million containers are refused before json.loads builds any.
    r = post_raw(client, route, b'{"prompt": "x", "a": [' + b"{}," * 1_000_000 + b"{}]}")
    assert r.status_code == 413 and "VIDQ_MAX_FIELDS_BYTES" in r.json()["detail"]
    nothing_stored()
    # Under the limit, unknown fields are accepted and forwarded (the spec).
    r = client.post(route, json={**base, "junk": "A" * (FIELDS_LIMIT - 1000)})
    assert r.status_code == 200, r.text[:300]


def test_media_does_not_count_towards_the_fields_limit(client: httpx.Client) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (320, 320, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG")
    assert len(out.getvalue()) > FIELDS_LIMIT
    r = client.post(I2V, json={"prompt": "x", "data_uri": b64(out.getvalue()), "duration": 1})
    assert r.status_code == 200, r.text[:300]


# --- memory, measured from /proc -----------------------------------------------------------


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (children of every thread, not just the main one)."""
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                found += _tree(int(child))
    return found


def _status_mb(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) // 1024
    return None


@dataclasses.dataclass
class TreeMemory:
    """Samples a process tree every 10 ms: the peak (sum over processes of each one's
    VmHWM, an upper bound of the tree's real peak). Past ``kill_mb`` of resident memory
    it kills the descendants, so a regression fails the test instead of the machine."""

    pid: int
    kill_mb: int
    peaks: dict[int, int] = dataclasses.field(default_factory=dict)
    killed: bool = False

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            resident = 0
            for pid in pids:
                hwm, rss = _status_mb(pid, "VmHWM"), _status_mb(pid, "VmRSS")
                if hwm is not None:
                    self.peaks[pid] = max(self.peaks.get(pid, 0), hwm)
                resident += rss or 0
            if resident > self.kill_mb:
                self.killed = True
                for pid in pids[1:]:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return sum(self.peaks.values())


def test_40_parallel_png_header_bombs_keep_the_api_small(tmp_path: Path) -> None:
    bomb = b64(png_header_bomb(6320, 6320))  # 69 bytes; decoded, 160 MB of pixels
    with serve(tmp_path / "data", workers=0) as srv:
        with srv.client(srv.token("mallory")) as c:
            memory = TreeMemory(srv.proc.pid, kill_mb=4 * API_PEAK_MB)

            def submit(_: int) -> httpx.Response:
                return c.post(I2V, json={"prompt": "x", "data_uri": bomb})

            with concurrent.futures.ThreadPoolExecutor(40) as pool:
                answers = list(pool.map(submit, range(40)))
            peak = memory.stop()
            assert {r.status_code for r in answers} == {422}, answers[0].text
            assert "unreadable png" in answers[0].json()["detail"][0]["msg"]
            assert _stored(srv, c) == ([], [])
    print(f"\nAPI peak with 40 parallel 6320x6320 PNG bombs: {peak} MB")
    assert not memory.killed and peak < API_PEAK_MB, peak


def test_a_1x50_png_at_3840p_completes_in_bounded_memory(tmp_path: Path) -> None:
    out = io.BytesIO()
    Image.new("RGB", (1, 50), (10, 120, 230)).save(out, format="PNG")  # 75 bytes
    body = {"prompt": "x", "data_uri": b64(out.getvalue()), "new_resolution": "3840p"}
    with serve(tmp_path / "data", workers=1) as srv:
        with srv.client(srv.token("mallory")) as c:
            memory = TreeMemory(srv.proc.pid, kill_mb=4 * TREE_PEAK_MB)
            try:
                r = c.post(I2V, json={**body, "duration": 1})
                assert r.status_code == 200, r.text
                rid = r.json()["request_id"]
                deadline = time.monotonic() + 120
                while not memory.killed and time.monotonic() < deadline:
                    status = c.get(f"{I2V}/requests/{rid}/status").json()["status"]
                    if status in ("COMPLETED", "FAILED"):
                        break
                    time.sleep(0.1)
            finally:
                peak = memory.stop()
            print(f"\nserve tree peak for a 1x50 PNG at 3840p: {peak} MB")
            assert not memory.killed and peak < TREE_PEAK_MB, peak
            assert wait_status(c, "wan22-fast-i2v", rid, {"COMPLETED"})["status"] == "COMPLETED"
            # 1:50 at the default height 480: the width is clamped to 128.
            info = probe_mp4(result_mp4(c, "wan22-fast-i2v", rid), tmp_path)
            assert (info.width, info.height, info.frames) == (128, 480, 17)
