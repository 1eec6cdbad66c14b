"""The preview engine's scene (``engines/preview.py``, ``_Scene``) makes the pixels of the
plain formula over the whole frame, which it computes in parts."""

from __future__ import annotations

import numpy as np
import pytest

from vidq.engines.preview import _Scene

pytestmark = pytest.mark.unit


def _plain(scene: _Scene, index: int, count: int) -> np.ndarray:
    """The formula over the whole frame, in float32, truncated to bytes at the end."""
    shift, cx, cy, radius = scene.motion(index, count)
    img = scene.gradient[:, shift : shift + scene.width].copy()
    inside = (scene.xx - cx) ** 2 + (scene.yy - cy) ** 2 < radius**2
    img[inside] = scene.disc_color
    img[scene.text] = 255.0
    return img.astype(np.uint8)


@pytest.mark.parametrize(
    ("prompt", "width", "height", "seed"),
    [
        ("a fox in the snow", 1280, 720, 1),
        ("a lighthouse at dusk", 128, 128, None),
        ("tall", 144, 512, 7),
        ("", 160, 128, 42),
    ],
)
def test_every_frame_is_the_plain_formulas(
    prompt: str, width: int, height: int, seed: int | None
) -> None:
    scene = _Scene(prompt, width, height, seed)
    count = 33
    for index in range(count):
        frame = scene.frame(index, count)
        assert frame.dtype == np.uint8 and frame.shape == (height, width, 3)
        assert np.array_equal(frame, _plain(scene, index, count)), (prompt, index)
    assert scene.text.any() == bool(prompt)  # the text is drawn where there is one
