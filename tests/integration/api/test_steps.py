"""higher_quality_with_more_steps raises the step count, and progress n follows."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.media import b64, encode_image, picture
from tests.support.stack import stack
from tests.support.wait import eventually, wait_status


def progress_total(client: httpx.Client, model: str, rid: str) -> int:
    """The task count of the job's first progress report (steps + encode)."""

    def total() -> int:
        body = client.get(f"/queue/{model}/requests/{rid}/status").json()
        assert body["status"] in ("IN_QUEUE", "IN_PROGRESS"), body
        if body["status"] != "IN_PROGRESS":
            return 0
        m = re.fullmatch(
            r"Progress: (\d+)/(\d+) Tasks done", body["statusMessages"]["detail_message"]
        )
        assert m is not None, body
        return int(m.group(2))

    return eventually(total, 60, interval=0.02, what="a progress report")


def test_more_steps_show_in_progress(tmp_path: Path) -> None:
    png = b64(encode_image(picture(64, 64), "PNG"))
    with stack(tmp_path / "data", preview_step_seconds=0.1) as server:
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
