"""Hostile request bodies (issue 12, "bounded inputs"), over HTTP against the in-process
stack:

- NUL or a lone surrogate in any string: 422 naming the field, nothing stored, on SQLite
  and on PostgreSQL (PostgreSQL used to store the job and then answer 503 on every read of
  it: the store decided what a user saw);
- invalid UTF-8, a 5,000-digit integer, deep nesting: 422 with a ``detail`` list, never
  the framework's 400 or 500, on the native and the fal routes;
- unknown fields over ``VIDQ_MAX_FIELDS_BYTES``: 413 naming the limit (media not counted).

The memory of the processes under hostile images (read from /proc) is an acceptance test:
tests/acceptance/test_service.py.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.media import b64
from tests.support.servers import PostgresServer
from tests.support.stack import Stack, stack
from tests.support.stores import Database

NATIVE = "/queue/wan22-fast-t2v"
FAL = "/queue/fal-ai/wan22-fast-t2v"
I2V = "/queue/wan22-fast-i2v"
FIELDS_LIMIT = 256 * 1024  # VIDQ_MAX_FIELDS_BYTES's default


class _Stacks:
    """One stack and one user per job store, started on first use and kept for the module."""

    def __init__(self, exits: contextlib.ExitStack, root: Path, request: Any) -> None:
        self.exits, self.root, self.request = exits, root, request
        self.running: dict[str, tuple[Stack, str]] = {}

    def get(self, kind: str) -> tuple[Stack, str]:
        if kind not in self.running:
            database = Database("sqlite")
            if kind == "postgres":
                pg: PostgresServer = self.request.getfixturevalue("pg_server")
                database = Database("postgres", pg.create_database())
            s = self.exits.enter_context(stack(self.root / kind, workers=0, database=database))
            self.running[kind] = (s, s.token("mallory"))
        return self.running[kind]


@pytest.fixture(scope="module")
def stacks(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[_Stacks]:
    with contextlib.ExitStack() as exits:
        yield _Stacks(exits, tmp_path_factory.mktemp("hostile"), request)


@pytest.fixture
def kind() -> str:
    """The job store of a test here: SQLite, unless it is parametrized with both."""
    return "sqlite"


BOTH = pytest.mark.parametrize(
    "kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)


@pytest.fixture
def server(stacks: _Stacks, kind: str) -> Stack:
    return stacks.get(kind)[0]


@pytest.fixture
def client(stacks: _Stacks, kind: str) -> Iterator[httpx.Client]:
    server, token = stacks.get(kind)
    with server.client(token) as c:
        yield c


def _stored(server: Stack, client: httpx.Client) -> tuple[list[str], list[Path]]:
    r = client.get("/requests", params={"limit": 100})
    assert r.status_code == 200, r.text
    inputs = server.data_dir / "blobs" / "vidq" / "inputs"
    blobs = sorted(p for p in inputs.rglob("*") if p.is_file()) if inputs.exists() else []
    return [item["request_id"] for item in r.json()["requests"]], blobs


@pytest.fixture
def nothing_stored(server: Stack, client: httpx.Client) -> Callable[[], None]:
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


@BOTH
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


@BOTH
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
