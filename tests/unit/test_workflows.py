"""The comfyui engine's workflow templates: shipped ones are complete and consistent;
operator templates are found, checked and filled safely."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from vidq.config import ComfyUISettings
from vidq.engines import comfyui_workflows as wf
from vidq.engines.base import EngineJob
from vidq.engines.comfyui import ComfyUIEngine

SHIPPED = Path(wf.__file__).parent / "workflows"
NEEDS = {  # placeholders each kind must use, beyond the common ones
    "t2v": {"prompt", "negative_prompt", "width", "height", "frames", "seed", "steps"},
    "i2v": {"prompt", "image", "width", "height", "frames", "seed", "steps"},
    "flf2v": {"prompt", "image", "last_image", "width", "height", "frames", "seed", "steps"},
    "s2v": {"prompt", "image", "audio", "width", "height", "frames", "seed", "steps"},
    "foley": {"prompt", "video", "steps"},
}
KEY_NODE = {
    "t2v": "EmptyHunyuanLatentVideo",
    "i2v": "WanImageToVideo",
    "flf2v": "WanFirstLastFrameToVideo",
    "s2v": "WanSoundImageToVideo",
    "foley": "HunyuanVideoFoleyGenerateAudio",
}
VALUES: dict[str, Any] = {
    "prompt": "a fox",
    "negative_prompt": "blurry",
    "width": 320,
    "height": 192,
    "duration": 2,
    "frames": 33,
    "fps": 16,
    "seed": 42,
    "steps": 4,
    "half_steps": 2,
    "image": "a.png",
    "last_image": "b.png",
    "audio": "c.wav",
    "video": "d.mp4",
    "background_music": False,
    "filename_prefix": "vidq/7",
    "request_id": 7,
    "model_id": "wan22-fast-t2v",
}


def _walk(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _walk(v)]
    if isinstance(value, list):
        return [x for v in value for x in _walk(v)]
    return [value]


def test_every_kind_ships_a_template() -> None:
    assert sorted(p.stem for p in SHIPPED.glob("*.json")) == sorted(wf.KINDS)


@pytest.mark.parametrize("kind", wf.KINDS)
def test_shipped_template_is_complete_and_consistent(kind: str) -> None:
    template, origin = wf.load_template(kind, "any-model", None)
    assert origin == f"{kind}.json"
    used = wf.placeholders(template)
    assert NEEDS[kind] | {"filename_prefix"} <= used <= set(wf.PLACEHOLDERS)
    graph = wf.fill(wf.fill_loras(template, [], origin), VALUES)
    assert not any(isinstance(v, str) and "{{" in v for v in _walk(graph))
    for node_id, node in graph.items():
        for value in node["inputs"].values():
            if isinstance(value, list):
                assert value[0] in graph, f"node {node_id} links to missing {value[0]}"
                assert isinstance(value[1], int) and value[1] >= 0
    (out,) = wf.output_node_ids(graph)
    assert graph[out]["class_type"] == "SaveVideo"
    assert graph[out]["inputs"]["filename_prefix"] == "vidq/7"
    assert KEY_NODE[kind] in {n["class_type"] for n in graph.values()}
    # Every node is on a path to the output (no dangling loaders).
    reached, todo = set(), [out]
    while todo:
        nid = todo.pop()
        reached.add(nid)
        todo += [v[0] for v in graph[nid]["inputs"].values() if isinstance(v, list)]
    assert reached == set(graph)


def test_placeholders_become_typed_values_or_spliced_text() -> None:
    template = {
        "1": {"class_type": "X", "inputs": {"w": "{{width}}", "p": "run/{{request_id}}-{{seed}}"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "t": "{{prompt}}"}},
    }
    graph = wf.fill(template, {**VALUES, "prompt": 'say "{{seed}}" }, ['})
    assert graph["1"]["inputs"] == {"w": 320, "p": "run/7-42"}
    assert graph["2"]["inputs"]["t"] == 'say "{{seed}}" }, ['  # data, not template
    assert template["1"]["inputs"]["w"] == "{{width}}"  # the template is not changed


def test_fill_names_placeholders_the_job_cannot_provide() -> None:
    template = {"1": {"class_type": "SaveVideo", "inputs": {"x": "{{audio}}"}}}
    with pytest.raises(wf.WorkflowError, match=r"needs \['audio'\]"):
        wf.fill(template, {"prompt": "p"})


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ({"1": {"class_type": "SaveVideo", "inputs": {"video": ["9", 0]}}}, "missing node '9'"),
        ({"1": {"class_type": "SaveVideo", "inputs": {"video": ["1", "0"]}}}, "is not a link"),
        ({"1": {"class_type": "VAEDecode", "inputs": {}}}, "no output node"),
        ({"1": {"inputs": {}}}, "has no class_type"),
        ({"nodes": [], "links": []}, "UI format"),
        ({"1": {"class_type": "SaveVideo", "inputs": {"x": "{{colour}}"}}}, "unknown placeholders"),
        ([], "non-empty JSON object"),
    ],
)
def test_bad_templates_are_refused_with_the_reason(graph: Any, message: str) -> None:
    with pytest.raises(wf.WorkflowError, match=message):
        wf.parse_template(json.dumps(graph), "mine.json")


def test_operator_templates_take_precedence(tmp_path: Path) -> None:
    graph = {"5": {"class_type": "VHS_VideoCombine", "inputs": {"filename_prefix": "{{seed}}"}}}
    (tmp_path / "s2v.json").write_text(json.dumps(graph))
    (tmp_path / "wan22-s2v-fast-pro.json").write_text(json.dumps({"9": graph["5"]}))
    by_model, origin = wf.load_template("s2v", "wan22-s2v-fast-pro", tmp_path)
    assert list(by_model) == ["9"] and origin.endswith("wan22-s2v-fast-pro.json")
    by_kind, origin = wf.load_template("s2v", "wan22-s2v-fast", tmp_path)
    assert list(by_kind) == ["5"] and origin.endswith("s2v.json")
    shipped, origin = wf.load_template("t2v", "wan22-fast-t2v", tmp_path)
    assert origin == "t2v.json" and "16" in shipped
    (tmp_path / "..json").write_text(json.dumps(graph))
    assert wf.load_template("t2v", "..", tmp_path)[1] == "t2v.json"  # not a model id


def test_kind_for_picks_first_last_frame_when_a_last_frame_is_given() -> None:
    assert wf.kind_for("i2v", {"data_uri": "a"}) == "i2v"
    assert wf.kind_for("i2v", {"data_uri": "a", "second_image_uri": "b"}) == "flf2v"
    assert wf.kind_for("s2v", {}) == "s2v"
    with pytest.raises(wf.WorkflowError, match="no workflow for family"):
        wf.kind_for("t2i", {})


def test_the_engine_provides_every_documented_placeholder(tmp_path: Path) -> None:
    job = EngineJob(
        request_id=3,
        model_id="wan22-fast-t2v",
        family="t2v",
        variant="fast",
        inputs={"prompt": "p", "width": 320, "height": 192, "duration": 3},
        files={},
        output_path=str(tmp_path / "o.mp4"),
        steps=8,
    )
    uploads = {"image": "a.png", "last_image": "b.png", "audio": "c.wav", "video": "d.mp4"}
    values = ComfyUIEngine(ComfyUISettings(urls="http://127.0.0.1:1"))._values(job, uploads)
    assert set(values) == set(wf.PLACEHOLDERS) - set(wf.LORA_SLOTS)  # slots: fill_loras
    assert (values["frames"], values["steps"], values["half_steps"]) == (49, 8, 4)
    assert 0 <= values["seed"] < 2**32 and values["filename_prefix"] == "vidq/3"


def test_lora_slots_become_chains_or_are_bypassed() -> None:
    template = {
        "1": {"class_type": "UNETLoader", "inputs": {}},
        "2": {"class_type": "LoraLoaderModelOnly",
              "inputs": {"model": ["1", 0], "lora_name": "{{lora}}", "strength_model": 1.0}},
        "3": {"class_type": "KSampler", "inputs": {"model": ["2", 0], "seed": "{{seed}}"}},
        "4": {"class_type": "SaveVideo", "inputs": {"video": ["3", 0]}},
    }  # fmt: skip
    assert wf.lora_slots(template) == {"2": "lora"}
    loras = [("a.safetensors", 0.5, "high"), ("b.safetensors", -1.0, "low"), ("c", 2.0, "both")]
    graph = wf.fill_loras(template, loras, "x.json")
    chain = [("2", ["1", 0]), ("2_lora1", ["2", 0]), ("2_lora2", ["2_lora1", 0])]
    for (nid, link), (name, scale, _) in zip(chain, loras, strict=True):
        assert graph[nid]["inputs"] == {"model": link, "lora_name": name, "strength_model": scale}
    assert graph["3"]["inputs"]["model"] == ["2_lora2", 0]
    wf.check_graph(graph, "x.json")
    assert template["2"]["inputs"]["lora_name"] == "{{lora}}"  # the template is not changed
    bypassed = wf.fill_loras(template, [], "x.json")
    assert "2" not in bypassed and bypassed["3"]["inputs"]["model"] == ["1", 0]
    slot = {**template["2"]["inputs"], "lora_name": "{{lora_high}}"}
    high_only = {**template, "2": {**template["2"], "inputs": slot}}
    graph = wf.fill_loras(high_only, [("b", 1.0, "low")], "x.json")
    assert "2" not in graph and graph["3"]["inputs"]["model"] == ["1", 0]
    no_slot = {k: v for k, v in bypassed.items()}
    with pytest.raises(wf.WorkflowError, match=r"x\.json has no LoRA slot"):
        wf.fill_loras(no_slot, loras, "x.json")
