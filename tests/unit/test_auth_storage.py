from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from vidq.api.auth import Authenticator, create_token, hash_token, parse_authorization
from vidq.blobs.local import LocalBlobStore
from vidq.errors import NotFound, Unauthorized
from vidq.store import open_store


def test_tokens_are_hashed_at_rest_and_revocable(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    token = create_token(store, "alice", max_priority=7)
    assert token.startswith("vq_")
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("db.sqlite*"))  # the file and its WAL
    assert token.encode() not in raw and hash_token(token).encode() in raw
    auth = Authenticator(store, ttl_s=0)
    assert auth.lookup(token).user == "alice"
    assert auth.lookup(token).max_priority == 7
    with pytest.raises(Unauthorized):
        auth.lookup(token + "x")
    [record] = store.list_tokens()
    assert store.revoke_token(record.id)
    with pytest.raises(Unauthorized):
        auth.lookup(token)
    store.close()


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic abc", "Bearer  "])
def test_authorization_header_forms_rejected(header: str | None) -> None:
    with pytest.raises(Unauthorized):
        parse_authorization(header)


def test_authorization_header_forms_accepted() -> None:
    assert parse_authorization("Bearer abc") == "abc"
    assert parse_authorization("Key abc") == "abc"  # fal's scheme


def test_local_signed_urls(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path, b"secret")
    store.put_bytes("outputs/free/1_0_x.mp4", b"data", "video/mp4")
    url = store.signed_url("outputs/free/1_0_x.mp4", 60, "http://h:1/")
    parts = urlsplit(url)
    assert parts.path == "/files/vidq/outputs/free/1_0_x.mp4"
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert store.verify("outputs/free/1_0_x.mp4", q["expires"], q["signature"])
    assert not store.verify("outputs/free/2_0_x.mp4", q["expires"], q["signature"])
    assert not store.verify("outputs/free/1_0_x.mp4", str(int(q["expires"]) + 1), q["signature"])
    assert not store.verify("outputs/free/1_0_x.mp4", str(int(time.time()) - 1), q["signature"])
    other = LocalBlobStore(tmp_path, b"other-secret")
    assert not other.verify("outputs/free/1_0_x.mp4", q["expires"], q["signature"])


def test_local_store_refuses_paths_outside_its_bucket(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", b"k")
    (tmp_path / "secret.txt").write_text("no")
    for key in ("../../secret.txt", "/etc/passwd", ""):
        with pytest.raises(NotFound):
            store.get_bytes(key)
