"""The messages between a worker and its engine child (``child.py``), and their one codec.

Parent and child speak JSON over a pipe, never pickle (a job's inputs are untrusted JSON):
each message is a small frozen dataclass tagged by its ``kind``, written by ``encode`` and
read back, validated, by ``decode`` on the other side.

    child -> parent, once:   Ready | LoadFailed
    parent -> child:         RunJob
    child -> parent:         (Progress | PreviewReady)*, then Finished | Failed
    parent -> child:         Probe  (between jobs, while the worker holds its engine down)
    child -> parent:         ProbeResult
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from pydantic import Field, TypeAdapter

from vidq.engines.base import EngineJob, EngineResult


@dataclasses.dataclass(frozen=True, slots=True)
class Failure:
    """Why an engine failed (to load, or one job)."""

    type: str  # the exception's class name
    message: str  # what the job's error says
    retryable: bool  # an internal error (another attempt may succeed), not the user's input
    traceback: str = ""  # for the worker's log; empty for errors a user should read
    restart: bool = False  # the engine asks for a fresh child (e.g. a GPU out of memory)
    # the engine's backend is unreachable (a ComfyUI server down): not the job's fault; the
    # worker gives the job back unspent and probes the engine until it answers
    down: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class Ready:
    """The engine is loaded; jobs may be sent."""

    kind: Literal["ready"] = "ready"


@dataclasses.dataclass(frozen=True, slots=True)
class LoadFailed:
    """The engine could not be built or loaded; the child exits."""

    failure: Failure
    kind: Literal["load_failed"] = "load_failed"


@dataclasses.dataclass(frozen=True, slots=True)
class RunJob:
    """Run one job."""

    job: EngineJob
    kind: Literal["run"] = "run"


@dataclasses.dataclass(frozen=True, slots=True)
class Progress:
    """Steps done of the total, any number of times while a job runs."""

    done: int
    total: int
    kind: Literal["progress"] = "progress"


@dataclasses.dataclass(frozen=True, slots=True)
class PreviewReady:
    """A new live preview of the job is at its ``preview_path`` (``engines/previews.py``),
    showing ``step``."""

    step: int
    kind: Literal["preview"] = "preview"


@dataclasses.dataclass(frozen=True, slots=True)
class Finished:
    """The job's output is at its ``output_path``."""

    result: EngineResult
    kind: Literal["finished"] = "finished"


@dataclasses.dataclass(frozen=True, slots=True)
class Failed:
    """The job failed; the child waits for the next one (or is restarted on request)."""

    failure: Failure
    kind: Literal["failed"] = "failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Probe:
    """Is the engine's backend reachable? (``Engine.probe``; engines without one are up)"""

    kind: Literal["probe"] = "probe"


@dataclasses.dataclass(frozen=True, slots=True)
class ProbeResult:
    """The probe's answer: ``reason`` is why the backend is down; None: it is up."""

    reason: str | None = None
    kind: Literal["probe_result"] = "probe_result"


Message = (
    Ready | LoadFailed | RunJob | Progress | PreviewReady | Finished | Failed | Probe | ProbeResult
)

_CODEC: TypeAdapter[Message] = TypeAdapter(Annotated[Message, Field(discriminator="kind")])


def encode(message: Message) -> bytes:
    """``message`` as JSON bytes."""
    return _CODEC.dump_json(message)


def decode(data: bytes) -> Message:
    """The message of ``encode``'s bytes; ``pydantic.ValidationError`` for anything else."""
    return _CODEC.validate_json(data)
