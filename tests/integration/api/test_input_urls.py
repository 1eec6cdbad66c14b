"""Inputs given as URLs: fetched once at submit, stored as a blob, the worker never
touches the URL. Loopback is reachable here only because this test's server is started
with the local-testing settings VIDQ_FETCH_ALLOW_HTTP and VIDQ_FETCH_ALLOW_NETWORKS."""

from __future__ import annotations

from pathlib import Path

from tests.support.loopback import loopback_http
from tests.support.media import cover, diff, encode_image, frames_of, picture, probe_mp4, result_mp4
from tests.support.stack import stack
from tests.support.wait import wait_status


def test_input_url_is_fetched_once_at_submit(tmp_path: Path) -> None:
    img = picture(160, 90, seed=11)
    jpeg = encode_image(img, "JPEG")
    routes = {"/photo.jpg": (200, {}, jpeg), "/moved": (302, {"Location": "/photo.jpg"}, b"")}
    with (
        loopback_http(routes) as (base, hits),
        stack(
            tmp_path / "data",
            fetch_allow_http="true",
            fetch_allow_networks="127.0.0.1/32",
            preview_step_seconds=0.05,
        ) as server,
        server.client(server.token("dora")) as client,
    ):
        url = f"{base}/photo.jpg?X-Amz-Signature=secret"
        body = {"prompt": "x", "data_uri": url, "duration": 1, "height": 128}
        r = client.post("/queue/wan22-fast-i2v", json=body)
        assert r.status_code == 200, r.text
        assert hits == ["/photo.jpg?X-Amz-Signature=secret"]  # fetched during the submit
        rid = r.json()["request_id"]
        status = wait_status(client, "wan22-fast-i2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        video = result_mp4(client, "wan22-fast-i2v", rid)
        assert len(hits) == 1  # the worker read the stored blob, not the URL
        info = probe_mp4(video, tmp_path)
        assert (info.width, info.height) == (224, 128)
        assert diff(frames_of(video, tmp_path)[0], cover(img, 224, 128)) < 5
        # A redirect to a checked address is followed.
        r = client.post("/queue/wan22-fast-i2v", json={**body, "data_uri": f"{base}/moved"})
        assert r.status_code == 200, r.text
        assert hits[1:] == ["/moved", "/photo.jpg"]
        del hits[1:]
        # Outside the allowed network, loopback is still refused.
        r = client.post(
            "/queue/wan22-fast-i2v",
            json={**body, "data_uri": url.replace("127.0.0.1", "127.0.0.2")},
        )
        assert r.status_code == 422 and len(hits) == 1
