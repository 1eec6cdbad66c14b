"""Service-level behaviour on the in-process stack: OpenAPI, the model list, ETAs from
history, log hygiene."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.support.stack import stack
from tests.support.wait import holds, wait_status
from vidq.api.eta import CACHE_S
from vidq.catalog import MODELS


def test_openapi_and_models_describe_every_model(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as server:
        spec = httpx.get(f"{server.url}/openapi.json").json()
        for model_id in MODELS:
            op = spec["paths"][f"/queue/{model_id}"]["post"]
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.rsplit("/", 1)[1] in spec["components"]["schemas"]
        for path in (
            "/queue/{model_id}/requests/{rid}/status",
            "/queue/{model_id}/requests/{rid}/cancel",
            "/queue/{model_id}/requests/{rid}",
            "/fal/download/{bucket}/{key}",
            "/usage",
            "/admin/usage",
        ):
            assert path in spec["paths"], path
        t2v = spec["components"]["schemas"]["T2VInputs"]["properties"]
        assert t2v["width"]["maximum"] == 1920 and t2v["duration"]["maximum"] == 10
        # every reference resolves within the document (ReDoc renders nothing otherwise)
        assert "#/$defs/" not in json.dumps(spec)
        lora = spec["paths"]["/queue/fal-ai/wan/v2.2-a14b/text-to-video/lora"]["post"]
        body = lora["requestBody"]["content"]["application/json"]["schema"]
        item = body["properties"]["loras"]["items"]
        assert set(item["properties"]) == {"path", "scale", "transformer"}

        listed = httpx.get(f"{server.url}/models").json()
        models = {m["id"]: m for m in listed["models"]}
        assert listed["limits"] == {
            "max_input_bytes": 32 * 1024 * 1024,
            "max_body_bytes": 64 * 1024 * 1024,
        }
        assert set(models) == set(MODELS)
        assert models["wan22-fast-t2v-pro"]["tier"] == "pro"
        assert models["wan22-fast-t2v-pro"]["pool"] == models["wan22-fast-t2v"]["pool"]
        assert models["wan22-fast-t2v"]["engine"] == "preview"
        assert "prompt" in models["wan22-fast-t2v"]["input_schema"]["properties"]


def test_eta_follows_measured_durations_and_logs_hold_no_secrets(tmp_path: Path) -> None:
    data = tmp_path / "data"
    settings = {"preview_step_seconds": 0.3, "log_level": "INFO"}
    with stack(data, workers=1, logs=True, **settings) as server:
        token = server.token("alice")
        alice = server.client(token)
        admin = server.client(server.admin_token)
        small = {"prompt": "eta", "width": 128, "height": 128, "duration": 1}
        queued = alice.post("/queue/wan22-fast-t2v", json=small).json()["request_id"]
        # before any history there is no ETA: the preview engine gives no estimate (the
        # GPU catalog's figure, minutes, would be wrong by two orders of magnitude)
        first = wait_status(alice, "wan22-fast-t2v", queued, {"IN_PROGRESS"})
        default_eta = first["statusMessages"].get("estimated_total_time_seconds")
        assert default_eta is None and "etaSeconds" not in first, first
        wait_status(alice, "wan22-fast-t2v", queued, {"COMPLETED"})
        job = server.store.get(int(queued))
        assert job is not None and job.started_at is not None and job.finished_at is not None
        ran = job.finished_at - job.started_at  # what the store measured: 4 steps of 0.3 s
        assert ran >= 1.2
        # a second job waits in a paused pool, which has no ETA (it may never start), for as
        # long as the estimates' cache lasts; then it runs, and its ETA is that first run's
        # duration (the median of one), whatever the machine's load
        assert admin.post("/admin/pools/wan22-t2v/pause").status_code == 200
        rid = alice.post(
            "/queue/wan22-fast-t2v", json=small, headers={"x-pipelet-output": "binary"}
        ).json()["request_id"]
        status_url = f"/queue/wan22-fast-t2v/requests/{rid}/status"
        holds(
            lambda: "etaSeconds" not in alice.get(status_url).json(), CACHE_S + 0.5,
            what="no ETA while the pool is paused",
        )  # fmt: skip
        assert admin.post("/admin/pools/wan22-t2v/resume").status_code == 200
        running = wait_status(alice, "wan22-fast-t2v", rid, {"IN_PROGRESS"})
        measured = running["statusMessages"]["estimated_total_time_seconds"]
        # the estimate is the measured run (rounded to 0.1 s): a wrong estimator is caught
        assert measured == pytest.approx(ran, abs=0.051), (default_eta, measured, ran)
        assert measured != default_eta
        wait_status(alice, "wan22-fast-t2v", rid, {"COMPLETED"})
        url = alice.get(f"/queue/wan22-fast-t2v/requests/{rid}").json()["video"]["data_uri"]
        assert httpx.get(url).status_code == 200
    log = (data / "serve.log").read_text()
    assert "GET /files/vidq/outputs/" in log  # access lines are logged...
    signature = url.split("signature=")[1]
    assert signature not in log and "signature=" not in log  # ...without their query strings
    assert token not in log
