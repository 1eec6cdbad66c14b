"""Every GPU of a box: ``vidq worker --gpus all`` (or ``--gpus 0,1,3``) runs one slot per GPU.

A slot is a plain ``Worker`` loop in its own thread, with its own name (``host:pid:gpuN``,
one row of ``GET /admin/workers`` showing its current job) and its own engine children,
pinned to its GPU (``WorkerOptions.gpu`` -> ``CUDA_VISIBLE_DEVICES`` in the child). Each
slot holds at most one job, so the process holds at most one job per GPU. The slots share
the source of attempts (local or remote), the metrics and one ``RunLimits``; a signal
stops them all.
Without ``--gpus`` the group has one slot that is not pinned: one job at a time, as before.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import threading
from collections.abc import Mapping, Sequence

from vidq.errors import EngineUnavailable
from vidq.ops.metrics import WorkerMetrics
from vidq.worker.limits import RunLimits
from vidq.worker.ports import Reaper, Source
from vidq.worker.runner import Worker, WorkerOptions

log = logging.getLogger(__name__)

NVIDIA_SMI = ("nvidia-smi", "--query-gpu=index", "--format=csv,noheader")


def resolve_gpus(gpus: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[str, ...] | None:
    """The devices of the slots: None (no ``--gpus``: one unpinned slot), the listed ones,
    or for ``all`` the entries of ``CUDA_VISIBLE_DEVICES`` when the worker was started
    with it (a container runtime or a scheduler picked the devices), else every GPU that
    ``nvidia-smi`` lists. Torch is not imported: it would initialise CUDA in the parent.
    EngineUnavailable when ``all`` finds no GPU."""
    if not gpus:
        return None
    if tuple(gpus) != ("all",):
        return tuple(gpus)
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        found = tuple(e.strip() for e in visible.split(",") if e.strip())
        # CUDA stops at the first invalid entry; "-1" (or nothing) means no device.
        if found and not found[0].startswith("-"):
            return found
        raise EngineUnavailable(f"--gpus all: CUDA_VISIBLE_DEVICES={visible!r} names no GPU")
    try:
        out = subprocess.run(
            NVIDIA_SMI, env=dict(environ), capture_output=True, text=True, timeout=30, check=True
        )
    except FileNotFoundError:
        raise EngineUnavailable(
            "--gpus all: nvidia-smi is not on PATH and CUDA_VISIBLE_DEVICES is not set; "
            "list the GPUs (--gpus 0,1) or leave --gpus out"
        ) from None
    except subprocess.CalledProcessError as exc:
        said = (exc.stderr or exc.stdout or "").strip()[:300]
        raise EngineUnavailable(
            f"--gpus all: nvidia-smi failed (exit code {exc.returncode}): {said}"
        ) from None
    except (OSError, subprocess.SubprocessError) as exc:
        raise EngineUnavailable(f"--gpus all: nvidia-smi failed: {exc}") from None
    found = tuple(line.strip() for line in out.stdout.splitlines() if line.strip())
    if not found:
        raise EngineUnavailable("--gpus all: nvidia-smi lists no GPU")
    return found


class WorkerGroup:
    """The slots of one worker process, run and stopped together."""

    def __init__(self, workers: Sequence[Worker]) -> None:
        if not workers:
            raise ValueError("a worker group needs at least one slot")
        self.workers = tuple(workers)
        self._errors: list[BaseException] = []

    @classmethod
    def build(
        cls,
        source: Source,
        options: WorkerOptions,
        gpus: Sequence[str] | None,
        *,
        metrics: WorkerMetrics | None = None,
        limits: RunLimits | None = None,
        reaper: Reaper | None = None,
    ) -> WorkerGroup:
        """One slot per GPU of ``gpus`` (None: one unpinned slot), sharing ``source``,
        ``limits`` and ``reaper``."""
        limits = limits or RunLimits()
        if gpus is None:
            return cls([Worker(source, options, metrics, limits, reaper=reaper)])
        return cls(
            [
                Worker(source, dataclasses.replace(options, gpu=gpu), metrics, limits,
                       reaper=reaper)
                for gpu in gpus
            ]
        )  # fmt: skip

    @property
    def name(self) -> str:
        """The first slot's name (the process's name where one is needed, e.g. the
        retention collector's lock holder)."""
        return self.workers[0].name

    def unhealthy(self) -> str | None:
        """Why a slot is unhealthy (the first found), or None when every slot is healthy."""
        return next((why for w in self.workers if (why := w.unhealthy()) is not None), None)

    def stop(self, *, drain: bool = True) -> None:
        """Stop every slot: after its current job (``drain``), or at once (released)."""
        for worker in self.workers:
            worker.stop(drain=drain)

    def run(self) -> int:
        """Run every slot until all have ended; the number of jobs they finished."""
        if len(self.workers) == 1:
            return self.workers[0].run()
        done = [0] * len(self.workers)
        threads = [
            threading.Thread(target=self._run_slot, args=(i, done), name=f"vidq-{w.name}")
            for i, w in enumerate(self.workers)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)  # short waits: the main thread keeps handling signals
        if self._errors:
            raise self._errors[0]
        return sum(done)

    def _run_slot(self, index: int, done: list[int]) -> None:
        try:
            done[index] = self.workers[index].run()
        except BaseException as exc:
            # One slot's crash ends the process as a single worker's would, after the
            # other slots finished their current jobs.
            log.exception("worker slot failed", extra={"worker": self.workers[index].name})
            self._errors.append(exc)
            self.stop(drain=True)
