"""fal's multipart uploads, in process: both ways a client sends a large file in parts
(an upload token's ``/fal/files/.../multipart`` routes, and a signed
``initiate-multipart`` URL), each part answered with its ETag, the file read back whole,
and a finished upload taking no more parts."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from fastapi.testclient import TestClient

from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs.local import LocalBlobStore
from vidq.config import Settings
from vidq.store import open_store

PARTS = [b"\x89PNG first part " * 64, b"second part" * 32, b"end"]


def _parts(etags: list[str]) -> dict[str, list[dict[str, object]]]:
    return {"parts": [{"partNumber": n, "etag": e} for n, e in enumerate(etags, 1)]}


def test_multipart_uploads_by_upload_token_and_by_signed_url(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    storage = LocalBlobStore(tmp_path / "blobs", b"k")
    token = create_token(store, "alice")
    app = create_app(Settings(data_dir=tmp_path), store, storage)
    try:
        with TestClient(app, base_url="http://localhost") as client:
            client.headers["Authorization"] = f"Bearer {token}"
            # fal-cdn-v3: an upload token, then start, parts, complete under the access URL
            upload = client.post("/fal/storage/auth/token?storage_type=fal-cdn-v3").json()
            headers = {
                "Authorization": f"Bearer {upload['token']}",
                "Content-Type": "image/png",
                "X-Fal-File-Name": "big.png",
            }
            start = client.post("/fal/files/upload/multipart", headers=headers)
            assert start.status_code == 200, start.text
            access, upload_id = start.json()["access_url"], start.json()["uploadId"]
            path = urlsplit(access).path
            assert path.endswith("/big.png")
            etags = []
            for number, data in enumerate(PARTS, 1):
                part = client.put(f"{path}/multipart/{upload_id}/{number}", content=data,
                                  headers=headers)  # fmt: skip
                assert (
                    part.status_code == 200 and part.headers["ETag"] == f'"{part.json()["etag"]}"'
                )
                etags.append(part.json()["etag"])
            done = client.post(f"{path}/multipart/{upload_id}/complete", json=_parts(etags),
                               headers=headers)  # fmt: skip
            assert done.status_code == 200 and done.json() == {"access_url": access}
            assert client.get(path).content == b"".join(PARTS)
            late = client.put(f"{path}/multipart/{upload_id}/4", content=b"x", headers=headers)
            assert late.status_code == 404  # finished: no more parts

            # a signed URL: initiate-multipart, then the parts and complete under it
            init = client.post(
                "/fal/storage/upload/initiate-multipart",
                json={"content_type": "video/mp4", "file_name": "clip.mp4"},
            ).json()
            signed = urlsplit(init["upload_url"])
            unsigned = {"Authorization": ""}  # the signature is the permission
            etags = []
            for number, data in enumerate(PARTS, 1):
                url = f"{signed.path}/{number}?{signed.query}"
                part = client.put(url, content=data, headers=unsigned)
                assert (
                    part.status_code == 200 and part.headers["ETag"] == f'"{part.json()["etag"]}"'
                )
                etags.append(part.json()["etag"])
            forged = f"{signed.path}/complete?{signed.query.replace('signature=', 'signature=0')}"
            assert client.post(forged, json=_parts(etags), headers=unsigned).status_code == 401
            complete = f"{signed.path}/complete?{signed.query}"
            assert client.post(complete, json=_parts(etags), headers=unsigned).status_code == 200
            read = client.get(urlsplit(init["file_url"]).path)
            assert read.content == b"".join(PARTS)
            assert read.headers["content-type"] == "video/mp4"
            late = client.put(f"{signed.path}/4?{signed.query}", content=b"x", headers=unsigned)
            assert late.status_code == 404  # finished: no more parts
    finally:
        store.close()
