"""The mapping of fal's endpoint ids and fields onto vidq's models and inputs."""

from __future__ import annotations

import pydantic
import pytest

from vidq.api.fal.catalog import ENDPOINTS, FieldClash, duration_of, get_endpoint, to_native
from vidq.catalog import input_schema
from vidq.media.sizing import image_plan, text_plan

WAN = "fal-ai/wan/v2.2-a14b"


@pytest.mark.parametrize(
    ("resolution", "aspect", "size"),
    [
        ("720p", "9:16", (720, 1280)),
        ("720p", "16:9", (1280, 720)),
        ("720p", "1:1", (720, 720)),
        ("580p", "16:9", (1024, 576)),
        ("480p", "9:16", (480, 832)),
        ("480p", "1:1", (480, 480)),
    ],
)
def test_text_to_video_size(resolution: str, aspect: str, size: tuple[int, int]) -> None:
    endpoint = ENDPOINTS[f"{WAN}/text-to-video"]
    body = endpoint.schema.model_validate(
        {"prompt": "p", "resolution": resolution, "aspect_ratio": aspect, "num_frames": 81}
    )
    native = input_schema(endpoint.model).model_validate(to_native(endpoint, body))
    plan = text_plan(native.model_dump())
    assert (plan.width, plan.height, plan.frames) == (*size, 81)


@pytest.mark.parametrize(
    ("aspect", "image", "size"),
    [
        ("9:16", (1000, 1000), (720, 1280)),  # cropped to the aspect asked for
        ("16:9", (300, 900), (1280, 720)),
        ("auto", (1920, 1080), (1280, 720)),  # the image's aspect, short side 720
        ("auto", (1080, 1920), (720, 1280)),
    ],
)
def test_image_to_video_size(aspect: str, image: tuple[int, int], size: tuple[int, int]) -> None:
    endpoint = ENDPOINTS[f"{WAN}/image-to-video/turbo"]
    body = endpoint.schema.model_validate(
        {"prompt": "p", "image_url": "https://x/y.png", "aspect_ratio": aspect}
    )
    native = to_native(endpoint, body)
    assert native["data_uri"] == "https://x/y.png" and "image_url" not in native
    input_schema(endpoint.model).model_validate(native)
    plan = image_plan(native, *image)
    assert (plan.width, plan.height, plan.frames) == (*size, 81)


def test_num_frames_rounding_and_bounds() -> None:
    assert [duration_of(n) for n in (17, 40, 81, 100, 161)] == [1, 2, 5, 6, 10]
    schema = ENDPOINTS[f"{WAN}/text-to-video"].schema
    for bad in (16, 162):
        with pytest.raises(pydantic.ValidationError) as err:
            schema.model_validate({"prompt": "p", "num_frames": bad})
        assert err.value.errors()[0]["loc"] == ("num_frames",)


def test_ignored_fields_are_checked_then_dropped_and_native_ones_refused() -> None:
    endpoint = ENDPOINTS[f"{WAN}/text-to-video"]
    body = endpoint.schema.model_validate(
        {"prompt": "p", "frames_per_second": 24, "num_inference_steps": 30, "seed": 3}
    )
    native = to_native(endpoint, body)
    assert "frames_per_second" not in native and native["seed"] == 3
    with pytest.raises(pydantic.ValidationError):
        endpoint.schema.model_validate({"prompt": "p", "video_write_mode": "huge"})
    with pytest.raises(FieldClash) as clash:
        to_native(endpoint, endpoint.schema.model_validate({"prompt": "p", "width": 128}))
    assert clash.value.field == "width"


def test_foley_and_ids() -> None:
    endpoint = get_endpoint("FAL-AI/hunyuan-video-foley")
    assert endpoint is not None and endpoint.app == ("fal-ai", "hunyuan-video-foley")
    body = endpoint.schema.model_validate({"video_url": "https://x/v.mp4", "text_prompt": "rain"})
    native = to_native(endpoint, body)
    assert native["data_uri"] == "https://x/v.mp4" and native["prompt"] == "rain"
    assert ENDPOINTS[f"{WAN}/speech-to-video"].app == ("fal-ai", "wan")


@pytest.mark.parametrize(
    ("endpoint_id", "model_id", "extra"),
    [
        (f"{WAN}/text-to-video/lora", "wan22-t2v-fp8", {}),
        (f"{WAN}/image-to-video/lora", "wan22-i2v-fp8", {"image_url": "https://x/y.png"}),
    ],
)
def test_the_lora_endpoints_pass_loras_as_fal_words_them(
    endpoint_id: str, model_id: str, extra: dict[str, str]
) -> None:
    endpoint = ENDPOINTS[endpoint_id]
    assert endpoint.model.id == model_id and endpoint.app == ("fal-ai", "wan")
    loras = [{"path": "https://h/a.safetensors"}, {"path": "https://h/b", "scale": 0.5,
                                                   "transformer": "both"}]  # fmt: skip
    body = endpoint.schema.model_validate({"prompt": "p", "loras": loras, **extra})
    native = input_schema(endpoint.model).model_validate(to_native(endpoint, body))
    assert native.model_dump(mode="json")["loras"] == [
        {"path": "https://h/a.safetensors", "scale": 1.0, "transformer": "high"},  # fal's defaults
        {"path": "https://h/b", "scale": 0.5, "transformer": "both"},
    ]
    without = to_native(endpoint, endpoint.schema.model_validate({"prompt": "p", **extra}))
    assert "loras" not in without  # an empty list is not stored with the job
    with pytest.raises(pydantic.ValidationError) as err:
        endpoint.schema.model_validate(
            {"prompt": "p", **extra, "loras": [loras[0], {"path": "https://h", "scale": "inf"}]}
        )
    assert [e["loc"] for e in err.value.errors()] == [("loras", 1, "scale")]


def test_the_other_wan_endpoints_refuse_loras_naming_the_lora_endpoint() -> None:
    endpoint = ENDPOINTS[f"{WAN}/image-to-video/turbo"]
    body = endpoint.schema.model_validate(
        {"prompt": "p", "image_url": "https://x/y.png", "loras": [{"path": "https://h/a"}]}
    )
    with pytest.raises(FieldClash) as err:
        to_native(endpoint, body)
    assert err.value.field == "loras"
    assert f"send them to {WAN}/image-to-video/lora" in str(err.value)


def test_native_lora_items_are_checked_strictly() -> None:
    from vidq.catalog import MODELS

    schema = input_schema(MODELS["wan22-fast-t2v"])
    ok = {"path": "https://h/a"}
    schema.model_validate({"prompt": "p", "loras": [ok] * 16})
    cases = [
        ([ok] * 17, ("loras",)),
        ([ok, {"scale": 1}], ("loras", 1, "path")),
        ([{**ok, "scale": 4.5}], ("loras", 0, "scale")),
        ([{**ok, "scale": float("nan")}], ("loras", 0, "scale")),
        ([{**ok, "transformer": "HIGH"}], ("loras", 0, "transformer")),
        ([{**ok, "weight_name": "x"}], ("loras", 0, "weight_name")),
        ([{"path": ""}], ("loras", 0, "path")),
    ]
    for loras, loc in cases:
        with pytest.raises(pydantic.ValidationError) as err:
            schema.model_validate({"prompt": "p", "loras": loras})
        assert [e["loc"] for e in err.value.errors()] == [loc], loras
