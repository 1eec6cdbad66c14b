"""fal-compatible uploads attacked as a hostile user would: malformed and oversized multipart
completes are 422s naming `parts` and cost nothing, even many at once (another user's
requests are measured meanwhile); a stored upload is served as bytes unless it is media."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.stack import Stack, stack


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("uploads") / "data", workers=0) as s:
        yield s


def multipart(server: Stack, token: str) -> tuple[httpx.Client, str]:
    """An upload client (fal-cdn-v3 token) and the base path of a new multipart upload
    with its part 1 stored."""
    auth = server.client(token).post("/fal/storage/auth/token?storage_type=fal-cdn-v3", json={})
    assert auth.status_code == 200, auth.text
    cdn = httpx.Client(
        base_url=auth.json()["base_url"], timeout=30,
        headers={"Authorization": f"Bearer {auth.json()['token']}"},
    )  # fmt: skip
    start = cdn.post(
        "/files/upload/multipart", headers={"Content-Type": "video/mp4", "X-Fal-File-Name": "v.mp4"}
    )
    assert start.status_code == 200, start.text
    base = f"{start.json()['access_url']}/multipart/{start.json()['uploadId']}"
    assert cdn.put(f"{base}/1", content=b"part one").status_code == 200
    return cdn, base


@pytest.mark.parametrize(
    "body",
    [
        '{"parts": [{"etag": "x"}]}',
        '{"parts": "abc"}',
        '{"parts": [{"partNumber": Infinity, "etag": "x"}]}',
        '{"parts": [{"partNumber": 1e400, "etag": "x"}]}',
        '{"parts": [{"partNumber": null, "etag": "x"}]}',
        '{"parts": [{"partNumber": 0, "etag": "x"}]}',
        '{"parts": []}',
        json.dumps({"parts": [{"partNumber": n, "etag": "x"} for n in range(1, 10_002)]}),
    ],
    ids=["no-number", "string", "Infinity", "1e400", "null", "zero", "empty", "10001-parts"],
)
def test_malformed_parts_are_422_naming_parts(server: Stack, body: str) -> None:
    cdn, base = multipart(server, server.token("mallory"))
    answer = cdn.post(f"{base}/complete", content=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:2] == ["body", "parts"], answer.json()


def test_parts_listed_twice_or_never_uploaded_are_422(server: Stack) -> None:
    token = server.token("mallory")
    cdn, base = multipart(server, token)
    twice = cdn.post(f"{base}/complete", json={"parts": [{"partNumber": 1}, {"partNumber": 1}]})
    assert twice.status_code == 422 and twice.json()["detail"][0]["loc"] == ["body", "parts"]
    missing = cdn.post(f"{base}/complete", json={"parts": [{"partNumber": 1}, {"partNumber": 2}]})
    assert missing.status_code == 422 and "part 2 was not uploaded" in missing.text
    done = cdn.post(f"{base}/complete", json={"parts": [{"partNumber": 1, "etag": "e"}]})
    assert done.status_code == 200, done.text
    assert server.client(token).get(done.json()["access_url"]).content == b"part one"


def test_many_huge_completes_at_once_leave_other_users_served(server: Stack) -> None:
    """45 parallel completes of 2.3 MB naming parts 2..100001 once held every request
    thread for about 11 minutes (a storage delete per number): now each is refused by its
    shape, and another user's requests go on being answered meanwhile."""
    cdn, base = multipart(server, server.token("mallory"))
    huge = json.dumps({"parts": [{"partNumber": n, "etag": "x"} for n in range(2, 100_002)]})
    many = json.dumps({"parts": [{"partNumber": n, "etag": "x"} for n in range(1, 10_001)]})
    bob = server.client(server.token("bob"))
    latencies: list[float] = []
    stop = threading.Event()

    def other_user() -> None:
        while not stop.is_set():
            started = time.monotonic()
            assert bob.get("/requests", timeout=60).status_code == 200
            latencies.append(time.monotonic() - started)
            time.sleep(0.05)

    async def attack() -> list[int]:
        headers = dict(cdn.headers)
        async with httpx.AsyncClient(timeout=120, headers=headers) as client:
            answers = await asyncio.gather(
                *[client.post(f"{base}/complete", content=huge if i % 2 else many)
                  for i in range(45)]
            )  # fmt: skip
        return [a.status_code for a in answers]

    watcher = threading.Thread(target=other_user)
    watcher.start()
    try:
        started = time.monotonic()
        statuses = asyncio.run(attack())
        attack_s = time.monotonic() - started
    finally:
        stop.set()
        watcher.join(120)
    print(f"attack: {attack_s:.1f} s; bob's requests meanwhile: {len(latencies)}, "
          f"slowest {max(latencies):.2f} s")  # fmt: skip
    assert set(statuses) == {422}, statuses
    assert latencies and max(latencies) < 10, latencies
    # the upload is still whole: part 1 joins as before
    done = cdn.post(f"{base}/complete", json={"parts": [{"partNumber": 1}]})
    assert done.status_code == 200, done.text


def test_uploads_are_served_as_bytes_unless_media(server: Stack) -> None:
    token = server.token("carol")
    auth = server.client(token).post("/fal/storage/auth/token?storage_type=fal-cdn-v3", json={})
    upload_token = auth.json()["token"]
    cdn = httpx.Client(
        base_url=auth.json()["base_url"], headers={"Authorization": f"Bearer {upload_token}"}
    )
    page = cdn.post(
        "/files/upload", content=b"<script>alert(1)</script>",
        headers={"Content-Type": "text/html", "X-Fal-File-Name": "x.html"},
    )  # fmt: skip
    svg = cdn.post(
        "/files/upload", content=b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        headers={"Content-Type": "image/svg+xml", "X-Fal-File-Name": "x.svg"},
    )  # fmt: skip
    clip = cdn.post(
        "/files/upload", content=b"\x00\x00\x00\x18ftypmp42",
        headers={"Content-Type": "video/mp4", "X-Fal-File-Name": "x.mp4"},
    )  # fmt: skip
    reader = server.client(token)
    for upload, served in ((page, "application/octet-stream"), (svg, "application/octet-stream"),
                           (clip, "video/mp4")):  # fmt: skip
        got = reader.get(upload.json()["access_url"])
        assert got.status_code == 200
        assert got.headers["content-type"].split(";")[0] == served
        assert got.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in got.headers["content-security-policy"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("limited") / "data", workers=0, max_uploads_per_user=3,
               max_upload_bytes_per_user=4096) as s:  # fmt: skip
        yield s


def _cdn(server: Stack, token: str) -> httpx.Client:
    auth = server.client(token).post("/fal/storage/auth/token", json={})
    assert auth.status_code == 200, auth.text
    headers = {"Authorization": f"Bearer {auth.json()['token']}"}
    return httpx.Client(base_url=auth.json()["base_url"], headers=headers, timeout=30)


def test_an_upload_token_dies_with_its_api_token(server: Stack) -> None:
    token = server.token("dora")
    cdn = _cdn(server, token)
    assert cdn.post("/files/upload", content=b"x" * 10).status_code == 200
    (live,) = [t for t in server.store.list_tokens() if t.user == "dora"]
    assert server.store.revoke_token(live.id)
    assert cdn.post("/files/upload", content=b"x" * 10).status_code == 401


def test_the_uploader_expiry_never_passes_the_operator_ttl(server: Stack) -> None:
    cdn = _cdn(server, server.token("erin"))
    far = {"X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 1e15}'}
    up = cdn.post("/files/upload", content=b"x" * 10, headers=far)
    assert up.status_code == 200, up.text
    upload_id = up.json()["access_url"].rsplit("/", 2)[-2]
    upload = server.store.get_upload(upload_id)
    assert upload is not None and upload.expires_at is not None
    assert upload.expires_at - upload.created_at <= 604800 + 1  # VIDQ_UPLOAD_TTL's default
    never = {"X-Fal-Object-Lifecycle-Preference": '{"expiration_duration_seconds": 1e999}'}
    refused = cdn.post("/files/upload", content=b"x", headers=never)
    assert refused.status_code == 422, refused.text


def test_uploads_per_user_are_bounded_in_count_and_bytes(limited: Stack) -> None:
    cdn = _cdn(limited, limited.token("frank"))
    assert cdn.post("/files/upload", content=b"x" * 3000).status_code == 200
    over = cdn.post("/files/upload", content=b"x" * 2000)
    assert over.status_code == 429 and over.json()["limit"] == "max_upload_bytes_per_user"
    # parts count as they arrive: a multipart upload cannot hold more either
    start = cdn.post("/files/upload/multipart", headers={"Content-Type": "video/mp4"})
    base = f"{start.json()['access_url']}/multipart/{start.json()['uploadId']}"
    assert cdn.put(f"{base}/1", content=b"y" * 1000).status_code == 200
    part = cdn.put(f"{base}/2", content=b"y" * 1000)
    assert part.status_code == 429 and part.json()["limit"] == "max_upload_bytes_per_user"
    assert cdn.post("/files/upload", content=b"z").status_code == 200  # 3 uploads now
    fourth = cdn.post("/files/upload", content=b"z")
    assert fourth.status_code == 429 and fourth.json()["limit"] == "max_uploads_per_user"
    # another user is not affected
    other = _cdn(limited, limited.token("gina"))
    assert other.post("/files/upload", content=b"x" * 3000).status_code == 200
