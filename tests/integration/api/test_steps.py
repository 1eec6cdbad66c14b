"""higher_quality_with_more_steps raises the step count, and progress n follows."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx

from tests.support.media import b64, encode_image, picture
from tests.support.processes import serve
from tests.support.wait import wait_status


def progress_total(client: httpx.Client, model: str, rid: str) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = client.get(f"/queue/{model}/requests/{rid}/status").json()
        if body["status"] == "IN_PROGRESS":
            m = re.fullmatch(
                r"Progress: (\d+)/(\d+) Tasks done", body["statusMessages"]["detail_message"]
            )
            assert m is not None, body
            if int(m.group(2)):
                return int(m.group(2))
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        time.sleep(0.02)
    raise AssertionError("never saw progress")


def test_more_steps_show_in_progress(tmp_path: Path) -> None:
    png = b64(encode_image(picture(64, 64), "PNG"))
    with serve(tmp_path / "data", preview_step_seconds=0.1) as server:
        client = server.client(server.token("erin"))
        totals = []
        for hq in (False, True):
            body = {
                "prompt": "x",
                "data_uri": png,
                "duration": 1,
                "height": 128,
                "higher_quality_with_more_steps": hq,
            }
            r = client.post("/queue/wan22-fast-i2v", json=body)
            assert r.status_code == 200, r.text
            rid = r.json()["request_id"]
            totals.append(progress_total(client, "wan22-fast-i2v", rid))
            assert (
                wait_status(client, "wan22-fast-i2v", rid, {"COMPLETED"})["status"] == "COMPLETED"
            )
        assert totals == [5, 9]  # 4 or 8 steps, then the encode
