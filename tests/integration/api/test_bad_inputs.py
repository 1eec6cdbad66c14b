"""Bad inputs: each a clear 4xx naming the field, and nothing queued or stored.

The server allows http:// input URLs (VIDQ_FETCH_ALLOW_HTTP) so that the address rules,
not the scheme rule, are what turn the loopback URLs away; a loopback HTTP server counts
the requests that reach it (none may).
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.loopback import loopback_http
from tests.support.media import b64, encode_image, picture, png_header_bomb, tone, wav_bytes
from tests.support.stack import Stack, stack

PNG = encode_image(picture(64, 48), "PNG")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("bad") / "data"
    with stack(data, workers=0, fetch_allow_http="true") as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Stack) -> Iterator[httpx.Client]:
    with server.client(server.token("mallory")) as c:
        yield c


def nothing_stored(server: Stack) -> None:
    """No job of any user (as an operator lists them), no input blob."""
    with server.client(server.admin_token) as admin:
        r = admin.get("/admin/requests", params={"limit": 100})
    assert r.status_code == 200 and r.json()["requests"] == [], r.text
    inputs = server.data_dir / "blobs" / "vidq" / "inputs"
    assert not inputs.exists() or not [p for p in inputs.rglob("*") if p.is_file()]


def rejected(r: httpx.Response, field: str, status: int = 422) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if status == 422:
        assert any(field in item["loc"] for item in detail), detail
        return " ".join(item["msg"] for item in detail)
    assert isinstance(detail, str)
    return detail


I2V = "/queue/wan22-fast-i2v"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("!!! not base64 !!!", "base64"),
        ("aGVsbG8gd29ybGQ", "expected a PNG, JPEG or WEBP image"),  # "hello world"
        ("data:image/png,rawbytes", "base64"),
        (b64(PNG[: len(PNG) // 2]), "unreadable png"),  # truncated PNG
        (b64(png_header_bomb(50000, 50000)), "pixels"),
        (b64(wav_bytes(tone(0.2))), "got wav audio"),  # audio where an image belongs
        ("file:///etc/passwd", "not allowed"),
        ("ftp://example.com/a.png", "not allowed"),
    ],
)
def test_bad_image_is_422_naming_the_field(
    server: Stack, client: httpx.Client, value: str, words: str
) -> None:
    r = client.post(I2V, json={"prompt": "x", "data_uri": value})
    assert words in rejected(r, "data_uri")
    nothing_stored(server)


def test_bad_second_image_names_its_field(server: Stack, client: httpx.Client) -> None:
    body = {"prompt": "x", "data_uri": b64(PNG), "second_image_uri": b64(PNG[:40])}
    rejected(client.post(I2V, json=body), "second_image_uri")
    nothing_stored(server)


def test_audio_that_is_really_text(server: Stack, client: httpx.Client) -> None:
    text = b64(b"ID3 this is not audio at all, just a text file " * 20)
    body = {"prompt": "x", "data_uri": b64(PNG), "audio_uri": text}
    assert "unreadable mp3 audio" in rejected(
        client.post("/queue/wan22-s2v-fast", json=body), "audio_uri"
    )
    plain = {**body, "audio_uri": b64(b"just words, no magic bytes")}
    assert "expected WAV" in rejected(client.post("/queue/wan22-s2v-fast", json=plain), "audio_uri")
    nothing_stored(server)


def test_foley_needs_a_video(server: Stack, client: httpx.Client) -> None:
    r = client.post("/queue/hunyuan-foley", json={"prompt": "x", "data_uri": b64(PNG)})
    assert "expected an MP4" in rejected(r, "data_uri")
    nothing_stored(server)


def test_reserved_fields_are_refused(server: Stack, client: httpx.Client) -> None:
    body = {"prompt": "x", "_blobs": {"data_uri": "inputs/alice/secret/data_uri"}}
    rejected(client.post("/queue/wan22-fast-t2v", json=body), "_blobs")
    nothing_stored(server)


def test_sizing_fields_are_validated(server: Stack, client: httpx.Client) -> None:
    base = {"prompt": "x", "data_uri": b64(PNG)}
    rejected(client.post(I2V, json={**base, "height": 500}), "height")
    rejected(client.post(I2V, json={**base, "min_height": 100}), "min_height")
    rejected(client.post(I2V, json={**base, "new_resolution": "huge"}), "new_resolution")
    rejected(client.post(I2V, json={**base, "new_resolution": "9000x10"}), "new_resolution")
    rejected(client.post(I2V, json={**base, "duration": 0}), "duration")
    nothing_stored(server)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "10.0.0.1", "169.254.169.254", "[::ffff:127.0.0.1]", "localhost", "[::1]"],
)
def test_urls_to_internal_addresses_are_refused(
    server: Stack, client: httpx.Client, host: str
) -> None:
    with loopback_http({"/latest/meta-data/x.png": (200, {}, PNG)}) as (base, hits):
        port = base.rsplit(":", 1)[1]
        for scheme in ("http", "https"):
            url = f"{scheme}://{host}:{port}/latest/meta-data/x.png?X-Amz-Signature=abc"
            msg = rejected(client.post(I2V, json={"prompt": "x", "data_uri": url}), "data_uri")
            assert "not allowed" in msg and "Signature" not in msg
        assert hits == []  # nothing reached the loopback server
    nothing_stored(server)


def test_a_200_mb_body_is_413_by_content_length(server: Stack) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    token = server.token("bob")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /queue/wan22-fast-i2v HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: 209715200\r\n\r\n"
            + b'{"prompt": "x", "data_uri": "'
            + b"A" * 65536
        )
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"over the limit" in reply
    nothing_stored(server)


def _reply(sock: socket.socket) -> bytes:
    """One HTTP answer (head and Content-Length body) read from ``sock``; less if the
    server closed or reset the connection first (what it sent before a reset was queued
    for us and is read first)."""
    reply = b""
    with contextlib.suppress(ConnectionResetError):
        while True:
            head, sep, body = reply.partition(b"\r\n\r\n")
            if sep:
                length = re.search(rb"(?im)^content-length: *(\d+)", head)
                if length is None or len(body) >= int(length[1]):
                    break
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return reply


def test_a_200_mb_streamed_body_is_413(server: Stack) -> None:
    """A 200 MB body without a Content-Length (chunked): the server answers 413 while the
    client is still sending (and may close). The client sends until an answer (or the
    close) shows, then reads what came: a connection dropped without the 413 fails."""
    host, port = server.url.removeprefix("http://").split(":")
    token = server.token("bob")
    chunk = b"A" * (1024 * 1024)
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    start = b'{"prompt": "x", "data_uri": "'
    sent = 0
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /queue/wan22-fast-i2v HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"Authorization: Bearer {token}\r\n".encode()
            + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            + f"{len(start):x}\r\n".encode()
            + start
            + b"\r\n"
        )
        try:
            while sent < 200 and not select.select([sock], [], [], 0)[0]:
                sock.sendall(framed)
                sent += 1
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server: its answer, if it sent one, waits to be read
        reply = _reply(sock)
    assert sent < 200, "the server read all 200 MB"
    assert reply.startswith(b"HTTP/1.1 413"), f"dropped without a 413: {reply[:200]!r}"
    assert b"over the limit" in reply
    nothing_stored(server)


def test_decoded_input_over_the_limit_is_413(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0, max_input_bytes=4096) as srv:
        with srv.client(srv.token("carol")) as c:
            big = encode_image(picture(400, 400, seed=3), "PNG")
            assert len(big) > 4096
            r = c.post(I2V, json={"prompt": "x", "data_uri": b64(big)})
            assert "data_uri" in rejected(r, "data_uri", 413)
        nothing_stored(srv)
