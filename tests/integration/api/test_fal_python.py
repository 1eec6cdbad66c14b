"""The real `fal-client` from PyPI, unmodified, against the in-process stack over TLS.

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
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.media import probe_mp4
from tests.support.stack import Stack, stack
from tests.support.tls import self_signed

DRIVER = Path(__file__).parents[2] / "support" / "fal_py_driver.py"


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("fal-py")
    cert, key = self_signed(root / "tls")
    # a prompt holding "[fail]" fails in the preview engine (VIDQ_PREVIEW_FAIL_PROMPT), with
    # one attempt
    with stack(
        root / "data",
        tls=(cert, key),
        preview_fail_prompt="[fail]",
        max_attempts=1,
        preview_step_seconds=0.15,
    ) as server:
        yield server


def drive(server: Stack, scenario: str, key: str | None = None) -> dict[str, Any]:
    assert server.ca is not None
    env = {
        **os.environ,
        "FAL_KEY": key or server.token("fal-user"),
        "FAL_QUEUE_RUN_HOST": server.url.removeprefix("https://") + "/queue",
        "FAL_RUN_HOST": server.url.removeprefix("https://") + "/run",
        "VIDQ_URL": server.url,
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


def download(server: Stack, video: dict[str, Any]) -> bytes:
    verify = ssl.create_default_context(cafile=str(server.ca))
    response = httpx.get(video["url"], verify=verify, timeout=30)
    assert response.status_code == 200
    return response.content


def test_subscribe_with_logs_gives_a_real_mp4(tls_server: Stack, tmp_path: Path) -> None:
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


def test_submit_status_and_result_by_handle_and_by_id(tls_server: Stack) -> None:
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


def test_cancel_while_queued_and_after_completion(tls_server: Stack) -> None:
    out = drive(tls_server, "cancel")
    assert out["queued_status"]["type"] == "Queued"
    after = out["after_cancel"]
    assert after["type"] == "Completed" and after["error_type"] == "request_cancelled"
    assert out["cancelled_result"]["status_code"] == 400
    assert out["cancelled_result"]["error_type"] == "request_cancelled"
    late = out["cancel_after_completion"]
    assert late["status_code"] == 400 and "already finished" in late["message"]


def test_a_failing_job_is_completed_with_an_error(tls_server: Stack) -> None:
    out = drive(tls_server, "failing")
    final = out["updates"][-1]
    assert final["type"] == "Completed"
    assert final["error_type"] == "PreviewFailure"
    assert "[fail]" in final["error"]
    assert any(line["level"] == "ERROR" for line in final["logs"])
    error = out["error"]
    assert error["status_code"] == 500 and error["error_type"] == "PreviewFailure"
    assert "[fail]" in error["message"] and error["request_id"]


def test_invalid_input_is_a_422_naming_the_field(tls_server: Stack) -> None:
    out = drive(tls_server, "invalid")
    named = {
        "width_100": "width", "width_321": "width", "frames_16": "num_frames",
        "frames_162": "num_frames", "resolution": "resolution", "aspect": "aspect_ratio",
        "native_on_alias": "width",
    }  # fmt: skip
    for case, field in named.items():
        assert out[case]["status_code"] == 422, (case, out[case])
        assert out[case]["detail"][0]["loc"] == ["body", field], (case, out[case])


def test_uploads_then_fal_endpoint_ids_with_fal_fields(tls_server: Stack, tmp_path: Path) -> None:
    out = drive(tls_server, "uploads_and_aliases")
    for url in out["urls"]:
        assert url.startswith(f"{tls_server.url}/fal/files/"), url
    # The uploader reads an upload back; another user gets 404.
    verify = ssl.create_default_context(cafile=str(tls_server.ca))
    own = httpx.get(
        out["urls"][0],
        headers={"Authorization": f"Key {tls_server.token('fal-user')}"},
        verify=verify,
    )
    assert own.status_code == 200 and own.content.startswith(b"\x89PNG")
    other = httpx.get(
        out["urls"][0],
        headers={"Authorization": f"Key {tls_server.token('intruder')}"},
        verify=verify,
    )
    assert other.status_code == 404

    def video(result: dict[str, Any]) -> tuple[int, int, int]:
        data = download(tls_server, result["video"])
        assert len(data) == result["video"]["file_size"]
        info = probe_mp4(data, tmp_path)
        return info.width, info.height, info.frames

    # 480p + auto: the 16:9 image's aspect, short side 480 (Wan sides: multiples of 32
    # for the derived one); num_frames 17 -> 1 s; the seed and prompt come back.
    assert video(out["i2v"]) == (832, 480, 17)
    assert out["i2v"]["seed"] == 11 and out["i2v"]["prompt"] == "it moves"
    assert video(out["turbo"]) == (480, 480, 81)  # 480p + 1:1; turbo: 81 frames
    assert isinstance(out["turbo"]["seed"], int)
    assert video(out["t2v_run"]) == (480, 832, 17)  # 480p + 9:16, through fal_client.run
    assert video(out["run"]) == (128, 128, 17) and out["run"]["seed"] == 5


def test_a_rate_limited_submit_is_retried_then_raised(tls_server: Stack) -> None:
    """Our 429 as fal-client sees it: it retries (429 is in its RETRY_CODES, with its own
    backoff: it does not read Retry-After), then raises FalClientHTTPError with our
    detail and error_type."""
    user = f"fal-rated-{os.getpid()}-{time.monotonic_ns()}"  # the module's server is shared
    key = tls_server.token(user, rate_per_minute=1)
    out = drive(tls_server, "rate_limited", key)
    assert out["first"]
    assert out["sent"] == [200, 429, 429, 429], out["sent"]  # the driver allows 3 attempts
    error = out["error"]
    assert error["status_code"] == 429 and error["error_type"] == "rate_limited"
    assert "rate_per_minute" in error["message"] and int(error["retry_after"]) >= 1
