"""A models file (VIDQ_MODELS_FILE) served end to end: a new id on the preview engine, over
both dialects, with its own defaults and bounds; and a ComfyUI template model whose own
input reaches the graph the fake ComfyUI runs."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.fake_comfyui import FakeComfyUI
from tests.support.media import probe_mp4, result_mp4
from tests.support.stack import stack
from tests.support.wait import eventually, wait_status
from vidq import catalog
from vidq.api.fal import catalog as fal_catalog


@pytest.fixture(autouse=True)
def shipped_catalog_after() -> Iterator[None]:
    """A stack with a models file makes it this process's catalog, and its fal aliases
    (``fal.catalog.ENDPOINTS``, rebuilt when an app is built); later tests of the process
    find the shipped ones again, those that build no app too (tests/unit/test_fal_catalog.py
    failed after this file once it ran on the same xdist worker)."""
    yield
    catalog.install(None)
    fal_catalog.refresh()


FINETUNE = """
[[model]]
id = "acme-wan-finetune"
family = "t2v"
pool = "acme"
engine = "preview"
eta_seconds = 30
output_name = "AcmeFinetune"
bounds = { side_min = 128, side_max = 512, side_multiple = 32, duration_min = 1, duration_max = 5 }
defaults = { width = 256, height = 160, duration = 1 }
fal = [{ endpoint = "acme/finetune", schema = "wan-t2v-turbo" }]
"""


def test_a_new_id_from_the_file_is_served_end_to_end(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(FINETUNE)
    with stack(tmp_path / "data", models_file=models) as server:
        client = server.client(server.token("alice"))
        listed = client.get("/models").json()["models"]
        assert [m["id"] for m in listed] == ["acme-wan-finetune"]  # the file replaces the default
        width = listed[0]["input_schema"]["properties"]["width"]
        assert (width["default"], width["maximum"]) == (256, 512)
        assert "acme-wan-finetune" in client.get("/openapi.json").json()["paths"].__repr__()

        # its defaults: 256x160, 1 s at 16 fps
        rid = client.post("/queue/acme-wan-finetune", json={"prompt": "a fox"}).json()["request_id"]
        status = wait_status(client, "acme-wan-finetune", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        video = probe_mp4(result_mp4(client, "acme-wan-finetune", rid), tmp_path)
        assert (video.width, video.height, video.frames) == (256, 160, 17)

        # its bounds: a multiple of 32, at most 512 wide, at most 5 s
        for field, value in (("width", 240), ("width", 544), ("duration", 6)):
            bad = client.post("/queue/acme-wan-finetune", json={"prompt": "a", field: value})
            assert bad.status_code == 422, bad.text
            assert bad.json()["detail"][0]["loc"] == ["body", field]

        # an id of the shipped file is not served by this deployment
        gone = client.post("/queue/wan22-fast-t2v", json={"prompt": "a fox"})
        assert gone.status_code == 404

        # its fal alias
        fal = server.client(None)
        fal.headers["Authorization"] = f"Key {server.token('bob')}"
        sub = fal.post(
            "/queue/acme/finetune",
            json={"prompt": "a fox", "resolution": "480p", "aspect_ratio": "1:1"},
        )
        assert sub.status_code == 200, sub.text

        def done() -> dict[str, object] | None:
            s = fal.get(sub.json()["status_url"]).json()
            return s if s["status"] == "COMPLETED" else None

        eventually(done, 60, what="the fal request to complete")
        result = fal.get(sub.json()["response_url"])
        assert result.status_code == 200, result.text
        data = httpx.get(result.json()["video"]["url"], timeout=30).content
        assert (probe_mp4(data, tmp_path).width, probe_mp4(data, tmp_path).height) == (480, 480)
        # fal's 480p 16:9 is 832x480: over this model's 512, refused with fal's field named
        wide = fal.post("/queue/acme/finetune", json={"prompt": "a fox", "resolution": "480p"})
        assert wide.status_code == 422, wide.text


STYLED = """
[[model]]
id = "acme-styled-t2v"
family = "t2v"
pool = "acme-styled"
engine = "comfyui"
output_name = "AcmeStyled"

[model.options]
template = "styled.json"

[[model.options.inputs]]
name = "style_strength"
type = "float"
default = 0.8
ge = 0
le = 2
node = "3"
input = "strength_model"
description = "How much of the style LoRA."
"""


def test_a_template_model_with_its_own_input_runs_on_comfyui(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[3] / "src/vidq/engines/workflows/t2v.json"
    shutil.copyfile(shipped, tmp_path / "styled.json")
    models = tmp_path / "models.toml"
    models.write_text(STYLED)
    with (
        FakeComfyUI(tmp_path / "comfy") as comfy,
        stack(
            tmp_path / "data",
            models_file=models,
            engines="acme-styled=comfyui",
            comfyui_url=comfy.url,
        ) as server,
    ):
        client = server.client(server.token("alice"))
        schema = client.get("/models").json()["models"][0]["input_schema"]
        assert schema["properties"]["style_strength"]["default"] == 0.8
        small = {"prompt": "a fox", "width": 128, "height": 128, "duration": 1}
        bad = client.post("/queue/acme-styled-t2v", json={**small, "style_strength": 5})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "style_strength"]
        for value in (1.5, None):
            body = {**small, **({"style_strength": value} if value is not None else {})}
            rid = client.post("/queue/acme-styled-t2v", json=body).json()["request_id"]
            status = wait_status(client, "acme-styled-t2v", rid, {"COMPLETED", "FAILED"})
            assert status["status"] == "COMPLETED", status
            video = probe_mp4(result_mp4(client, "acme-styled-t2v", rid), tmp_path)
            assert (video.width, video.height) == (128, 128)
        strengths = [graph["3"]["inputs"]["strength_model"] for graph in comfy.prompts]
        assert strengths == [1.5, 0.8]  # the request's value, then the declared default
