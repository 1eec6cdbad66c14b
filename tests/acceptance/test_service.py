"""The shortest walk: serve, create a token, submit, wait, decode the MP4."""

from __future__ import annotations

from pathlib import Path

from tests.support.media import probe_mp4, result_mp4
from tests.support.processes import serve
from tests.support.wait import wait_status


def test_t2v_request_completes_with_a_real_mp4(tmp_path: Path) -> None:
    with serve(tmp_path / "data") as server:
        client = server.client(server.token("alice"))
        r = client.post(
            "/queue/wan22-fast-t2v",
            json={"prompt": "a red fox", "width": 320, "height": 192, "duration": 2},
        )
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        info = probe_mp4(result_mp4(client, "wan22-fast-t2v", rid), tmp_path)
        assert (info.width, info.height, info.frames) == (320, 192, 33)
        assert info.codec == "h264" and info.pix_fmt == "yuv420p"
