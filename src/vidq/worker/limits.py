"""What ends a worker process besides a signal: ``vidq worker --max-jobs N`` (after N jobs,
counted across all its GPU slots) and ``--max-idle SECONDS`` (after that long with no job
running anywhere in the process), so that a fleet scales to zero on plain VMs too.

One ``RunLimits`` is shared by the slots (``Worker`` loops) of a process. A slot reserves
before it claims, so the slots together never claim more than ``max_jobs``; a limit ends a
slot's loop only between jobs: a claimed job is always finished (drained), never orphaned.
A claim in flight is not work (a remote worker's claim long-polls for seconds, and some slot
is nearly always in one); a job that such a claim returns after the idle decision is still
run, and its slot ends after it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class RunLimits:
    """The shared job budget and idle clock of one worker process (thread-safe)."""

    def __init__(
        self,
        max_jobs: int | None = None,
        max_idle_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_jobs = max_jobs
        self.max_idle_s = max_idle_s
        self._clock = clock
        self._lock = threading.Lock()
        self._taken = 0  # jobs claimed, or being claimed (a reservation)
        self._running = 0  # jobs claimed and not yet ended
        self._last_work = clock()  # when a job last started or ended (or the start)
        self._idle_over = False
        self.reason = ""  # why the process stopped taking work ("" while it does)

    def begin_claim(self) -> bool:
        """Reserve one job of the budget before claiming; False: this slot is done."""
        with self._lock:
            if self._idle_over:
                return False
            if self.max_jobs is not None and self._taken >= self.max_jobs:
                # Every remaining job of the budget is held by a slot that is still
                # live, so ending this one costs no parallelism.
                self.reason = self.reason or f"finished --max-jobs {self.max_jobs}"
                return False
            self._taken += 1
            return True

    def end_claim(self, claimed: bool) -> None:
        """The claim got a job (its reservation is now a running job) or gave it back."""
        with self._lock:
            if claimed:
                self._running += 1
                self._last_work = self._clock()
            else:
                self._taken -= 1

    def job_done(self) -> None:
        """A claimed job ended (whatever its outcome)."""
        with self._lock:
            self._running -= 1
            self._last_work = self._clock()

    def idle_expired(self) -> bool:
        """True once no slot has run a job for ``max_idle_s``; from then on no slot begins
        another claim (the same lock as ``begin_claim``)."""
        with self._lock:
            if self.max_idle_s is None or self._idle_over:
                return self._idle_over
            if self._running == 0 and self._clock() - self._last_work >= self.max_idle_s:
                self._idle_over = True
                self.reason = f"idle for --max-idle {self.max_idle_s:g} s"
            return self._idle_over
