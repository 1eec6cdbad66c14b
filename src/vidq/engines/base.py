"""The Engine protocol: turns one job's inputs into an MP4 at ``output_path``.

An engine lives in a child process (``vidq.worker.child``): ``load`` runs once
when the child starts (model weights), ``run`` once per job. The registry that builds
engines by name is in ``vidq.engines``; this module imports no engine. Engines raise
``EngineError`` subclasses for failures a user should read; anything else is reported as
an internal engine error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

Report = Callable[[int, int], None]  # (done, total) -> None


@dataclasses.dataclass(frozen=True, slots=True)
class EngineJob:
    """One attempt of a job, as an engine sees it. JSON-serialisable."""

    request_id: int
    model_id: str
    family: str
    variant: str
    inputs: dict[str, Any]  # the validated request body (input media replaced by keys)
    files: dict[str, str]  # input field -> local file path (downloaded by the worker)
    output_path: str
    steps: int


@dataclasses.dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine made: the output file is at the job's ``output_path``."""

    name: str  # the middle part of the output's file name, e.g. "WanVideo2_2_T2V"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # seed, frames, ...


class Engine(Protocol):
    """A video generator. An engine whose work runs on a backend it does not own (a
    ComfyUI server) may also have ``probe() -> str | None``: None when the backend answers,
    else why not; the worker asks it while it holds the engine down (``worker/runner.py``).
    An exception whose class has ``backend_down = True`` says the backend is unreachable:
    the job is given back unspent and the engine held down until a probe answers."""

    name: str

    def load(self) -> None:
        """Load models; called once per child process before any ``run``."""

    def run(self, job: EngineJob, report: Report) -> EngineResult:
        """Generate the video for ``job``; call ``report(done, total)`` as work proceeds."""
