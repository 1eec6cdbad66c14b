"""The HTTP families of ``/metrics``: every request counted once under its route template
(status polls answered by the fast path included, raw paths never), and timed into the
right buckets."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from vidq.api.app import create_app
from vidq.api.auth import create_token
from vidq.blobs.local import LocalBlobStore
from vidq.config import Settings
from vidq.ops.metrics import HTTP_BUCKETS, HttpMetrics
from vidq.store import open_store

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
STATUS = "/queue/{model_id}/requests/{rid}/status"


def _samples(text: str) -> dict[str, float]:
    return {
        line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_durations_fall_in_their_buckets() -> None:
    registry = CollectorRegistry(auto_describe=True)
    metrics = HttpMetrics(registry)
    for seconds in (0.001, 0.005, 0.0051, 0.3, 10.0, 11.0):  # bounds are inclusive
        metrics.observe("/r", "GET", 200, seconds)
    metrics.observe("/r", "POST", 422, 0.002)
    m = _samples(generate_latest(registry).decode())
    get = 'method="GET",route="/r"'
    expected = {0.005: 2, 0.01: 3, 0.25: 3, 0.5: 4, 7.5: 4, 10.0: 5}
    for bound, count in expected.items():
        assert m[f'vidq_http_request_duration_seconds_bucket{{le="{bound}",{get}}}'] == count
    assert len([k for k in m if k.endswith(f"{get}}}") and "_bucket" in k]) == len(HTTP_BUCKETS) + 1
    assert m[f'vidq_http_request_duration_seconds_bucket{{le="+Inf",{get}}}'] == 6
    assert m[f"vidq_http_request_duration_seconds_count{{{get}}}"] == 6
    assert abs(m[f"vidq_http_request_duration_seconds_sum{{{get}}}"] - 21.3111) < 1e-9
    assert m[f'vidq_http_requests_total{{{get},status="200"}}'] == 6
    assert m['vidq_http_requests_total{method="POST",route="/r",status="422"}'] == 1


def test_requests_are_counted_by_route_template(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    storage = LocalBlobStore(tmp_path / "blobs", b"k")
    user, admin = create_token(store, "alice"), create_token(store, "ops", admin=True)
    app = create_app(Settings(), store, storage)
    try:
        with TestClient(app, base_url="http://localhost") as client:
            client.headers["Authorization"] = f"Bearer {user}"
            rid = client.post("/queue/wan22-fast-t2v", json=SMALL).json()["request_id"]
            for _ in range(3):  # the fast path
                assert client.get(f"/queue/wan22-fast-t2v/requests/{rid}/status").is_success
            assert client.get("/queue/wan22-fast-t2v/requests/424242/status").status_code == 404
            assert client.post("/queue/wan22-fast-t2v", json={}).status_code == 422
            assert client.get(f"/queue/wan22-fast-t2v/requests/{rid}").status_code == 409
            assert client.get("/no/such/path").status_code == 404
            text = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    finally:
        store.close()
    m = _samples(text)

    def requests(route: str, method: str, status: int) -> float:
        key = f'vidq_http_requests_total{{method="{method}",route="{route}",status="{status}"}}'
        return m.get(key, 0.0)

    assert requests(STATUS, "GET", 200) == 3 and requests(STATUS, "GET", 404) == 1
    get = f'method="GET",route="{STATUS}"'
    assert m[f"vidq_http_request_duration_seconds_count{{{get}}}"] == 4
    assert 0 < m[f"vidq_http_request_duration_seconds_sum{{{get}}}"] < 5
    assert requests("/queue/wan22-fast-t2v", "POST", 200) == 1
    assert requests("/queue/wan22-fast-t2v", "POST", 422) == 1
    assert requests("/queue/{model_id}/requests/{rid}", "GET", 409) == 1
    assert requests("unmatched", "GET", 404) == 1
    assert f"/requests/{rid}" not in text and "424242" not in text  # ids are never labels
    http = [k for k in m if k.startswith("vidq_http_requests_total")]
    assert sum(m[k] for k in http) == 8  # each request once (this scrape not yet counted)
