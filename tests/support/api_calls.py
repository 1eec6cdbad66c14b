"""Small steps the API tests share: a submit that must succeed, and the objects of a data
folder's local blob store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


def submit(client: httpx.Client, model: str, body: dict[str, Any]) -> str:
    """Submit ``body`` to ``model`` (native dialect); its request id (200 or the test fails)."""
    r = client.post(f"/queue/{model}", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["request_id"])


def local_blobs(data_dir: Path) -> list[str]:
    """The keys of every object in a data folder's local blob store."""
    root = data_dir / "blobs" / "vidq"
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
