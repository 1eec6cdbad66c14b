"""The messages between a worker and its engine child: every kind goes through the one
codec and comes back equal, as JSON (never pickle), and what is not a message is refused."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest
from pydantic import ValidationError

from vidq.engines.base import EngineJob, EngineResult, LoraFile
from vidq.worker.child_messages import (
    Failed,
    Failure,
    Finished,
    LoadFailed,
    Message,
    Probe,
    ProbeResult,
    Progress,
    Ready,
    RunJob,
    decode,
    encode,
)

JOB = EngineJob(
    request_id=7, model_id="wan22-fast-i2v", family="i2v", variant="fast",
    inputs={"prompt": "a fox \u00e9\U0001f98a", "seed": 3, "nested": [1, {"a": None}]},
    files={"image": "/tmp/job/input-image"}, output_path="/tmp/job/output.mp4", steps=4,
)  # fmt: skip
LORA = LoraFile(0, "loras[0] (https://h/a)", "/cache/ab.safetensors", "ab" * 32, 10, 0.5, "both")
MESSAGES: list[Message] = [
    Ready(),
    RunJob(dataclasses.replace(JOB, loras=[LORA, dataclasses.replace(LORA, index=1)])),
    LoadFailed(Failure("EngineUnavailable", "no weights", retryable=True)),
    RunJob(JOB),
    Progress(3, 4),
    Finished(EngineResult("WanVideo2_2_I2V", {"frames": 17, "fps": 16.0, "device": "1"})),
    Failed(Failure("RuntimeError", "RuntimeError: boom", True, "Traceback ...", restart=True)),
    Failed(Failure("ComfyUIUnavailable", "no ComfyUI server answered", True, down=True)),
    Probe(),
    ProbeResult(),
    ProbeResult("no ComfyUI server answered: http://gpu-1:8188: connection refused"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_json(message: Message) -> None:
    data = encode(message)
    assert json.loads(data)["kind"] == message.kind  # plain JSON, tagged by its kind
    assert decode(data) == message


@pytest.mark.parametrize(
    "data",
    [
        b'{"kind": "progress", "done": "three", "total": 4}',
        b'{"kind": "run", "job": {"request_id": 1}}',
        b'{"kind": "exec", "code": "import os"}',
        b'{"done": 1, "total": 2}',
        pickle.dumps(Progress(1, 2)),
    ],
)
def test_what_is_not_a_message_is_refused(data: bytes) -> None:
    with pytest.raises(ValidationError):
        decode(data)
