"""Model ids -> Model (family, tier, pool, engine and its options, defaults), built from
the models file (``models_file.py``, docs/models.md), and the input schema of each family.

Models that differ only by tier share one pool; the tier orders jobs within it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
)

from vidq import models_file

# Wan's VAE downsamples by 8 and its transformer patches by 2: sides must be multiples of 16.
SIDE_MULTIPLE = 16
SIDE_MIN = 128
SIDE_MAX = 1920
DURATION_MIN = 1
DURATION_MAX = 10
FPS = 16
PROMPT_MAX_CHARS = 4000
SEED_MAX = 2**32 - 1  # seeds are unsigned 32-bit, as Wan's and ComfyUI's samplers take them


def new_seed() -> int:
    """A random seed, for a request that gives none: drawn once, at submit, and stored with
    the request's inputs, so that every attempt runs with it and the answers report it."""
    return secrets.randbelow(SEED_MAX + 1)


def frame_count(duration_s: int) -> int:
    """Wan generates 4k+1 frames; at 16 fps a clip of d seconds has 16*d+1."""
    return FPS * duration_s + 1


class Family(enum.StrEnum):
    """What a model takes and makes."""

    T2V = "t2v"  # prompt -> video
    I2V = "i2v"  # image (+ optional last frame) + prompt -> video
    S2V = "s2v"  # image + audio + prompt -> video with that audio
    FOLEY = "foley"  # video + prompt -> the video with generated sound


class Tier(enum.IntEnum):
    """Queue tier: higher tiers are served first within a pool."""

    BASE = 0  # the plain model id
    PRO = 1  # "-pro"
    PREMIUM = 2  # "-premium"


# ---------------------------------------------------------------------------------------
# Input schemas. Unknown fields are accepted and forwarded (the spec: "Arbitrary JSON
# accepted and forwarded to the model"; fal-style clients send options a deployment may not
# know), within the size limit of everything that is not media (VIDQ_MAX_FIELDS_BYTES,
# api/parsing/body.py); known fields are validated strictly.


class _Inputs(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False, str_max_length=50_000_000)

    prompt: str = Field("", max_length=PROMPT_MAX_CHARS, description="What to generate.")
    negative_prompt: str | None = Field(None, max_length=PROMPT_MAX_CHARS)
    priority: int = Field(
        0,
        ge=-1000,
        le=1000,
        description="Queue priority within the pool; bigger first. Capped per token.",
    )
    higher_quality_with_more_steps: bool = Field(
        False, description="More denoising steps: slower, higher quality."
    )
    seed: int | None = Field(
        None, ge=0, le=SEED_MAX, description="Random seed; drawn at submit when not given."
    )


LORAS_MAX = 16  # the schema's own cap; VIDQ_MAX_LORAS (default 3) is checked at submit
LORA_SCALE_MAX = 4.0
LORA_URL_MAX_CHARS = 4096


class LoraWeight(BaseModel):
    """One LoRA to apply for this request only, as fal's ``loras`` items: fetched by the
    worker from ``path`` (an https URL), at ``scale``, into the expert ``transformer``
    names (``high``: the high-noise expert, ``low``: the low-noise one, ``both``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    path: str = Field(
        ...,
        min_length=1,
        max_length=LORA_URL_MAX_CHARS,
        description="Where the LoRA file (.safetensors, made for this model) can be downloaded: "
        "an https link the server can reach.",
    )
    scale: float = Field(
        1.0,
        ge=-LORA_SCALE_MAX,
        le=LORA_SCALE_MAX,
        description="How strongly the LoRA applies; 0 leaves the model as it is.",
    )
    transformer: Literal["high", "low", "both"] = Field(
        "high",
        description="Which half of the model takes it: high (the early, high-noise steps), "
        "low (the later, low-noise steps) or both.",
    )


def _loras() -> Any:
    return Field(
        None,
        max_length=LORAS_MAX,
        description="Style or character weights applied to this request only (at most 3 "
        "unless the server says otherwise).",
        examples=[[{"path": "https://example.com/style.safetensors", "scale": 1.0}]],
    )


def _check_side(name: str, value: int | None) -> None:
    if value is not None and value % SIDE_MULTIPLE:
        raise ValueError(f"{name} must be a multiple of {SIDE_MULTIPLE} (got {value})")


class T2VInputs(_Inputs):
    """Text-to-video inputs."""

    prompt: str = Field(..., min_length=1, max_length=PROMPT_MAX_CHARS)
    width: int = Field(1280, ge=SIDE_MIN, le=SIDE_MAX, description="In pixels, a multiple of 16.")
    height: int = Field(720, ge=SIDE_MIN, le=SIDE_MAX, description="In pixels, a multiple of 16.")
    duration: int = Field(
        5,
        ge=DURATION_MIN,
        le=DURATION_MAX,
        description="Seconds of video, at 16 frames per second.",
    )
    loras: list[LoraWeight] | None = _loras()

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_16(cls, value: int, info: ValidationInfo) -> int:
        # A field validator, so that a 422's loc names the side (["body", "width"]).
        _check_side(str(info.field_name), value)
        return value


_MEDIA_FORMS = (
    "Send a file, an https link (downloaded once when you submit; private and local "
    "addresses are refused) or base64 data. The format is read from the file itself."
)
_IMAGE_DOC = f"The first frame: a PNG, JPEG or WEBP image. {_MEDIA_FORMS}"


def _media(kind: str) -> dict[str, Any]:
    """The kind of file a media field takes (JSON Schema's ``contentMediaType``), so that
    a form made from the schema can offer a file picker for it."""
    return {"contentMediaType": f"{kind}/*"}


NEW_RESOLUTION_MAX = 3840


class _ImageInputs(_Inputs):
    data_uri: str = Field(
        ..., min_length=1, description=_IMAGE_DOC, title="Image", json_schema_extra=_media("image")
    )
    duration: int = Field(
        5,
        ge=DURATION_MIN,
        le=DURATION_MAX,
        description="Seconds of video, at 16 frames per second.",
    )
    height: int | None = Field(
        None,
        ge=SIDE_MIN,
        le=SIDE_MAX,
        description="The video's height in pixels, a multiple of 16; 480 when neither this nor "
        "the minimum height is set. With best resolution on, the image's short side.",
    )
    min_height: int | None = Field(
        None,
        ge=SIDE_MIN,
        le=SIDE_MAX,
        description="A multiple of 16, used as the height when no height is set.",
    )
    use_best_resolution: bool = Field(
        False,
        description="Make the image's short side the height (a portrait 9:16 image at 480 "
        "gives 480x832 instead of 256x480). The video keeps the image's shape; the other "
        "side is rounded down to a multiple of 32.",
    )
    new_resolution: int | str | None = Field(
        None,
        description="Resize the image before generating: 1280x720 gives exactly that size "
        "(cropped at the centre), 720p makes the short side 720 and 720 makes the height 720 "
        f"(these two only enlarge). Sides from {SIDE_MIN} to {NEW_RESOLUTION_MAX} pixels.",
        examples=["1280x720", "720p", 720],
    )

    @field_validator("height", "min_height")
    @classmethod
    def _multiple_of_16(cls, value: int | None, info: ValidationInfo) -> int | None:
        _check_side(str(info.field_name), value)
        return value

    @field_validator("new_resolution")
    @classmethod
    def _new_resolution(cls, value: int | str | None) -> int | str | None:
        if value is not None:
            parse_new_resolution(value)
        return value


_WXH = re.compile(r"\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*")
_NP = re.compile(r"\s*(\d{1,5})\s*[pP]\s*")
_N = re.compile(r"\s*(\d{1,5})\s*")


def parse_new_resolution(value: str | int) -> tuple[str, int, int]:
    """``new_resolution`` -> ``("exact", w, h)`` for '1280x720', ``("short", n, n)`` for
    '720p', ``("height", n, n)`` for 720 or '720'. ValueError otherwise (sides 128..3840)."""
    form_error = "new_resolution must be 'WIDTHxHEIGHT', 'Np' or an integer height"
    if isinstance(value, bool):
        raise ValueError(form_error)
    if isinstance(value, int):
        form, w, h = "height", value, value
    elif m := _WXH.fullmatch(value):
        form, w, h = "exact", int(m.group(1)), int(m.group(2))
    elif m := _NP.fullmatch(value):
        form, w, h = "short", int(m.group(1)), int(m.group(1))
    elif m := _N.fullmatch(value):
        form, w, h = "height", int(m.group(1)), int(m.group(1))
    else:
        raise ValueError(form_error)
    if not (SIDE_MIN <= w <= NEW_RESOLUTION_MAX and SIDE_MIN <= h <= NEW_RESOLUTION_MAX):
        raise ValueError(f"new_resolution sides must be {SIDE_MIN}..{NEW_RESOLUTION_MAX}")
    return form, w, h


class I2VInputs(_ImageInputs):
    """Image-to-video inputs (first frame, optional last frame). The aspect comes from the
    image; there is no width field."""

    second_image_uri: str | None = Field(
        None,
        min_length=1,
        description=f"Optional: the image the video ends on. {_MEDIA_FORMS}",
        title="Last frame",
        json_schema_extra=_media("image"),
    )
    loras: list[LoraWeight] | None = _loras()


class S2VInputs(_ImageInputs):
    """Sound+image-to-video inputs. The aspect comes from the image; there is no width field."""

    audio_uri: str = Field(
        ...,
        min_length=1,
        description=f"The sound: WAV, MP3, FLAC, OGG, AAC or M4A, up to 60 s by default. "
        f"{_MEDIA_FORMS}",
        title="Audio",
        json_schema_extra=_media("audio"),
    )
    duration: int | None = Field(  # type: ignore[assignment]
        None,
        ge=DURATION_MIN,
        le=DURATION_MAX,
        description="Seconds of video, at 16 frames per second. Empty: the sound's length "
        "rounded up (1 to 10 s); the sound is cut or padded with silence to fit.",
    )


class FoleyInputs(_Inputs):
    """Add-sound-to-video inputs: the output is the input video with a generated track."""

    data_uri: str = Field(
        ...,
        min_length=1,
        description=f"The video: MP4/MOV or WebM/MKV, up to 30 s by default. {_MEDIA_FORMS}",
        title="Video",
        json_schema_extra=_media("video"),
    )
    background_music: bool = Field(False, description="Add a music bed under the effects.")
    use_best_resolution: bool = Field(
        False, description="Accepted for compatibility; the output keeps the video's size."
    )


INPUT_SCHEMAS: dict[Family, type[_Inputs]] = {
    Family.T2V: T2VInputs,
    Family.I2V: I2VInputs,
    Family.S2V: S2VInputs,
    Family.FOLEY: FoleyInputs,
}


# ---------------------------------------------------------------------------------------
# The catalog: built from the models file (``models_file.py``; the shipped one by default).


@dataclasses.dataclass(frozen=True, slots=True)
class FalAlias:
    """A fal endpoint id that serves a model, with the fal input schema it takes (a name
    that ``api/fal/catalog.py`` maps to its class)."""

    endpoint: str
    schema: str


@dataclasses.dataclass(frozen=True, slots=True)
class Model:
    """One public model id."""

    id: str
    family: Family
    tier: Tier
    pool: str
    variant: str  # engine variant: "fast" (4-step Lightning), "fp8", "s2v", "foley", "ltx2"
    steps: int  # denoising steps by default
    steps_hq: int  # with higher_quality_with_more_steps
    eta_seconds: float  # GPU engines: run time of a 1280x720 5 s clip, until the pool has history
    output_name: str  # the middle of the output file name, as the spec's examples
    engine: str = "preview"  # whose options ``options`` are (models_file.ENGINES)
    options: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)
    fal: tuple[FalAlias, ...] = ()
    fps: int = FPS
    frame_rule: str = "4k+1"
    opt_in: bool = False  # served only by workers whose pools name its pool
    schema: type[_Inputs] | None = dataclasses.field(default=None, compare=False)

    def steps_for(self, higher_quality: bool) -> int:
        return self.steps_hq if higher_quality else self.steps


_TIERS = {"base": Tier.BASE, "pro": Tier.PRO, "premium": Tier.PREMIUM}
_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def _schema_of(entry: models_file.Entry, opts: BaseModel) -> type[_Inputs]:
    """The input schema of an entry: its family's, with the entry's defaults and bounds
    and its template's own inputs; the family's class itself when the entry changes none."""
    base = INPUT_SCHEMAS[Family(entry.family)]
    fields: dict[str, Any] = {}
    validators: dict[str, Any] = {}
    bounds, defaults = entry.bounds, entry.defaults
    if bounds is not None or defaults.model_dump(exclude_none=True):
        b = bounds or models_file.Bounds.model_validate({})
        sides = [n for n in ("width", "height", "min_height") if n in base.model_fields]
        for name in [*sides, "duration"]:
            info = base.model_fields.get(name)
            if info is None:
                continue
            lo, hi = (
                (b.side_min, b.side_max) if name != "duration" else (b.duration_min, b.duration_max)
            )
            default = getattr(defaults, name, None) if name != "min_height" else None
            unit = f"a multiple of {b.side_multiple}" if name != "duration" else "seconds"
            doc = (info.description or "").replace("a multiple of 16", unit)
            doc = doc.replace("16 frames per second", f"{entry.fps} frames per second")
            fields[name] = (
                info.annotation,
                Field(
                    default if default is not None else info.default,
                    ge=lo,
                    le=hi,
                    description=doc or None,
                ),
            )
        multiple = b.side_multiple

        def _sides(cls: type, value: int | None, info: ValidationInfo) -> int | None:
            if value is not None and value % multiple:
                raise ValueError(
                    f"{info.field_name} must be a multiple of {multiple} (got {value})"
                )
            return value

        if sides:  # foley has none
            validators["_multiple_of_16"] = field_validator(*sides)(_sides)
    extra = getattr(opts, "inputs", [])
    for item in extra:
        kind = _TYPES[item.type]
        fields[item.name] = (
            kind,
            Field(item.default, ge=item.ge, le=item.le, description=item.description or None),
        )
    if not fields:
        return base
    name = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]", entry.id)) + "Inputs"
    made: type[_Inputs] = create_model(
        name, __base__=base, __doc__=base.__doc__, __validators__=validators, **fields
    )
    return made


def load(path: Path | None = None) -> dict[str, Model]:
    """The models of the file at ``path`` (the shipped one when None), in file order.
    ``models_file.ModelsFileError`` names the file, entry and field of what is wrong."""
    parsed, options = models_file.read(path)
    models: dict[str, Model] = {}
    for entry in parsed.model:
        opts = options[entry.id]
        values = opts.model_dump(exclude_none=True)
        values.pop("inputs", None)
        if "fps" in type(opts).model_fields:  # an engine with an fps option gets the entry's
            values.setdefault("fps", entry.fps)
        if getattr(opts, "inputs", None):
            values["inputs"] = [i.model_dump() for i in opts.inputs]  # type: ignore[attr-defined]
        if entry.engine == "comfyui" and "template" in values and path is not None:
            values["template_dir"] = str(Path(path).resolve().parent)
        models[entry.id] = Model(
            id=entry.id,
            family=Family(entry.family),
            tier=_TIERS[entry.tier],
            pool=entry.pool,
            variant=entry.variant,
            steps=entry.steps,
            steps_hq=entry.steps_hq,
            eta_seconds=float(entry.eta_seconds),
            output_name=entry.output_name,
            engine=entry.engine,
            options=values,
            fal=tuple(FalAlias(a.endpoint.lower(), a.schema_) for a in entry.fal),
            fps=entry.fps,
            frame_rule=entry.frame_rule,
            opt_in=entry.opt_in,
            schema=_schema_of(entry, opts),
        )
    return models


# One catalog per process: the shipped file at import, replaced in place by ``install``
# (the composition root calls it with VIDQ_MODELS_FILE before it builds an app or worker),
# so that every module holding these names sees the same models.
MODELS: dict[str, Model] = load()
POOLS: list[str] = sorted({m.pool for m in MODELS.values()})
# The pools a worker serves when neither VIDQ_POOLS nor --pools names any: not opt-in ones.
DEFAULT_POOLS: list[str] = sorted({m.pool for m in MODELS.values() if not m.opt_in})


def install(path: Path | None) -> None:
    """Make the models of ``path`` (the shipped file when None) this process's catalog.
    ``models_file.ModelsFileError`` leaves the catalog as it was."""
    models = load(path)
    MODELS.clear()
    MODELS.update(models)
    POOLS[:] = sorted({m.pool for m in models.values()})
    DEFAULT_POOLS[:] = sorted({m.pool for m in models.values() if not m.opt_in})


def get_model(model_id: str) -> Model | None:
    """The model for a public id, or None."""
    return MODELS.get(model_id)


def closest_model(model_id: str) -> str | None:
    """The model id nearest to an unknown one (a typo, another case), if one is close."""
    near = difflib.get_close_matches(model_id[:100].lower(), MODELS, n=1, cutoff=0.6)
    return near[0] if near else None


def input_schema(model: Model) -> type[_Inputs]:
    return model.schema or INPUT_SCHEMAS[model.family]


def schema_json(model: Model) -> dict[str, Any]:
    """The JSON schema of a model's inputs (for ``GET /models``)."""
    return input_schema(model).model_json_schema()
