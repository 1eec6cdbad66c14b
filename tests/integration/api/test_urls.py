"""The URLs the API hands out: how long signed ones live, and which Host they are built on."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.stack import stack
from tests.support.wait import wait_status

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def _lifetime(url: str) -> float:
    """Seconds until a local-store signed URL expires."""
    return int(parse_qs(urlsplit(url).query)["expires"][0]) - time.time()


def test_signed_urls_live_as_long_as_documented(tmp_path: Path) -> None:
    with stack(tmp_path, signed_url_ttl=100, download_url_ttl=300) as server:
        alice = server.client(server.token("alice"))
        r = alice.post(f"/queue/{T2V}", json=SMALL, headers={"x-pipelet-output": "binary"})
        rid = r.json()["request_id"]
        status = wait_status(alice, T2V, rid, {"COMPLETED"})
        binary = alice.get(f"/queue/{T2V}/requests/{rid}").json()["video"]["data_uri"]
        assert 95 <= _lifetime(binary) <= 101
        key = status["statusMessages"]["result_uri"].removeprefix("s3://vidq/")
        download = alice.get(f"/fal/download/vidq/{key}").json()["url"]
        assert 295 <= _lifetime(download) <= 301
        assert httpx.get(download, timeout=10).status_code == 200


def test_a_host_that_is_not_ours_is_refused_not_reflected(tmp_path: Path) -> None:
    with stack(tmp_path, workers=0) as server:
        alice = server.client(server.token("alice"))
        evil = alice.post(f"/queue/{T2V}", json=SMALL, headers={"Host": "evil.example"})
        assert evil.status_code == 400
        status = alice.get(f"/queue/{T2V}/requests/1/status", headers={"Host": "evil.example"})
        assert status.status_code == 400  # the status fast path too
        assert "evil" not in status.text
        port = urlsplit(server.url).port
        ok = alice.post(f"/queue/{T2V}", json=SMALL, headers={"Host": f"localhost:{port}"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["response_url"].startswith(f"http://localhost:{port}/queue/")


def test_allowed_hosts_and_public_url(tmp_path: Path) -> None:
    hosts = "vidq.test,*.vidq.test,127.0.0.1"
    with stack(tmp_path / "a", workers=0, allowed_hosts=hosts) as server:
        alice = server.client(server.token("alice"))
        for host in ("vidq.test", "gpu.vidq.test"):
            r = alice.post(f"/queue/{T2V}", json=SMALL, headers={"Host": host})
            assert r.status_code == 200, r.text
            assert r.json()["response_url"].startswith(f"http://{host}/queue/")
        port = urlsplit(server.url).port
        refused = alice.post(f"/queue/{T2V}", json=SMALL, headers={"Host": f"localhost:{port}"})
        assert refused.status_code == 400  # the list replaces the defaults
    with stack(tmp_path / "b", workers=0, public_url="https://api.vidq.test") as server:
        alice = server.client(server.token("alice"))
        r = alice.post(f"/queue/{T2V}", json=SMALL, headers={"Host": "evil.example"})
        assert r.status_code == 200, r.text  # no Host is reflected: the public URL is used
        assert r.json()["response_url"].startswith("https://api.vidq.test/queue/")
