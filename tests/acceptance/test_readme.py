"""The README's first request, run as written against a real `vidq serve`: the curl block
in bash, the SDK block in Python, with only `VIDQ_URL` and `VIDQ_TOKEN` set. Another request
exists first, so an example that used a fixed request id would fetch the wrong video."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.media import probe_mp4, result_mp4
from tests.support.processes import ROOT, Server, serve
from tests.support.tools import require
from tests.support.wait import wait_status

FENCE = re.compile(r"^### (?P<title>.+?)\n.*?^```(?P<lang>\w+)\n(?P<code>.*?)^```", re.M | re.S)


def readme_block(title: str) -> str:
    """The first fenced block under the README heading ``### title``."""
    for match in FENCE.finditer((ROOT / "README.md").read_text()):
        if match["title"] == title:
            return match["code"]
    raise AssertionError(f"README.md has no block under '### {title}'")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("readme") / "data"  # empty: serve makes its store
    with serve(data, seed=False, preview_step_seconds=0.05) as s:
        # the first request of this server: a one-second clip
        with s.client(s.admin_token) as client:
            small = {"prompt": "a first try", "width": 128, "height": 128, "duration": 1}
            rid = client.post("/queue/wan22-fast-t2v", json=small).json()["request_id"]
            wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED"})
        yield s


def env(server: Server, tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "PYTHONPATH": str(ROOT / "src"),
        "VIDQ_URL": server.url,
        "VIDQ_TOKEN": server.admin_token,
    }


def test_the_curl_example_fetches_its_own_video(server: Server, tmp_path: Path) -> None:
    require("jq", "the README's curl example pipes into jq")
    require("curl", "the README's example is curl")
    code = readme_block("With curl")
    assert "requests/1" not in code and "$VIDQ_TOKEN" in code and "$VIDQ_URL" in code
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env(server, tmp_path),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert '"status":"IN_QUEUE"' in run.stderr or '"status":"IN_PROGRESS"' in run.stderr
    video = probe_mp4((tmp_path / "output.mp4").read_bytes(), tmp_path)
    assert (video.width, video.height, video.frames) == (1280, 720, 81)  # 5 s at 16 fps
    with server.client(server.admin_token) as client:  # not request 1's clip
        assert (tmp_path / "output.mp4").read_bytes() != result_mp4(client, "wan22-fast-t2v", "1")


def test_the_sdk_example_runs_as_written(server: Server, tmp_path: Path) -> None:
    code = readme_block("With the Python SDK")
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env(server, tmp_path),
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "COMPLETED" in run.stdout
    video = probe_mp4((tmp_path / "fox.mp4").read_bytes(), tmp_path)
    assert video.frames == 81  # "duration": 5
