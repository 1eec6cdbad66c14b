"""The BlobStore contract, run against every adapter: a local folder and S3 (SeaweedFS
started by the test session)."""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.support.servers import SeaweedServer, free_port
from vidq.blobs import BlobStore
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.s3 import S3BlobStore
from vidq.errors import NotFound, PayloadTooLarge, StorageUnavailable


def s3_store(server: SeaweedServer, bucket: str) -> S3BlobStore:
    return S3BlobStore(
        bucket,
        endpoint_url=server.endpoint,
        region="us-east-1",
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "blobs", b"k" * 32, "vidq")
        return
    server: SeaweedServer = request.getfixturevalue("seaweed")
    store = s3_store(server, f"t-{uuid.uuid4().hex[:10]}")  # a bucket that does not exist yet
    try:
        yield store
    finally:
        store.close()


def test_put_get_download_delete(blobs: BlobStore, tmp_path: Path) -> None:
    blobs.put_bytes("inputs/alice/a.png", b"\x89PNG data", "image/png")
    assert blobs.exists("inputs/alice/a.png")
    assert blobs.get_bytes("inputs/alice/a.png") == b"\x89PNG data"
    src = tmp_path / "src.mp4"
    src.write_bytes(b"\x00mp4" * 1000)
    blobs.put_file("outputs/free/1_0_x_00001.mp4", src, "video/mp4")
    dest = tmp_path / "dest.mp4"
    blobs.download("outputs/free/1_0_x_00001.mp4", dest)
    assert dest.read_bytes() == src.read_bytes()
    blobs.put_bytes("inputs/alice/a.png", b"new", "image/png")  # overwrite
    assert blobs.get_bytes("inputs/alice/a.png") == b"new"
    assert blobs.keys("outputs/") == ["outputs/free/1_0_x_00001.mp4"]
    assert blobs.keys("inputs/alice/") == ["inputs/alice/a.png"]
    assert blobs.keys("nothing/") == []
    blobs.delete("inputs/alice/a.png")
    blobs.delete("inputs/alice/a.png")  # already gone: no error
    assert not blobs.exists("inputs/alice/a.png")
    assert blobs.keys("inputs/") == []


def test_missing_objects_are_not_found(blobs: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        blobs.get_bytes("outputs/none.mp4")
    with pytest.raises(NotFound):
        blobs.download("outputs/none.mp4", tmp_path / "x")
    assert not blobs.exists("outputs/none.mp4")


def test_get_bytes_limit(blobs: BlobStore) -> None:
    blobs.put_bytes("inputs/big.bin", b"x" * 2000, "application/octet-stream")
    with pytest.raises(PayloadTooLarge):
        blobs.get_bytes("inputs/big.bin", max_bytes=1000)
    assert len(blobs.get_bytes("inputs/big.bin", max_bytes=2000)) == 2000


def test_uri_names_bucket_and_key(blobs: BlobStore) -> None:
    assert blobs.uri("outputs/free/1.mp4") == f"s3://{blobs.bucket}/outputs/free/1.mp4"
    blobs.check()


def test_s3_signed_url_downloads_over_http_and_expires(seaweed: SeaweedServer) -> None:
    store = s3_store(seaweed, f"t-{uuid.uuid4().hex[:10]}")
    try:
        payload = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 10
        store.put_bytes("outputs/pro/7_0_clip_00001.mp4", payload, "video/mp4")
        url = store.signed_url("outputs/pro/7_0_clip_00001.mp4", 60, "http://ignored")
        parts = urlsplit(url)
        assert parts.netloc == urlsplit(seaweed.endpoint).netloc  # base_url is ignored
        assert "X-Amz-Signature" in parse_qs(parts.query)
        got = httpx.get(url, timeout=10)  # no credentials: the signature is the grant
        assert got.status_code == 200 and got.content == payload
        assert got.headers["content-type"] == "video/mp4"
        tampered = url.replace("7_0_clip", "8_0_clip")
        assert httpx.get(tampered, timeout=10).status_code == 403
        short = store.signed_url("outputs/pro/7_0_clip_00001.mp4", 1, "")
        time.sleep(2.2)
        assert httpx.get(short, timeout=10).status_code == 403
        assert httpx.get(f"{seaweed.endpoint}/{store.bucket}/outputs/pro/7_0_clip_00001.mp4",
                         timeout=10).status_code == 403  # fmt: skip
    finally:
        store.close()


def test_s3_put_file_sends_a_small_file_in_one_put_and_a_large_one_in_parts(
    seaweed: SeaweedServer, tmp_path: Path
) -> None:
    """Below the multipart threshold one PUT; from it on boto3's upload in parts. S3 tells
    them apart by the ETag: a multipart object's ends in ``-<number of parts>``."""
    store = S3BlobStore(
        f"t-{uuid.uuid4().hex[:10]}", endpoint_url=seaweed.endpoint, region="us-east-1",
        access_key=seaweed.access_key, secret_key=seaweed.secret_key,
        multipart_threshold=5 * 1024 * 1024,  # S3's smallest part
    )  # fmt: skip
    try:
        for name, size, parts in (("small", 5 * 1024 * 1024 - 1, None), ("large", 11 << 20, 2)):
            src = tmp_path / f"{name}.mp4"
            src.write_bytes(uuid.uuid4().bytes * (size // 16) + b"x" * (size % 16))
            store.put_file(f"outputs/free/{name}.mp4", src, "video/mp4")
            head = store._client.head_object(Bucket=store.bucket, Key=f"outputs/free/{name}.mp4")
            etag = head["ETag"].strip('"')
            assert (etag.rpartition("-")[2] if "-" in etag else None) == (
                str(parts) if parts else None
            ), (name, etag)
            assert head["ContentLength"] == size and head["ContentType"] == "video/mp4"
            dest = tmp_path / f"{name}.out"
            store.download(f"outputs/free/{name}.mp4", dest)
            assert dest.read_bytes() == src.read_bytes()
    finally:
        store.close()


def test_local_signed_url_verifies_and_rejects_tampering(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs", b"s" * 32, "vidq")
    store.put_bytes("outputs/free/1.mp4", b"data", "video/mp4")
    url = store.signed_url("outputs/free/1.mp4", 60, "http://127.0.0.1:9/")
    query = parse_qs(urlsplit(url).query)
    expires, sig = query["expires"][0], query["signature"][0]
    assert urlsplit(url).path == "/files/vidq/outputs/free/1.mp4"
    assert store.verify("outputs/free/1.mp4", expires, sig)
    assert not store.verify("outputs/free/2.mp4", expires, sig)
    assert not store.verify("outputs/free/1.mp4", str(int(expires) + 1), sig)
    assert not store.verify("outputs/free/1.mp4", expires, "0" * len(sig))
    old = str(int(time.time()) - 1)
    assert not store.verify("outputs/free/1.mp4", old, store._signature("outputs/free/1.mp4", 1))


def test_s3_unreachable_is_storage_unavailable(tmp_path: Path) -> None:
    store = S3BlobStore(
        "vidq", endpoint_url=f"http://127.0.0.1:{free_port()}", access_key="a", secret_key="b"
    )
    try:
        with pytest.raises(StorageUnavailable) as info:
            store.put_bytes("inputs/x", b"x", "application/octet-stream")
        assert "127.0.0.1" not in info.value.message
        with pytest.raises(StorageUnavailable):
            store.get_bytes("inputs/x")
        with pytest.raises(StorageUnavailable):
            store.check()
    finally:
        store.close()


def test_s3_wrong_credentials_are_unavailable_not_missing(seaweed: SeaweedServer) -> None:
    store = S3BlobStore(
        "vidq", endpoint_url=seaweed.endpoint, access_key="nobody", secret_key="wrongwrongwrong"
    )
    try:
        with pytest.raises(StorageUnavailable):
            store.check()
        with pytest.raises(StorageUnavailable):
            store.get_bytes("outputs/x.mp4")
    finally:
        store.close()


def test_keys_of_a_prefix_are_found_and_listed_alone(blobs: BlobStore) -> None:
    for key in (
        "outputs/free/12_0_a.mp4",
        "outputs/free/12_1_b.mp4",
        "outputs/free/123_0_c.mp4",
        "outputs/free/x/12_0_d.mp4",
        "outputs/pro/12_0_e.mp4",
        "inputs/alice/1/in.png",
    ):
        blobs.put_bytes(key, b"x", "video/mp4")  # fmt: skip
    assert blobs.keys("outputs/free/12_") == ["outputs/free/12_0_a.mp4", "outputs/free/12_1_b.mp4"]
    assert blobs.keys("outputs/free/12") == [
        "outputs/free/123_0_c.mp4", "outputs/free/12_0_a.mp4", "outputs/free/12_1_b.mp4"
    ]  # fmt: skip
    assert blobs.keys("outputs/free/") == [
        "outputs/free/123_0_c.mp4", "outputs/free/12_0_a.mp4", "outputs/free/12_1_b.mp4",
        "outputs/free/x/12_0_d.mp4",
    ]  # fmt: skip
    assert blobs.keys("outputs/nothing/") == [] and blobs.keys("nowhere") == []


_LISTED: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _LISTED is not None and event == "os.scandir":
        _LISTED.append(str(args[0]))


def test_local_keys_read_only_the_folder_of_the_prefix(tmp_path: Path) -> None:
    """A sweep of one job's outputs does not walk every input and output of the bucket."""
    global _LISTED
    blobs = LocalBlobStore(tmp_path, b"k" * 32)
    for user in range(30):
        blobs.put_bytes(f"inputs/user{user}/{user}/in.png", b"x", "image/png")
    blobs.put_bytes("outputs/free/7_0_a.mp4", b"x", "video/mp4")
    sys.addaudithook(_audit)  # hooks stay for the process: this one records only here
    _LISTED = []
    try:
        assert blobs.keys("outputs/free/7_") == ["outputs/free/7_0_a.mp4"]
        listed = list(_LISTED)
    finally:
        _LISTED = None
    assert listed and not [p for p in listed if "inputs" in p], listed
