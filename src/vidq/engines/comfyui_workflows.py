"""ComfyUI workflow templates: find the template of a job, fill its placeholders, check it.

A template is a ComfyUI workflow in *API format* (``{"<node id>": {"class_type": ...,
"inputs": {...}}}``, what "Export (API)" saves). Placeholders are JSON strings:

- a string that is exactly ``"{{name}}"`` becomes the typed value (``"{{width}}"`` -> 720),
- a string that contains ``{{name}}`` among other text gets the value's text spliced in
  (``"vidq/{{request_id}}"`` -> ``"vidq/42"``).

Substitution walks the parsed JSON, never the text, so a prompt holding quotes or braces
cannot change the graph. The placeholders are listed in ``PLACEHOLDERS``.

A template may declare LoRA slots: a ``LoraLoaderModelOnly`` node whose ``lora_name`` is
exactly ``"{{lora_high}}"`` (the high-noise expert's chain), ``"{{lora_low}}"`` (the
low-noise one's) or ``"{{lora}}"`` (a single-model template: every LoRA). ``fill_loras``
turns each slot into a chain of one ``LoraLoaderModelOnly`` per LoRA the slot takes (file
name, ``strength_model`` = scale), the slot's consumers linked to the chain's end; a slot
no LoRA fills is bypassed (its consumers take the slot's own ``model`` input), so a job
without LoRAs runs the graph the template would be without its slots.

Which template a job uses (first that exists): ``<workflows_dir>/<model id>.json``,
``<workflows_dir>/<kind>.json``, then the one shipped in ``vidq/engines/workflows/<kind>.json``;
``kind`` is ``t2v``, ``i2v``, ``flf2v`` (an I2V job with a last frame), ``s2v`` or ``foley``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from vidq.errors import EngineUnavailable

# name -> what it becomes; docs/engines/comfyui.md repeats this table.
PLACEHOLDERS: dict[str, str] = {
    "prompt": "the prompt (string)",
    "negative_prompt": "the negative prompt, or the engine's default (string)",
    "width": "output width in pixels, a multiple of 16 (int)",
    "height": "output height in pixels, a multiple of 16 (int)",
    "duration": "requested seconds (int)",
    "frames": "frames to generate: 16 * duration + 1 (int)",
    "fps": "frames per second, 16 (int)",
    "seed": "the request's seed, or a random one (int)",
    "steps": "denoising steps of the model tier, more with higher_quality_with_more_steps (int)",
    "half_steps": "steps // 2: where Wan 2.2's high-noise expert hands over to the low (int)",
    "image": "uploaded input image (data_uri), a file name in ComfyUI's input folder",
    "last_image": "uploaded last frame (second_image_uri), a file name in the input folder",
    "audio": "uploaded input audio (audio_uri), a file name in the input folder",
    "video": "uploaded input video (data_uri of Foley), a file name in the input folder",
    "background_music": "Foley: whether a music bed was asked for (bool)",
    "filename_prefix": "where the output node saves: 'vidq/<request id>' (string)",
    "request_id": "the request id (int)",
    "model_id": "the public model id (string)",
    "lora_high": "LoRA slot (a LoraLoaderModelOnly's lora_name): LoRAs for the high-noise expert",
    "lora_low": "LoRA slot (a LoraLoaderModelOnly's lora_name): LoRAs for the low-noise expert",
    "lora": "LoRA slot (a LoraLoaderModelOnly's lora_name): every LoRA of the request",
}
LORA_SLOTS = {  # slot placeholder -> the ``transformer`` values of the LoRAs it takes
    "lora_high": ("high", "both"),
    "lora_low": ("low", "both"),
    "lora": ("high", "low", "both"),
}
LORA_NODE = "LoraLoaderModelOnly"

# Nodes whose output the engine downloads; a template needs one of them.
OUTPUT_NODES = frozenset({"SaveVideo", "VHS_VideoCombine"})
KINDS = ("t2v", "i2v", "flf2v", "s2v", "foley")
DEFAULT_NEGATIVE_PROMPT = (
    "blurry, low quality, static, distorted, deformed, watermark, text, subtitles"
)

_TOKEN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

Workflow = dict[str, Any]


class WorkflowError(EngineUnavailable):
    """A workflow template is invalid."""


def kind_for(family: str, files: Mapping[str, str]) -> str:
    """The template kind of a job: its family, or ``flf2v`` for I2V with a last frame."""
    if family == "i2v" and "second_image_uri" in files:
        return "flf2v"
    if family not in KINDS:
        raise WorkflowError(f"the comfyui engine has no workflow for family {family!r}")
    return family


def load_template(kind: str, model_id: str, workflows_dir: Path | None) -> tuple[Workflow, str]:
    """The template for ``model_id`` of ``kind`` and where it came from (see module doc)."""
    if workflows_dir is not None:
        names = [f"{model_id}.json"] if _MODEL_ID.match(model_id) else []
        for name in [*names, f"{kind}.json"]:
            path = workflows_dir / name
            if path.is_file():
                return parse_template(path.read_text(encoding="utf-8"), str(path)), str(path)
    shipped = resources.files("vidq.engines").joinpath("workflows", f"{kind}.json")
    if not shipped.is_file():
        raise WorkflowError(f"no shipped workflow for {kind!r}")
    return parse_template(shipped.read_text(encoding="utf-8"), f"{kind}.json"), f"{kind}.json"


def model_template(options: Mapping[str, Any]) -> tuple[Workflow, str] | None:
    """The template a models-file entry names (its ``template`` option: a file relative to
    the models file's folder, ``template_dir``, or a shipped kind), or None without one."""
    name = options.get("template")
    if not isinstance(name, str):
        return None
    base = Path(str(options.get("template_dir") or "."))
    path = base / name
    if path.is_file():
        return parse_template(path.read_text(encoding="utf-8"), str(path)), str(path)
    if name in KINDS:
        return load_template(name, "", None)
    raise WorkflowError(f"the model's workflow template {name!r} is not in {base}")


def fill_inputs(
    graph: Workflow, declared: list[Mapping[str, Any]], inputs: Mapping[str, Any]
) -> Workflow:
    """A copy of ``graph`` with each input the model's entry declares (``options.inputs``:
    name, node, input, default) written into its node input: the request's value, else
    the default. The models file was checked to name nodes that exist."""
    filled: Workflow = copy.deepcopy(graph)
    for item in declared:
        node = filled.get(str(item["node"]))
        if not isinstance(node, dict):
            raise WorkflowError(f"the workflow has no node {item['node']!r} for {item['name']!r}")
        node.setdefault("inputs", {})[str(item["input"])] = inputs.get(
            str(item["name"]), item.get("default")
        )
    return filled


def parse_template(text: str, origin: str) -> Workflow:
    """Parse and check a template's shape, links, output node and placeholder names."""
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(f"workflow {origin} is not JSON: {exc}") from exc
    if isinstance(graph, dict) and "nodes" in graph and "links" in graph:
        raise WorkflowError(
            f"workflow {origin} is in ComfyUI's UI format; export it with 'Export (API)'"
        )
    check_graph(graph, origin)
    unknown = sorted(placeholders(graph) - set(PLACEHOLDERS))
    if unknown:
        raise WorkflowError(
            f"workflow {origin} uses unknown placeholders {unknown}; known: {sorted(PLACEHOLDERS)}"
        )
    return dict(graph)


def placeholders(value: Any) -> set[str]:
    """Every placeholder name used anywhere in ``value``."""
    if isinstance(value, str):
        return set(_TOKEN.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set()


def fill(template: Workflow, values: Mapping[str, Any]) -> Workflow:
    """A copy of ``template`` with its placeholders replaced by ``values``."""
    missing = sorted(placeholders(template) - set(values))
    if missing:
        raise WorkflowError(f"workflow needs {missing}, which this job does not provide")
    filled: Workflow = _fill(copy.deepcopy(template), values)
    return filled


def _fill(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        whole = _TOKEN.fullmatch(value)
        if whole:
            return values[whole.group(1)]
        return _TOKEN.sub(lambda m: str(values[m.group(1)]), value)
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    return value


def lora_slots(graph: Mapping[str, Any]) -> dict[str, str]:
    """The template's LoRA slots: node id -> slot placeholder name."""
    slots: dict[str, str] = {}
    for nid, node in graph.items():
        if node.get("class_type") != LORA_NODE:
            continue
        whole = _TOKEN.fullmatch(str(node.get("inputs", {}).get("lora_name", "")))
        if whole and whole.group(1) in LORA_SLOTS:
            slots[nid] = whole.group(1)
    return slots


def fill_loras(template: Workflow, loras: list[tuple[str, float, str]], origin: str) -> Workflow:
    """A copy of ``template`` with its LoRA slots filled by ``loras`` ((file name, scale,
    transformer), in the request's order): see the module docstring. ``WorkflowError`` for
    a slot node without a ``model`` link, and when ``loras`` is not empty and the template
    has no slot."""
    graph: Workflow = copy.deepcopy(template)
    slots = lora_slots(graph)
    if loras and not slots:
        raise WorkflowError(
            f"workflow {origin} has no LoRA slot (a {LORA_NODE} node whose lora_name is "
            '"{{lora_high}}", "{{lora_low}}" or "{{lora}}"); this request has LoRAs'
        )
    for nid, slot in slots.items():
        source = graph[nid]["inputs"].get("model")
        if not isinstance(source, list):
            raise WorkflowError(f"workflow {origin}: LoRA slot {nid!r} has no model link")
        taken = [(name, scale) for name, scale, expert in loras if expert in LORA_SLOTS[slot]]
        end: list[Any] = list(source)
        chain: set[str] = set()
        for k, (name, scale) in enumerate(taken):
            node_id = nid if k == 0 else f"{nid}_lora{k}"
            graph[node_id] = {
                "class_type": LORA_NODE,
                "inputs": {"model": end, "lora_name": name, "strength_model": scale},
                "_meta": {"title": f"vidq LoRA {k + 1} ({slot})"},
            }
            chain.add(node_id)
            end = [node_id, 0]
        if not taken:
            del graph[nid]
        for other_id, other in graph.items():
            if other_id in chain:
                continue
            for key, value in other.get("inputs", {}).items():
                if value == [nid, 0]:
                    other["inputs"][key] = list(end)
    return graph


def check_graph(graph: Any, origin: str) -> None:
    """Nodes are ``{class_type, inputs}``; every link ``[node id, output index]`` points at
    a node of the graph; at least one output node (``OUTPUT_NODES``) is present."""
    if not isinstance(graph, dict) or not graph:
        raise WorkflowError(f"workflow {origin} must be a non-empty JSON object of nodes")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str):
            raise WorkflowError(f"workflow {origin}: node {node_id!r} has no class_type")
        inputs = node.get("inputs", {})
        if not isinstance(inputs, dict):
            raise WorkflowError(f"workflow {origin}: node {node_id!r} inputs must be an object")
        for name, value in inputs.items():
            if not isinstance(value, list):
                continue
            if len(value) != 2 or not isinstance(value[0], str) or not isinstance(value[1], int):
                raise WorkflowError(
                    f"workflow {origin}: node {node_id!r} input {name!r} is not a link "
                    "[node id, output index]"
                )
            if value[0] not in graph:
                raise WorkflowError(
                    f"workflow {origin}: node {node_id!r} input {name!r} links to "
                    f"missing node {value[0]!r}"
                )
    if not output_node_ids(graph):
        raise WorkflowError(f"workflow {origin} has no output node (one of {sorted(OUTPUT_NODES)})")


def output_node_ids(graph: Mapping[str, Any]) -> list[str]:
    """Ids of the nodes whose files are the job's output."""
    return [nid for nid, node in graph.items() if node.get("class_type") in OUTPUT_NODES]
