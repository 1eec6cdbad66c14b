"""The Engine protocol: turns one job's inputs into an MP4 at ``output_path``.

An engine lives in a child process (``vidq.worker.child``): ``load`` runs once
when the child starts (model weights), ``run`` once per job. The registry that builds
engines by name is in ``vidq.engines``; this module imports no engine. Engines raise
``EngineError`` subclasses for failures a user should read; anything else is reported as
an internal engine error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

Report = Callable[[int, int], None]  # (done, total) -> None


@dataclasses.dataclass(frozen=True, slots=True)
class LoraFile:
    """One LoRA of a job, fetched by the worker (``vidq.worker.loras``) into its cache."""

    index: int  # its place in the request's ``loras``
    name: str  # how errors name it: ``loras[i] (https://host/path)``, no query string
    path: str  # the local file (in the worker's LoRA cache)
    sha256: str  # of the file's bytes
    size: int  # bytes
    scale: float
    transformer: str  # "high" | "low" | "both"


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
    # Live previews: where the child writes the latest (``engines/previews.py``) and at
    # most how often (seconds; 0: none).
    preview_path: str = ""
    preview_interval_s: float = 0.0
    # Where the child writes the output's poster frame, the gallery's still (none: no
    # poster); the child, not the engine, makes it after the run (``worker/child.py``).
    poster_path: str = ""
    loras: list[LoraFile] = dataclasses.field(default_factory=list)  # applied for this job only
    # The model's engine options from the models file (docs/models.md), e.g. a comfyui
    # ``template`` and its ``inputs``, or ltx2's ``steps``/``guidance``/``fps``; engines read
    # what they know, with their defaults when absent.
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    output_name: str = ""  # the model's output_name (the engine's own when empty)


@dataclasses.dataclass(frozen=True, slots=True)
class EngineResult:
    """What an engine made: the output file is at the job's ``output_path``."""

    name: str  # the middle part of the output's file name, e.g. "WanVideo2_2_T2V"
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # seed, frames, ...


class Previews(Protocol):
    """Where an engine shows the video so far while a job runs (``engines/previews.py``
    writes them; the worker publishes each to the job's status). An engine asks ``due``
    first, so that it makes the frames only when one would be sent."""

    def due(self) -> bool:
        """Whether a preview published now would be sent (at most one per interval)."""

    def publish(
        self, frames: Sequence[npt.NDArray[np.uint8]], step: int, fps: float = 16.0
    ) -> None:
        """Show ``frames`` (the video so far: H x W x 3 RGB arrays, ``fps`` a second) as
        the preview at ``step`` (of the steps ``report`` counts)."""


class NoPreviews:
    """Previews off (``Previews``): never due."""

    def due(self) -> bool:
        return False

    def publish(
        self, frames: Sequence[npt.NDArray[np.uint8]], step: int, fps: float = 16.0
    ) -> None:
        return None


NO_PREVIEWS = NoPreviews()


def lora_meta(loras: list[LoraFile]) -> list[dict[str, Any]]:
    """What a result's meta records of the LoRAs an engine applied (``loras``; the native
    result shows it): each one's content hash, size, scale and expert."""
    return [
        {"sha256": f.sha256, "bytes": f.size, "scale": f.scale, "transformer": f.transformer}
        for f in loras
    ]


class Engine(Protocol):
    """A video generator. An engine whose work runs on a backend it does not own (a
    ComfyUI server) may also have ``probe() -> str | None``: None when the backend answers,
    else why not; the worker asks it while it holds the engine down (``worker/runner.py``).
    An exception whose class has ``backend_down = True`` says the backend is unreachable:
    the job is given back unspent and the engine held down until a probe answers."""

    name: str

    def load(self) -> None:
        """Load models; called once per child process before any ``run``."""

    def run(self, job: EngineJob, report: Report, previews: Previews = NO_PREVIEWS) -> EngineResult:
        """Generate the video for ``job``; call ``report(done, total)`` as work proceeds,
        and show the video so far on ``previews`` where the engine can."""
