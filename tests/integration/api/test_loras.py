"""LoRAs per request, end to end on the preview engine: the API checks ``loras`` at submit
(count, URL, scale, expert; 422 naming the item) and never fetches them; the worker
fetches each URL from a loopback server (allowed here only by the local-testing settings
VIDQ_FETCH_ALLOW_HTTP and VIDQ_FETCH_ALLOW_NETWORKS) and the result records its sha256."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from tests.support.loopback import loopback_http
from tests.support.stack import stack
from tests.support.wait import wait_status

T2V = "wan22-fast-t2v"
LORA = b"not really a LoRA, but the preview engine only records it" * 10
LOOPBACK = {"fetch_allow_http": "true", "fetch_allow_networks": "127.0.0.1/32"}


def _body(**extra: Any) -> dict[str, Any]:
    return {"prompt": "a fox", "width": 128, "height": 128, "duration": 1, **extra}


def test_loras_are_fetched_by_the_worker_and_recorded_in_the_result(tmp_path: Path) -> None:
    routes = {"/style.safetensors": (200, {}, LORA), "/gone": (404, {}, b"")}
    with (
        loopback_http(routes) as (base, hits),
        stack(tmp_path / "data", workers=0, max_lora_bytes=4096, **LOOPBACK) as server,
        server.client(server.token("lena")) as client,
    ):
        url = f"{base}/style.safetensors?X-Amz-Signature=secret"
        loras = [{"path": url, "scale": 0.7, "transformer": "both"}, {"path": url}]
        r = client.post(f"/queue/{T2V}", json=_body(loras=loras))
        assert r.status_code == 200, r.text
        assert hits == [], "the API does not fetch LoRAs"
        rid = r.json()["request_id"]
        # the fal dialect's /lora endpoint takes them too, on the catalog's fp8 T2V model
        fal = client.post(
            "/queue/fal-ai/wan/v2.2-a14b/text-to-video/lora",
            json={"prompt": "a fox", "loras": [{"path": url, "scale": 0.5}]},
        )
        assert fal.status_code == 200, fal.text
        missing = client.post(f"/queue/{T2V}", json=_body(loras=[{"path": f"{base}/gone"}]))
        assert missing.status_code == 200, missing.text
        server.drain(pools="wan22-t2v")

        status = wait_status(client, T2V, rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        result = client.get(f"/queue/{T2V}/requests/{rid}").json()
        sha = hashlib.sha256(LORA).hexdigest()
        assert result["loras"] == [
            {"sha256": sha, "bytes": len(LORA), "scale": 0.7, "transformer": "both"},
            {"sha256": sha, "bytes": len(LORA), "scale": 1.0, "transformer": "high"},
        ]
        assert hits.count("/style.safetensors?X-Amz-Signature=secret") == 2
        # one file in the worker's cache, named by its content hash
        cached = sorted(p.name for p in (tmp_path / "data" / "lora-cache").iterdir())
        assert cached == [f"{sha}.safetensors"]

        failed = wait_status(client, T2V, missing.json()["request_id"], {"COMPLETED", "FAILED"})
        assert failed["status"] == "FAILED"
        job = server.store.get(int(missing.json()["request_id"]))
        assert job is not None and job.attempt == 1, "a 404 is final: not retried"
        assert job.error is not None and "loras[0] (http://127.0.0.1" in job.error
        assert "/gone): URL answered HTTP 404" in job.error
        fal = client.get(f"/queue/vidq/{T2V}/requests/{missing.json()['request_id']}")
        assert fal.status_code == 422, fal.text  # the inputs', as fal's model errors


def test_a_lora_over_the_byte_limit_fails_the_job_naming_it(tmp_path: Path) -> None:
    routes = {"/big.safetensors": (200, {}, b"x" * 5000)}
    with (
        loopback_http(routes) as (base, _hits),
        stack(tmp_path / "data", workers=0, max_lora_bytes=4096, **LOOPBACK) as server,
        server.client(server.token("lena")) as client,
    ):
        r = client.post(f"/queue/{T2V}", json=_body(loras=[{"path": f"{base}/big.safetensors"}]))
        assert r.status_code == 200, r.text
        server.drain(pools="wan22-t2v")
        status = wait_status(client, T2V, r.json()["request_id"], {"COMPLETED", "FAILED"})
        assert status["status"] == "FAILED"
        job = server.store.get(int(r.json()["request_id"]))
        assert job is not None and job.attempt == 1 and job.error is not None
        assert "loras[0] (http://127.0.0.1" in job.error and "VIDQ_MAX_LORA_BYTES" in job.error
        fal = client.get(f"/queue/vidq/{T2V}/requests/{r.json()['request_id']}")
        assert fal.status_code == 422, fal.text


def test_bad_loras_are_refused_at_submit_naming_the_item(tmp_path: Path) -> None:
    with (
        stack(tmp_path / "data", workers=0, max_loras=2) as server,
        server.client(server.token("lena")) as client,
    ):
        ok = {"path": "https://8.8.8.8/a.safetensors"}

        def refused(model: str, body: dict[str, Any]) -> list[Any]:
            r = client.post(f"/queue/{model}", json=body)
            assert r.status_code == 422, r.text
            return [e["loc"] for e in r.json()["detail"]]

        assert refused(T2V, _body(loras=[ok, ok, ok])) == [["body", "loras"]]
        assert refused(T2V, _body(loras=[ok, {"path": "ftp://8.8.8.8/a"}])) == [
            ["body", "loras", 1, "path"]
        ]
        # loopback is refused by the outbound policy (no local-testing settings here)
        assert refused(T2V, _body(loras=[{"path": "https://127.0.0.1/a"}])) == [
            ["body", "loras", 0, "path"]
        ]
        assert refused(T2V, _body(loras=[{"path": "http://8.8.8.8/a"}])) == [
            ["body", "loras", 0, "path"]
        ]
        assert refused(T2V, _body(loras=[{**ok, "scale": 99}])) == [["body", "loras", 0, "scale"]]
        assert refused(T2V, _body(loras=[{**ok, "transformer": "mid"}])) == [
            ["body", "loras", 0, "transformer"]
        ]
        assert refused(T2V, _body(loras=[{**ok, "weight": 1}])) == [["body", "loras", 0, "weight"]]
        # image-to-video takes them; speech-to-video and the fal non-lora endpoints do not
        s2v = client.post("/queue/wan22-s2v-fast", json={"prompt": "x", "loras": [ok]})
        assert s2v.status_code == 422
        fal = client.post(
            "/queue/fal-ai/wan/v2.2-a14b/text-to-video", json={"prompt": "x", "loras": [ok]}
        )
        assert fal.status_code == 422, fal.text
        assert fal.json()["detail"][0]["loc"] == ["body", "loras"]
        assert "text-to-video/lora" in fal.json()["detail"][0]["msg"]
        fal_lora = client.post(
            "/queue/fal-ai/wan/v2.2-a14b/image-to-video/lora",
            json={"prompt": "x", "image_url": "data:,", "loras": [ok, {"path": "nope"}]},
        )
        assert fal_lora.status_code == 422
        assert ["body", "loras", 1, "path"] in [e["loc"] for e in fal_lora.json()["detail"]]
