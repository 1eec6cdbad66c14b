"""The models file (``VIDQ_MODELS_FILE``, TOML): the public model ids a deployment serves.

Each ``[[model]]`` entry names its id, input family, tier, pool, engine and that engine's
options, defaults and bounds, an ETA hint and its fal endpoint aliases (docs/models.md).
The default file ships in the package (``vidq/models.toml``). ``read`` checks a file whole
and raises ``ModelsFileError`` naming the file, the entry and the field; ``vidq.catalog``
builds its ``Model`` objects from what it returns. This module knows no other part of vidq.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_NAME = "models.toml"

FAMILIES = ("t2v", "i2v", "s2v", "foley")
ENGINES = ("preview", "wan", "comfyui", "ltx2")
# fal input schemas an alias may take (``api/fal/catalog.py`` maps each to its class).
FAL_SCHEMAS = (
    "wan-t2v", "wan-t2v-turbo", "wan-t2v-lora", "wan-i2v", "wan-i2v-turbo", "wan-i2v-lora",
    "wan-s2v", "foley",
)  # fmt: skip
_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class ModelsFileError(ValueError):
    """A models file that cannot be served; the message names the file, entry and field."""

    def __init__(self, file: str, entry: str, field: str, message: str) -> None:
        self.file, self.entry, self.field = file, entry, field
        where = " ".join(p for p in (f"entry {entry}" if entry else "", field) if p)
        super().__init__(f"{file}: {where}: {message}" if where else f"{file}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TemplateInput(_Strict):
    """An input a ComfyUI template declares: the request field ``name`` fills the node
    input ``input`` of node ``node``."""

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    type: Literal["int", "float", "str", "bool"]
    default: int | float | str | bool
    ge: float | None = None
    le: float | None = None
    description: str = ""
    node: str = Field(min_length=1)
    input: str = Field(min_length=1)

    @model_validator(mode="after")
    def _typed(self) -> TemplateInput:
        numeric = self.type in ("int", "float")
        if not numeric and (self.ge is not None or self.le is not None):
            raise ValueError(f"ge and le apply to int and float inputs, not {self.type}")
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
        if isinstance(self.default, bool) != (self.type == "bool") or not isinstance(
            self.default, kinds[self.type]
        ):
            raise ValueError(f"the default {self.default!r} is not of type {self.type}")
        return self


class PreviewOptions(_Strict):
    """The preview engine takes no options."""


class WanOptions(_Strict):
    """The wan engine: the weights follow the variant (docs/engines/wan.md)."""


class ComfyUIOptions(_Strict):
    template: str | None = Field(
        None, description="The workflow: a path (relative to the models file) or a kind."
    )
    inputs: list[TemplateInput] = Field(default_factory=list)


class LTX2Options(_Strict):
    pipeline: str | None = None
    weights: str | None = None
    dtype: Literal["bfloat16", "float16", "float32"] | None = None
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0, le=30)
    fps: int | None = Field(None, ge=1, le=60)
    distill_lora: str | None = None


OPTIONS: dict[str, type[_Strict]] = {
    "preview": PreviewOptions,
    "wan": WanOptions,
    "comfyui": ComfyUIOptions,
    "ltx2": LTX2Options,
}


class FalAlias(_Strict):
    endpoint: str = Field(pattern=r"^[A-Za-z0-9-]+/[A-Za-z0-9./-]+$")  # fal ids ignore case
    schema_: Literal[FAL_SCHEMAS] = Field(alias="schema")  # type: ignore[valid-type]


class Bounds(_Strict):
    side_min: int = Field(128, ge=16)
    side_max: int = Field(1920, le=4096)
    side_multiple: int = Field(16, ge=1, le=256)
    duration_min: int = Field(1, ge=1)
    duration_max: int = Field(10, le=60)

    @model_validator(mode="after")
    def _ordered(self) -> Bounds:
        if self.side_min > self.side_max:
            raise ValueError("side_min is above side_max")
        if self.duration_min > self.duration_max:
            raise ValueError("duration_min is above duration_max")
        return self


class Defaults(_Strict):
    width: int | None = None
    height: int | None = None
    duration: int | None = None


class Entry(_Strict):
    """One ``[[model]]`` of the file."""

    id: str = Field(pattern=_ID)
    family: Literal["t2v", "i2v", "s2v", "foley"]
    tier: Literal["base", "pro", "premium"] = "base"
    pool: str = Field(pattern=_ID)
    engine: Literal["preview", "wan", "comfyui", "ltx2"] = "preview"
    variant: str = Field("fast", min_length=1)
    steps: int = Field(4, ge=1, le=200)
    steps_hq: int = Field(8, ge=1, le=400)
    eta_seconds: float = Field(180, gt=0)
    output_name: str = Field("Video", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    fps: int = Field(16, ge=1, le=60)
    frame_rule: Literal["4k+1", "8k+1"] = "4k+1"
    opt_in: bool = Field(False, description="Served only by workers whose pools name its pool.")
    options: dict[str, Any] = Field(default_factory=dict)
    bounds: Bounds | None = None
    defaults: Defaults = Field(default_factory=Defaults)
    fal: list[FalAlias] = Field(default_factory=list)


class ModelsFile(_Strict):
    model: list[Entry] = Field(min_length=1)


def default_path() -> Path:
    return Path(str(resources.files("vidq").joinpath(DEFAULT_NAME)))


def read(path: Path | None = None) -> tuple[ModelsFile, dict[str, BaseModel]]:
    """The checked file at ``path`` (the shipped one when None) and each entry's engine
    options, parsed. ``ModelsFileError`` for anything wrong, with its place."""
    path = path or default_path()
    name = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ModelsFileError(name, "", "", f"cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(name, "", "", f"not TOML: {exc}") from None
    entries = raw.get("model") if isinstance(raw, dict) else None
    try:
        parsed = ModelsFile.model_validate(raw)
    except ValidationError as exc:
        raise _place(name, exc, entries) from None
    options: dict[str, BaseModel] = {}
    seen_ids: set[str] = set()
    seen_aliases: set[str] = set()
    for i, entry in enumerate(parsed.model):
        label = f"#{i + 1} ({entry.id})"
        if entry.id in seen_ids:
            raise ModelsFileError(name, label, "id", f"duplicate id {entry.id!r}")
        seen_ids.add(entry.id)
        for j, alias in enumerate(entry.fal):
            key = alias.endpoint.lower()
            if key in seen_aliases or key in seen_ids:
                raise ModelsFileError(
                    name, label, f"fal[{j}].endpoint", f"duplicate alias {alias.endpoint!r}"
                )
            seen_aliases.add(key)
        try:
            opts = OPTIONS[entry.engine].model_validate(entry.options)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = _dotted(["options", *err["loc"]])
            message = (
                f"the {entry.engine} engine has no option {err['loc'][-1]!r}"
                if err["type"] == "extra_forbidden"
                else err["msg"]
            )
            raise ModelsFileError(name, label, field, message) from None
        if isinstance(opts, ComfyUIOptions):
            _check_template(name, label, path.parent, entry, opts)
        _check_pace(name, label, entry, opts)
        options[entry.id] = opts
    return parsed, options


def _check_pace(name: str, label: str, entry: Any, opts: BaseModel) -> None:
    """An engine without an ``fps`` option makes Wan's pace (16 fps, 4k+1 frames): an
    entry of it that asks for another is refused, not silently served at 16 fps."""
    if "fps" in type(opts).model_fields:
        return
    for field, fixed in (("fps", 16), ("frame_rule", "4k+1")):
        if getattr(entry, field) != fixed:
            raise ModelsFileError(
                name, label, field,
                f"the {entry.engine} engine makes videos at 16 fps of 4k+1 frames; only an "
                f"engine with an fps option (ltx2) takes another {field}",
            )  # fmt: skip


def _place(name: str, exc: ValidationError, entries: Any) -> ModelsFileError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    entry = ""
    if len(loc) >= 2 and loc[0] == "model" and isinstance(loc[1], int):
        index = loc[1]
        mid = entries[index].get("id") if isinstance(entries, list) else None
        entry = f"#{index + 1}" + (f" ({mid})" if isinstance(mid, str) else "")
        loc = loc[2:]
    field = _dotted(loc)
    message = err["msg"]
    if err["type"] == "literal_error" and loc and loc[-1] == "family":
        message = f"unknown family {err['input']!r}; known: {', '.join(FAMILIES)}"
    elif err["type"] == "literal_error" and loc and loc[-1] == "engine":
        message = f"unknown engine {err['input']!r}; known: {', '.join(ENGINES)}"
    elif err["type"] == "extra_forbidden":
        message = "unknown field"
    return ModelsFileError(name, entry, field, message)


def _dotted(loc: list[Any]) -> str:
    """A pydantic location as the file reads: ``fal[0].endpoint``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def template_graph(base: Path, template: str) -> tuple[Mapping[str, Any], str]:
    """The API-format graph a ``template`` option names: a file (relative to ``base``) or
    a shipped kind (``t2v``, ``i2v``...)."""
    path = base / template
    if not path.is_file():
        shipped = resources.files("vidq.engines").joinpath("workflows", f"{template}.json")
        if not shipped.is_file():
            raise FileNotFoundError(template)
        return json.loads(shipped.read_text(encoding="utf-8")), f"{template}.json"
    return json.loads(path.read_text(encoding="utf-8")), str(path)


def _check_template(name: str, label: str, base: Path, entry: Entry, opts: ComfyUIOptions) -> None:
    if opts.template is None:
        if opts.inputs:
            raise ModelsFileError(name, label, "options.inputs", "inputs need a template")
        return
    try:
        graph, _ = template_graph(base, opts.template)
    except (OSError, ValueError) as exc:
        raise ModelsFileError(
            name, label, "options.template", f"cannot read {opts.template!r}: {exc}"
        ) from None
    taken = {"prompt", "negative_prompt", "seed", "width", "height", "duration", "priority"}
    for k, item in enumerate(opts.inputs):
        where = f"options.inputs[{k}]"
        node = graph.get(item.node) if isinstance(graph, dict) else None
        if not isinstance(node, dict):
            raise ModelsFileError(
                name, label, f"{where}.node", f"the template has no node {item.node!r}"
            )
        if item.name in taken:
            raise ModelsFileError(name, label, f"{where}.name", f"{item.name!r} is taken")
        taken.add(item.name)
