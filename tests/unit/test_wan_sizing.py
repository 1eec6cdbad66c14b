"""Pure parts of the wan engine: output sizes of image-to-video, the weights layout."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from vidq.engines.wan_layout import wan_weights


@pytest.mark.parametrize(
    ("inputs", "image", "expected"),
    [
        ({"width": 640, "height": 384}, (100, 100), (640, 384)),  # both given: used
        ({}, (1280, 720), (1280, 720)),  # none: the image's size
        ({}, (1010, 563), (1008, 560)),  # rounded to multiples of 16
        ({"height": 480}, (1920, 1080), (848, 480)),  # one given: the image's aspect ratio
        ({"width": 480}, (1080, 1920), (480, 848)),
        ({}, (4000, 3000), (1920, 1440)),  # over the limit: scaled down, aspect kept
        ({}, (64, 48), (176, 128)),  # under the minimum: scaled up
    ],
)
def test_i2v_size(
    inputs: dict[str, int], image: tuple[int, int], expected: tuple[int, int]
) -> None:
    from vidq.engines.wan import i2v_size

    assert i2v_size(inputs, Image.new("RGB", image)) == expected


def test_layout_names_every_file_of_a14b(tmp_path: Path) -> None:
    w = wan_weights(tmp_path, "i2v")
    names = {str(p.relative_to(tmp_path)) for p in w.required()}
    assert "Wan2.2-I2V-A14B-Diffusers/transformer_2" in names
    assert any(n.endswith("Seko-V1/low_noise_model.safetensors") for n in names)
    assert set(w.missing()) == set(w.required())
    five_b = wan_weights(tmp_path, "t2v", "ti2v-5b")
    assert five_b.lora_high is None and "transformer_2" not in five_b.experts
