"""Queue positions in O(log n): a cached, sorted snapshot of each pool's queue.

A pool's order is ``(rank, id)``. Counting the jobs ahead with SQL is O(position): with
thousands queued it dominates a status poll (about 0.9 ms at 10,000 on SQLite, 15 ms at
100,000 on PostgreSQL). Instead each store keeps the sorted keys of every queued job per
pool, tagged with the pool's queue version, which triggers bump whenever a job enters or
leaves the queue (migration 0002). A poll reads the version with the job (same statement);
while it is unchanged the position is an exact binary search.

A job's position is the number of jobs a worker claims before it. The claim passes over
the jobs of a user who has ``max_running`` jobs running (statements.py, ``_FIRST_QUEUED``):
of such a user's queued jobs, in queue order, only the first ``max_running - running``
can start before one of theirs ends; the rest are *held* and count ahead of nobody else's.
A held job's own position is the one it will have once its user may start it: the
claimable jobs ahead of it plus its user's held jobs ahead of it; the status says it is
held. (A user's free slots are counted per pool: one slot and queued jobs in two pools
make the first job of each pool claimable.) So a snapshot splits the keys into the
claimable ones and, per held user, theirs. Which jobs are held depends on the running jobs,
in every pool, which the pool's version does not follow: a snapshot of a queue that holds
jobs with a ``max_running`` therefore also records a fingerprint of the running jobs
(their count, and the sums of their ids and start times: a job that starts or stops
changes it), which a poll of such a pool reads in a second, small statement and compares.
Pools whose queued jobs have no limit never read it.

When the version moved the snapshot is rebuilt, except in long queues (over
``LONG_QUEUE`` jobs): there a snapshot younger than ``MAX_STALE_S`` is reused, so that a
busy pool (many claims per second over 100,000 queued jobs) does not rebuild on every
poll. Positions in long queues may therefore be up to ``MAX_STALE_S`` old.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from array import array
from bisect import bisect_left
from collections.abc import Callable, Mapping

_ID_BITS = 40
LONG_QUEUE = 5000
MAX_STALE_S = 1.0

# The running jobs' fingerprint: (count, sum of ids, sum of start times).
Running = tuple[int, int, float]


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    """A pool's queue as a loader read it: the version (read before the keys), the
    running fingerprint (read before the running counts that split the keys; None when
    no queued job has a ``max_running``), the claimable keys and each held user's keys,
    all sorted."""

    version: int
    running: Running | None
    free: array[int]
    held: Mapping[str, array[int]]


# Reads a pool's queue (see ``Queue``).
Loader = Callable[[str], Queue]


def position_key(rank: int, job_id: int) -> int:
    """``(rank, id)`` packed into one integer with the same order."""
    return (rank << _ID_BITS) | job_id


@dataclasses.dataclass(frozen=True, slots=True)
class _Snapshot:
    queue: Queue
    size: int
    taken: float  # time.monotonic()

    def usable_at(self, version: int, running: Callable[[], Running]) -> bool:
        fresh = self.queue.version >= version
        if fresh and self.queue.running is None:
            return True  # the common case: no held jobs to follow
        young = self.size > LONG_QUEUE and time.monotonic() - self.taken < MAX_STALE_S
        return young or (fresh and self.queue.running == running())


class QueueSnapshots:
    """Per-pool sorted snapshots (see module docstring)."""

    def __init__(self) -> None:
        self._pools: dict[str, _Snapshot] = {}
        self._lock = threading.Lock()

    def position(
        self,
        pool: str,
        user: str,
        key: int,
        version: int,
        load: Loader,
        running: Callable[[], Running],
    ) -> tuple[int, bool]:
        """How many jobs of ``pool`` a worker claims before ``user``'s job ``key``, as
        of ``version``, and whether that job is held by its user's ``max_running``."""
        snap = self._pools.get(pool)
        if snap is None or not snap.usable_at(version, running):
            snap = self._rebuild(pool, version, snap, load, running)
        ahead = bisect_left(snap.queue.free, key)
        mine = snap.queue.held.get(user)
        if mine is not None:
            at = bisect_left(mine, key)
            if at < len(mine) and mine[at] == key:
                return ahead + at, True
        return ahead, False

    def _rebuild(
        self,
        pool: str,
        version: int,
        old: _Snapshot | None,
        load: Loader,
        running: Callable[[], Running],
    ) -> _Snapshot:
        # A long queue's pollers keep answering from the old snapshot while one thread
        # rebuilds; a short queue's wait for the (cheap) rebuild, so they stay exact.
        long_queue = old is not None and old.size > LONG_QUEUE
        if not self._lock.acquire(blocking=not long_queue):
            assert old is not None
            return old
        try:
            current = self._pools.get(pool)
            if current is not None and current is not old and current.usable_at(version, running):
                return current  # another thread rebuilt it meanwhile
            queue = load(pool)
            size = len(queue.free) + sum(len(keys) for keys in queue.held.values())
            snap = _Snapshot(queue, size, time.monotonic())
            self._pools[pool] = snap
            return snap
        finally:
            self._lock.release()
