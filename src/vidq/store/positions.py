"""Queue positions in O(log n): a cached, sorted snapshot of each pool's queue.

A pool's order is ``(rank, id)``. Counting the jobs ahead with SQL is O(position); with
thousands queued that dominates a status poll. Instead each store keeps the sorted keys of
every queued job per pool, tagged with the pool's queue version (bumped by triggers when a
job enters or leaves the queue, see migration 0002). A poll reads the version (one primary-
key lookup); while it is unchanged the position is a binary search.
"""

from __future__ import annotations

import threading
from array import array
from bisect import bisect_left
from collections.abc import Callable

_ID_BITS = 40

# (pool) -> (version, sorted keys)
Loader = Callable[[str], tuple[int, "array[int]"]]


def position_key(rank: int, job_id: int) -> int:
    """``(rank, id)`` packed into one integer with the same order."""
    return (rank << _ID_BITS) | job_id


class QueueSnapshots:
    """Per-pool sorted snapshots, rebuilt when the pool's queue version moves."""

    def __init__(self) -> None:
        self._pools: dict[str, tuple[int, array[int]]] = {}
        self._lock = threading.Lock()

    def position(self, pool: str, key: int, version: int, load: Loader) -> int:
        """How many queued keys of ``pool`` sort before ``key`` at ``version`` or later."""
        hit = self._pools.get(pool)
        if hit is None or hit[0] < version:
            with self._lock:  # one rebuild at a time; the others reuse it
                hit = self._pools.get(pool)
                if hit is None or hit[0] < version:
                    hit = load(pool)
                    self._pools[pool] = hit
        return bisect_left(hit[1], key)
