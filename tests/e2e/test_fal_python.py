"""The real `fal-client` from PyPI, unmodified, against `vidq serve` over TLS.

fal-client builds ``https://{FAL_QUEUE_RUN_HOST}/{app_id}``; pointing that variable at
``127.0.0.1:<port>/queue`` and SSL_CERT_FILE at a certificate made here is all it takes.
Each scenario runs in a subprocess (fal-client reads its hosts at import).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import Server, probe_mp4, serve
from tests.tls import self_signed

DRIVER = Path(__file__).with_name("fal_py_driver.py")


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("fal-py")
    cert, key = self_signed(root / "tls")
    # wan22-t2v-fp8 is served by an engine that does not exist: its jobs really fail
    # (the worker cannot load the engine), with one attempt.
    with serve(
        root / "data",
        tls=(cert, key),
        engines="wan22-t2v-fp8=nonexistent",
        max_attempts=1,
        preview_step_seconds=0.15,
    ) as server:
        yield server


def drive(server: Server, scenario: str) -> dict[str, Any]:
    assert server.ca is not None
    env = {
        **os.environ,
        "FAL_KEY": server.token("fal-user"),
        "FAL_QUEUE_RUN_HOST": server.url.removeprefix("https://") + "/queue",
        "SSL_CERT_FILE": str(server.ca),
    }
    out = subprocess.run(
        [sys.executable, str(DRIVER), scenario],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def download(server: Server, video: dict[str, Any]) -> bytes:
    verify = ssl.create_default_context(cafile=str(server.ca))
    response = httpx.get(video["url"], verify=verify, timeout=30)
    assert response.status_code == 200
    return response.content


def test_subscribe_with_logs_gives_a_real_mp4(tls_server: Server, tmp_path: Path) -> None:
    out = drive(tls_server, "subscribe")
    kinds = [u["type"] for u in out["updates"]]
    assert kinds[-1] == "Completed" and "InProgress" in kinds, kinds
    assert all(u["logs"] for u in out["updates"] if u["type"] != "Queued")
    final = out["updates"][-1]
    assert final["error"] is None and final["metrics"]["inference_time"] > 0
    assert any("Completed in" in line["message"] for line in final["logs"])
    video = out["result"]["video"]
    assert video["content_type"] == "video/mp4" and video["file_name"].endswith(".mp4")
    assert video["url"].startswith(tls_server.url + "/files/")
    data = download(tls_server, video)
    assert len(data) == video["file_size"]
    info = probe_mp4(data, tmp_path)
    assert (info.width, info.height, info.frames, info.codec) == (128, 128, 17, "h264")


def test_submit_status_and_result_by_handle_and_by_id(tls_server: Server) -> None:
    out = drive(tls_server, "submit_status_result")
    rid = out["request_id"]
    base = f"{tls_server.url}/queue/vidq/wan22-fast-t2v/requests/{rid}"
    assert out["urls"] == [base, f"{base}/status", f"{base}/cancel"]
    assert out["statuses"][0]["type"] in ("Queued", "InProgress", "Completed")
    last = out["statuses"][-1]
    assert last["type"] == "Completed" and last["logs"] and last["error"] is None
    assert out["completed_without_logs"]["logs"] is None  # only ?logs=1|true fills it
    assert out["status_by_id"]["type"] == "Completed" and out["status_by_id"]["logs"]
    assert out["result"]["video"]["file_size"] > 0
    assert out["result_by_id"]["video"]["file_name"] == out["result"]["video"]["file_name"]


def test_cancel_while_queued_and_after_completion(tls_server: Server) -> None:
    out = drive(tls_server, "cancel")
    assert out["queued_status"]["type"] == "Queued"
    after = out["after_cancel"]
    assert after["type"] == "Completed" and after["error_type"] == "request_cancelled"
    assert out["cancelled_result"]["status_code"] == 400
    assert out["cancelled_result"]["error_type"] == "request_cancelled"
    late = out["cancel_after_completion"]
    assert late["status_code"] == 400 and "already finished" in late["message"]


def test_a_failing_job_is_completed_with_an_error(tls_server: Server) -> None:
    out = drive(tls_server, "failing")
    final = out["updates"][-1]
    assert final["type"] == "Completed"
    assert final["error_type"] == "EngineUnavailable"
    assert "nonexistent" in final["error"]
    assert any(line["level"] == "ERROR" for line in final["logs"])
    error = out["error"]
    assert error["status_code"] == 500 and error["error_type"] == "EngineUnavailable"
    assert "nonexistent" in error["message"] and error["request_id"]


def test_invalid_input_is_a_422_naming_the_field(tls_server: Server) -> None:
    out = drive(tls_server, "invalid")
    assert out["status_code"] == 422
    assert out["detail"][0]["loc"] == ["body", "width"]
