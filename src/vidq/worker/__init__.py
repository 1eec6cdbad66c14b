"""Workers: claim a job, run its engine in a child process, upload, complete (fenced).

``Worker`` and ``WorkerOptions`` are imported from ``vidq.worker.runner`` when first used:
an engine's fork server imports ``vidq.worker.child`` (and so this package) and never
needs the worker loop, its store ports or its metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vidq.worker.runner import Worker, WorkerOptions

__all__ = ["Worker", "WorkerOptions"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vidq.worker import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
