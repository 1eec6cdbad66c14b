"""Pure parts of the ComfyUI client: URLs in messages, failure classification, outputs."""

from __future__ import annotations

import pytest

from vidq.engines.comfyui_client import (
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    _files_of,
    _raise_from_messages,
    display_url,
)
from vidq.errors import EngineError


def test_display_url_drops_credentials_and_query() -> None:
    assert display_url("https://user:s3cret@gpu-01.lan:8443/comfy?token=abc") == (
        "https://gpu-01.lan:8443/comfy"
    )
    assert display_url("http://[::1]:8188") == "http://[::1]:8188"


def test_execution_error_is_final_and_carries_comfyuis_message() -> None:
    data = {
        "prompt_id": "p",
        "node_id": "13",
        "node_type": "KSampler",
        "exception_type": "ValueError",
        "exception_message": "bad latent\n",
    }
    with pytest.raises(ComfyUIExecutionError) as err:
        _raise_from_messages([["execution_start", {"prompt_id": "p"}], ["execution_error", data]])
    assert str(err.value) == "ComfyUI node 13 (KSampler) failed: ValueError: bad latent"
    assert isinstance(err.value, EngineError)  # the worker does not retry it


@pytest.mark.parametrize(
    "message",
    [
        ["execution_error", {"exception_type": "torch.OutOfMemoryError", "node_id": "1"}],
        [
            "execution_error",
            {"exception_type": "RuntimeError", "exception_message": "CUDA out of memory"},
        ],
        ["execution_interrupted", {"node_id": "4", "node_type": "KSampler"}],
    ],
)
def test_out_of_memory_and_interruptions_are_retryable(message: list[object]) -> None:
    with pytest.raises(ComfyUIInterrupted) as err:
        _raise_from_messages([message])
    assert not isinstance(err.value, EngineError)  # retried while attempts remain


def test_output_files_of_savevideo_and_vhs() -> None:
    save = {"images": [{"filename": "a.mp4", "subfolder": "vidq", "type": "output"}]}
    vhs = {"gifs": [{"filename": "b.mp4", "format": "video/h264-mp4", "type": "output"}]}
    assert [f["filename"] for f in _files_of(save)] == ["a.mp4"]
    assert [f["filename"] for f in _files_of(vhs)] == ["b.mp4"]
    assert list(_files_of({"text": ["hello"]})) == []
