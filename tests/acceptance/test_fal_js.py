"""The real `@fal-ai/client` from npm under node (the process under test), unmodified,
against the in-process stack over TLS: queue submit + subscribe in polling and in streaming
(SSE) mode. The client's own queue host is rewritten to vidq by a ``requestMiddleware``, as
its docs suggest for proxies. Without node and npm the tests skip locally, saying so, and
fail in CI (tests/support/tools.py).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.media import probe_mp4
from tests.support.stack import Stack, stack
from tests.support.tls import self_signed
from tests.support.tools import require

NODE_DIR = Path(__file__).parents[1] / "support" / "node"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` from the committed package-lock.json (once; kept between runs)."""
    require("node", "the fal JS client runs under node")
    npm = require("npm", "npm installs the fal JS client from package-lock.json")
    installed = NODE_DIR / "node_modules" / "@fal-ai" / "client" / "package.json"
    if not installed.exists():
        out = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    return installed


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fal-js")
    with stack(root / "data", tls=self_signed(root / "tls"), preview_step_seconds=0.15) as s:
        yield s


def drive(server: Stack, mode: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "FAL_KEY": server.token("js-user"),
        "VIDQ_URL": server.url,
        "NODE_EXTRA_CA_CERTS": str(server.ca),
    }
    out = subprocess.run(
        ["node", "fal_js_driver.mjs", mode],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("mode", ["polling", "streaming"])
def test_subscribe(mode: str, node_modules: Path, tls_server: Stack, tmp_path: Path) -> None:
    out = drive(tls_server, mode)
    rid = out["requestId"]
    assert rid and out["result"]["requestId"] == rid  # from the x-fal-request-id header
    statuses = [u["status"] for u in out["updates"]]
    assert statuses[-1] == "COMPLETED" and "IN_PROGRESS" in statuses, statuses
    assert out["updates"][-1]["logs"]
    # What the client shows (accumulated, in streaming mode, from each event's new lines)
    # is the polled list: every line once, none repeated.
    shown = out["updates"][-1]["logs"]
    assert shown == out["polledLogs"], (shown, out["polledLogs"])
    assert len(shown) == len(set(shown)) and any("Progress: 1/" in line for line in shown)
    paths = out["seenUrls"]
    assert paths[0] == "POST /queue/vidq/wan22-fast-t2v"
    follow = "/status/stream?logs=1" if mode == "streaming" else "/status?logs=1"
    assert f"GET /queue/vidq/wan22-fast-t2v/requests/{rid}{follow}" in paths
    assert paths[-2] == f"GET /queue/vidq/wan22-fast-t2v/requests/{rid}"  # then our poll
    video = out["result"]["data"]["video"]
    assert video["content_type"] == "video/mp4"
    verify = ssl.create_default_context(cafile=str(tls_server.ca))
    data = httpx.get(video["url"], verify=verify, timeout=30).content
    assert len(data) == video["file_size"]
    info = probe_mp4(data, tmp_path)
    assert (info.width, info.height, info.frames) == (128, 128, 17)


def test_uploads_aliases_run_cancel_and_field_errors(
    node_modules: Path, tls_server: Stack, tmp_path: Path
) -> None:
    out = drive(tls_server, "more")
    assert out["uploaded"].startswith(f"{tls_server.url}/fal/files/")
    paths = out["seenUrls"]
    assert any(p.startswith("POST /fal/storage/upload/initiate") for p in paths), paths
    verify = ssl.create_default_context(cafile=str(tls_server.ca))

    def video(result: dict[str, Any]) -> tuple[int, int, int]:
        data = httpx.get(result["video"]["url"], verify=verify, timeout=30).content
        assert len(data) == result["video"]["file_size"]
        info = probe_mp4(data, tmp_path)
        return info.width, info.height, info.frames

    # The Blob was uploaded by the client and read from storage: 480p + 9:16, 81 frames.
    assert video(out["i2v"]) == (480, 832, 81)
    assert out["i2v"]["prompt"] == "js upload" and isinstance(out["i2v"]["seed"], int)
    assert video(out["run"]) == (128, 128, 17)
    assert out["queueStatus"] == "COMPLETED" and video(out["queueResult"]) == (480, 480, 81)
    cancelled = out["cancelled"]
    assert cancelled["status"] == "COMPLETED" and cancelled["error_type"] == "request_cancelled"
    assert out["invalid"]["isValidationError"] and out["invalid"]["status"] == 422
    assert out["invalid"]["width"] and out["invalid"]["width"][0]["loc"] == ["body", "width"]
    assert out["frames"]["status"] == 422 and out["frames"]["numFrames"]
