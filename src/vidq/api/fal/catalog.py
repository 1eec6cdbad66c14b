"""fal's endpoint ids as aliases of the catalog's models: the one table of them, fal's
input schemas, and the explicit mapping of fal's inputs onto vidq's.

Code written for fal.ai calls ``fal-ai/wan/v2.2-a14b/text-to-video`` with ``image_url``,
``num_frames``, ``resolution`` and ``aspect_ratio``; on the fal-compatible dialect those
ids are served by the catalog's models (``ENDPOINTS``), their inputs validated with fal's
schema (the fields, ranges and enums of fal's public model pages) and then translated by
``to_native`` into the native inputs the engines take:

- ``resolution`` + ``aspect_ratio`` -> the output size (``SIZES``: ``720p`` + ``9:16`` is
  720x1280; ``580p`` is 576, Wan's sides being multiples of 16). Image families with
  ``aspect_ratio: auto`` keep the image's aspect, its short side at the resolution.
- ``num_frames`` (17-161) -> ``duration``: vidq makes whole seconds at 16 fps (16*d+1
  frames), so the count is rounded to the nearest such one (81 -> 5 s, 161 -> 10 s).
- ``image_url``, ``end_image_url``, ``audio_url``, ``video_url`` -> the media fields.
- fal options vidq cannot honour (``frames_per_second``: vidq writes 16 fps;
  ``num_inference_steps``, ``guidance_scale``, ``shift``: the model's own schedule;
  interpolation, safety checkers, prompt expansion, ``acceleration``, ``video_quality``,
  ``video_write_mode``) are optional at fal, so they are accepted, type-checked and
  *ignored* (``IGNORED``; documented in docs/inputs.md), never read as something else.
- a field of vidq's native vocabulary that the mapping itself sets (``width``,
  ``duration``, ``data_uri``, ...) is refused by name on an alias rather than silently
  overridden.
- ``loras`` (``path``, ``scale``, ``transformer``) passes as it is, on the ``/lora``
  endpoints only, as at fal; the other aliases refuse it by name, pointing at ``/lora``.
- ``seed`` passes as it is; without one, the submit draws it (``catalog.new_seed``, as
  for every request), so fal's result can answer with the seed used.

The native models accept fal's URL names too (``FAL_NAMES``), on the fal dialect.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vidq.catalog import (
    DURATION_MAX,
    DURATION_MIN,
    FPS,
    MODELS,
    PROMPT_MAX_CHARS,
    SEED_MAX,
    Family,
    LoraWeight,
    Model,
)

Resolution = Literal["480p", "580p", "720p"]
Aspect = Literal["16:9", "9:16", "1:1"]
AspectOrAuto = Literal["auto", "16:9", "9:16", "1:1"]

# (resolution, aspect ratio) -> (width, height); the short side is the resolution's.
ANCHORS: dict[str, int] = {"480p": 480, "580p": 576, "720p": 720}
SIZES: dict[tuple[str, str], tuple[int, int]] = {
    (res, aspect): size
    for res, short in ANCHORS.items()
    for aspect, size in {
        "16:9": ({"480p": 832, "580p": 1024, "720p": 1280}[res], short),
        "9:16": (short, {"480p": 832, "580p": 1024, "720p": 1280}[res]),
        "1:1": (short, short),
    }.items()
}

NUM_FRAMES_MIN, NUM_FRAMES_MAX = 17, 161

# fal's URL fields -> the native media fields, per family (the native models take them
# on the fal dialect too).
FAL_NAMES: dict[Family, dict[str, str]] = {
    Family.T2V: {},
    Family.I2V: {"image_url": "data_uri", "end_image_url": "second_image_uri"},
    Family.S2V: {"image_url": "data_uri", "audio_url": "audio_uri"},
    Family.FOLEY: {"video_url": "data_uri"},
}

# Fields of fal's schemas that vidq accepts and does not use (docs/inputs.md).
IGNORED = (
    "frames_per_second", "num_inference_steps", "guidance_scale", "guidance_scale_2",
    "shift", "interpolator_model", "num_interpolated_frames", "adjust_fps_for_interpolation",
    "enable_safety_checker", "enable_output_safety_checker", "enable_prompt_expansion",
    "acceleration", "video_quality", "video_write_mode", "return_frames_zip",
)  # fmt: skip

# Native fields the mapping sets: refused by name on an alias.
_DERIVED = (
    "width", "height", "duration", "data_uri", "second_image_uri", "audio_uri",
    "min_height", "use_best_resolution", "new_resolution",
)  # fmt: skip

_IGNORED_DOC = "Accepted for compatibility with fal; vidq does not use it."


def _ignored() -> Any:
    return Field(None, description=_IGNORED_DOC)


class _FalInputs(BaseModel):
    """Fields every fal Wan schema has. Unknown fields are forwarded, as on the native
    dialect."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, str_max_length=50_000_000)

    prompt: str = Field(..., min_length=1, max_length=PROMPT_MAX_CHARS)
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="Random if not given.")
    resolution: Resolution = Field("720p", description="480p, 580p (576) or 720p.")
    enable_safety_checker: bool | None = _ignored()
    enable_prompt_expansion: bool | None = _ignored()
    acceleration: Literal["none", "regular"] | None = _ignored()
    video_quality: Literal["low", "medium", "high", "maximum"] | None = _ignored()
    video_write_mode: Literal["fast", "balanced", "small"] | None = _ignored()


class _FalFull(_FalInputs):
    """The options of fal's non-turbo Wan 2.2 A14B endpoints."""

    negative_prompt: str = Field("", max_length=PROMPT_MAX_CHARS)
    num_frames: int = Field(
        81,
        ge=NUM_FRAMES_MIN,
        le=NUM_FRAMES_MAX,
        description="17-161; rounded to the nearest 16*s+1 (whole seconds at 16 fps).",
    )
    frames_per_second: int | None = Field(None, ge=4, le=60, description=_IGNORED_DOC)
    num_inference_steps: int | None = Field(None, ge=1, le=100, description=_IGNORED_DOC)
    guidance_scale: float | None = _ignored()
    guidance_scale_2: float | None = _ignored()
    shift: float | None = _ignored()
    interpolator_model: Literal["none", "film", "rife"] | None = _ignored()
    num_interpolated_frames: int | None = Field(None, ge=0, le=4, description=_IGNORED_DOC)
    adjust_fps_for_interpolation: bool | None = _ignored()
    return_frames_zip: bool | None = _ignored()


class FalWanT2V(_FalFull):
    """fal-ai/wan/v2.2-a14b/text-to-video."""

    aspect_ratio: Aspect = "16:9"


class FalWanT2VLora(FalWanT2V):
    """fal-ai/wan/v2.2-a14b/text-to-video/lora."""

    loras: list[LoraWeight] = Field(
        default_factory=list, description="LoRAs for this request (at most VIDQ_MAX_LORAS)."
    )


class FalWanT2VTurbo(_FalInputs):
    """fal-ai/wan/v2.2-a14b/text-to-video/turbo (81 frames: 5 s)."""

    aspect_ratio: Aspect = "16:9"


class FalWanI2V(_FalFull):
    """fal-ai/wan/v2.2-a14b/image-to-video (optional last frame)."""

    image_url: str = Field(..., min_length=1, description="The first frame (URL or data URI).")
    end_image_url: str | None = Field(None, min_length=1, description="Optional last frame.")
    aspect_ratio: AspectOrAuto = Field("auto", description="auto: the image's aspect.")


class FalWanI2VLora(FalWanI2V):
    """fal-ai/wan/v2.2-a14b/image-to-video/lora."""

    loras: list[LoraWeight] = Field(
        default_factory=list, description="LoRAs for this request (at most VIDQ_MAX_LORAS)."
    )


class FalWanI2VTurbo(_FalInputs):
    """fal-ai/wan/v2.2-a14b/image-to-video/turbo (81 frames: 5 s)."""

    image_url: str = Field(..., min_length=1)
    end_image_url: str | None = Field(None, min_length=1)
    aspect_ratio: AspectOrAuto = "auto"


class FalWanS2V(_FalInputs):
    """fal-ai/wan/v2.2-a14b/speech-to-video."""

    image_url: str = Field(..., min_length=1)
    audio_url: str = Field(..., min_length=1)
    resolution: Resolution = "480p"
    negative_prompt: str = Field("", max_length=PROMPT_MAX_CHARS)
    num_frames: int | None = Field(
        None,
        ge=40,
        le=120,
        description="40-120, rounded to whole seconds at 16 fps; default: the audio's length.",
    )
    frames_per_second: int | None = Field(None, ge=4, le=60, description=_IGNORED_DOC)
    num_inference_steps: int | None = Field(None, ge=1, le=100, description=_IGNORED_DOC)
    guidance_scale: float | None = _ignored()
    shift: float | None = _ignored()
    enable_output_safety_checker: bool | None = _ignored()


class FalFoley(BaseModel):
    """fal-ai/hunyuan-video-foley: the video with a generated soundtrack."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, str_max_length=50_000_000)

    video_url: str = Field(..., min_length=1, description="The video (URL or data URI).")
    text_prompt: str = Field(..., min_length=1, max_length=PROMPT_MAX_CHARS)
    negative_prompt: str = Field("noisy, harsh", max_length=PROMPT_MAX_CHARS)
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    guidance_scale: float | None = _ignored()
    num_inference_steps: int | None = Field(None, ge=1, le=100, description=_IGNORED_DOC)


@dataclasses.dataclass(frozen=True, slots=True)
class FalEndpoint:
    """One fal endpoint id served by a catalog model."""

    id: str
    model: Model
    schema: type[BaseModel]
    # native field -> the fal field a client sent it as (to word errors in fal's names)
    fal_names: dict[str, str]

    @property
    def app(self) -> tuple[str, str]:
        """(owner, alias): what fal's clients put in the request URLs."""
        owner, alias = self.id.split("/")[:2]
        return owner, alias


_WAN_NAMES = {
    "data_uri": "image_url",
    "second_image_uri": "end_image_url",
    "audio_uri": "audio_url",
    "width": "resolution",
    "height": "resolution",
    "new_resolution": "aspect_ratio",
    "duration": "num_frames",
}
_FOLEY_NAMES = {"data_uri": "video_url", "prompt": "text_prompt"}


# The fal schema names of the models file (``models_file.FAL_SCHEMAS``) -> their classes.
SCHEMAS: dict[str, type[BaseModel]] = {
    "wan-t2v": FalWanT2V,
    "wan-t2v-turbo": FalWanT2VTurbo,
    "wan-t2v-lora": FalWanT2VLora,
    "wan-i2v": FalWanI2V,
    "wan-i2v-turbo": FalWanI2VTurbo,
    "wan-i2v-lora": FalWanI2VLora,
    "wan-s2v": FalWanS2V,
    "foley": FalFoley,
}


def _table() -> dict[str, FalEndpoint]:
    """Every fal alias of the catalog's models (the models file's ``fal`` lists)."""
    return {
        alias.endpoint: FalEndpoint(
            alias.endpoint,
            model,
            SCHEMAS[alias.schema],
            _FOLEY_NAMES if SCHEMAS[alias.schema] is FalFoley else _WAN_NAMES,
        )
        for model in MODELS.values()
        for alias in model.fal
    }


# Built from the catalog; ``refresh`` rebuilds them in place after ``catalog.install``.
ENDPOINTS: dict[str, FalEndpoint] = _table()
APPS: set[tuple[str, str]] = {e.app for e in ENDPOINTS.values()}


def refresh() -> None:
    """Follow the catalog (called when an app is built, after the models file is read)."""
    table = _table()
    ENDPOINTS.clear()
    ENDPOINTS.update(table)
    APPS.clear()
    APPS.update(e.app for e in table.values())


def get_endpoint(endpoint_id: str) -> FalEndpoint | None:
    """The alias for a fal endpoint id (fal's ids are case-insensitive), or None."""
    return ENDPOINTS.get(endpoint_id.lower())


def duration_of(num_frames: int) -> int:
    """Whole seconds at 16 fps nearest to ``num_frames`` (16*s+1 frames), 1..10."""
    return min(DURATION_MAX, max(DURATION_MIN, round((num_frames - 1) / FPS)))


class FieldClash(ValueError):
    """A field that cannot be read unambiguously; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def to_native(endpoint: FalEndpoint, inputs: BaseModel) -> dict[str, Any]:
    """The native inputs of a request validated with ``endpoint.schema`` (the mapping in
    the module docstring). FieldClash if it carries a field the mapping sets."""
    data = inputs.model_dump(exclude_none=True)
    _refuse_extras(endpoint, inputs.model_extra or {})
    if not data.get("loras"):
        data.pop("loras", None)
    for name in IGNORED:
        data.pop(name, None)
    family = endpoint.model.family
    if family is Family.FOLEY:
        data["data_uri"] = data.pop("video_url")
        data["prompt"] = data.pop("text_prompt")
        return data
    resolution = data.pop("resolution")
    aspect = data.pop("aspect_ratio", "16:9")
    frames = data.pop("num_frames", None)
    if frames is not None:
        data["duration"] = duration_of(frames)
    elif family is not Family.S2V:
        data["duration"] = duration_of(81)  # fal's turbo endpoints make 81 frames
    if family is Family.T2V:
        data["width"], data["height"] = SIZES[(resolution, aspect)]
        return data
    for fal, native in FAL_NAMES[family].items():
        if fal in data:
            data[native] = data.pop(fal)
    data["height"] = ANCHORS[resolution]
    data["use_best_resolution"] = True  # the short side is the resolution
    if aspect != "auto":
        width, height = SIZES[(resolution, aspect)]
        data["new_resolution"] = f"{width}x{height}"
    return data


def _refuse_extras(endpoint: FalEndpoint, extra: dict[str, Any]) -> None:
    """FieldClash for a native field the mapping sets, or ``loras`` off a /lora endpoint."""
    for name in _DERIVED:
        if name in extra:
            raise FieldClash(
                name,
                f"'{name}' is not a field of {endpoint.id}; use its own fields "
                "(resolution, aspect_ratio, num_frames, image_url, ...)",
            )
    if "loras" in extra:
        raise FieldClash(
            "loras", f"{endpoint.id} takes no LoRAs; send them to {_lora_endpoint(endpoint)}"
        )


def _lora_endpoint(endpoint: FalEndpoint) -> str:
    """The ``/lora`` endpoint of ``endpoint``'s family (where fal takes ``loras``)."""
    for other in ENDPOINTS.values():
        if other.model.family is endpoint.model.family and "loras" in other.schema.model_fields:
            return other.id
    return "an endpoint that takes LoRAs"


def native_names(family: Family, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A native model's body with fal's URL names (``image_url``...) renamed to the native
    ones, and {native: fal} for the names renamed. FieldClash if both names are given."""
    renamed: dict[str, str] = {}
    out = dict(data)
    for fal, native in FAL_NAMES[family].items():
        if fal in out:
            if native in out:
                raise FieldClash(fal, f"give either '{fal}' or '{native}', not both")
            out[native] = out.pop(fal)
            renamed[native] = fal
    return out, renamed
