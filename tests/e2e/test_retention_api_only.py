"""Retention runs wherever the API runs: an API-only `vidq serve --workers 0` (remote
workers never collect) deletes an expired upload by itself."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.helpers import serve


def test_an_api_without_workers_collects(tmp_path: Path) -> None:
    with serve(tmp_path / "data", workers=0, upload_ttl=0, gc_interval=0.5) as server:
        token = server.token("alice")
        auth = server.client(token).post("/fal/storage/auth/token", json={}).json()
        cdn = httpx.Client(
            base_url=auth["base_url"], headers={"Authorization": f"Bearer {auth['token']}"}
        )
        up = cdn.post("/files/upload", content=b"\x00" * 64, headers={"Content-Type": "image/png"})
        assert up.status_code == 200, up.text
        blobs = [p for p in (tmp_path / "data").rglob("*") if p.is_file() and "uploads" in p.parts]
        assert blobs, "the upload was stored"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(p.exists() for p in blobs):
            time.sleep(0.2)
        assert not any(p.exists() for p in blobs), "the API never collected the expired upload"
        assert server.client(token).get(up.json()["access_url"]).status_code == 404
