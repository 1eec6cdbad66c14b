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

Fair share (``VIDQ_FAIR_SHARE``, on by default) changes the order within a rank: users
take turns (store/statements/queue.py, ``fair_take``). A snapshot then also holds each
key's place in the claim order, computed when it is built by playing the claims out
(``turn_order``): rank by rank, best first, the users in the pool's turn order (``turns``:
least recently served first; never-served users first of all, by their first job), each
taking up to ``weight`` jobs a turn (a user part-way through a turn only what is left of
it) and going to the back when the turn ends, rounds until every job is placed; the turn
order the better ranks leave is where the next rank starts, as the claims would leave it.
A job's position is the number of claimable jobs placed before it; a held job is placed
in its user's turns like the others but counts ahead of nobody, and its position is the
claimable jobs placed before it plus its user's held jobs before it (as in FIFO).
Building the snapshot is O(n) in the pool's queued jobs (with 100,000 jobs over 1,000
users on PostgreSQL about 0.23 s against FIFO's 0.09 s: every owner is read, and the
rounds are a Python loop); a poll stays a binary search.
Without held jobs and new submits the positions are exact (the contract tests compare
them with the claims). The approximations: held jobs take their place in their user's
turns as if they could start (the claim passes over a held user without ending their
turn, so they come back first when a slot frees); a job submitted later may go before
(a never-served user's first job goes before every served user's); and a job the snapshot
does not hold yet (a long queue's snapshot is reused, below) is placed after one turn of
every user queued at its rank, where a new user's first job starts.

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
from collections.abc import Callable, Iterable, Mapping

_ID_BITS = 40
LONG_QUEUE = 5000
MAX_STALE_S = 1.0

# The running jobs' fingerprint: (count, sum of ids, sum of start times).
Running = tuple[int, int, float]


@dataclasses.dataclass(frozen=True, slots=True)
class Turns:
    """Fair share's claim order of a pool's queue (``turn_order``): the position of each
    claimable key (aligned with ``Queue.free``) and of each held key (aligned with
    ``Queue.held``), and per rank the claimable jobs of better ranks and how many users
    have jobs in it (where a job the snapshot does not hold is placed)."""

    free: array[int]
    held: dict[str, array[int]]
    before: dict[int, int]  # rank -> claimable jobs in better ranks
    users: dict[int, int]  # rank -> users with claimable jobs in it


@dataclasses.dataclass(frozen=True, slots=True)
class Queue:
    """A pool's queue as a loader read it: the version (read before the keys), the
    running fingerprint (read before the running counts that split the keys; None when
    no queued job has a ``max_running``), the claimable keys and each held user's keys,
    all sorted, and under fair share their places in the claim order."""

    version: int
    running: Running | None
    free: array[int]
    held: Mapping[str, array[int]]
    turns: Turns | None = None  # None: FIFO, a key's position is its index in ``free``


# A queued job as ``turn_order`` reads it: (rank, id, owner, weight, held).
Queued = tuple[int, int, str, int, bool]
# A user's place in a pool's turn order: (served, used) of ``turns`` (migration 0012).
Turn = tuple[int, int]
NEVER_SERVED = 2**62  # a user without a ``turns`` row: their first job's id minus this


def turn_order(queued: Iterable[Queued], turns: Mapping[str, Turn]) -> Turns:
    """Plays fair share's claims out over a pool's queue (``queued`` in ``(rank, id)``
    order, so the claimable and each user's held jobs come in the order of ``Queue``'s
    arrays; ``turns`` the pool's turn order), as the module docstring says. O(n)."""
    play = _Claims(turns)
    rank: int | None = None
    for job_rank, job_id, owner, weight, is_held in queued:
        if job_rank != rank:
            if rank is not None:
                play.rank(rank)
            rank = job_rank
        play.add(owner, job_id, weight, is_held)
    if rank is not None:
        play.rank(rank)
    return play.order


class _Claims:
    """The claims to come, played out one rank at a time (``turn_order``). A job is one
    integer: its index in its array, times two, plus one if it is held. Tight loops: a
    snapshot of 100,000 jobs is played out on a status read."""

    def __init__(self, turns: Mapping[str, Turn]) -> None:
        self.order = Turns(array("q"), {}, {}, {})
        self._placed = 0  # claimable jobs placed so far, every rank
        self._ghosts: dict[str, int] = {}  # held jobs placed so far, per user, every rank
        # each user's [served, used], as the claims played so far leave it
        self._state = {user: list(turn) for user, turn in turns.items()}
        self._clock = max((served for served, _ in turns.values()), default=0)
        # the current rank's jobs per user: (first id, weight, [index * 2 + held])
        self._jobs: dict[str, tuple[int, int, list[int]]] = {}

    def add(self, owner: str, job_id: int, weight: int, is_held: bool) -> None:
        """The next job of the current rank, in ``(rank, id)`` order."""
        if is_held:
            mine = self.order.held.setdefault(owner, array("q"))
            index = len(mine)
            mine.append(0)
        else:
            index = len(self.order.free)
            self.order.free.append(0)
        self._jobs.setdefault(owner, (job_id, max(weight, 1), []))[2].append(index * 2 + is_held)

    def rank(self, rank: int) -> None:
        """Places the jobs of ``rank`` (the ones added since the last rank), in rounds of
        turns in the order the claims so far leave."""
        order, jobs_of, state = self.order, self._jobs, self._state
        order.before[rank] = self._placed
        order.users[rank] = sum(
            1 for *_, jobs in jobs_of.values() if any(not job & 1 for job in jobs)
        )
        for user, (first_id, _, _) in jobs_of.items():
            state.setdefault(user, [first_id - NEVER_SERVED, 0])
        playing = sorted(jobs_of, key=lambda u: state[u][0])
        at = dict.fromkeys(playing, 0)
        free, placed, clock = order.free, self._placed, self._clock
        while playing:
            left = []
            for user in playing:
                _, weight, jobs = jobs_of[user]
                turn = state[user]
                start = at[user]
                end = min(start + max(weight - turn[1], 1), len(jobs))
                for i in range(start, end):
                    job = jobs[i]
                    if job & 1:
                        placed_held = self._ghosts.get(user, 0)
                        order.held[user][job >> 1] = placed + placed_held
                        self._ghosts[user] = placed_held + 1
                    else:
                        free[job >> 1] = placed
                        placed += 1
                turn[1] += end - start
                if turn[1] >= weight:  # the turn ends: to the back of the order
                    clock = max(clock, 0) + 1
                    turn[0], turn[1] = clock, 0
                at[user] = end
                if end < len(jobs):
                    left.append(user)
            playing = left
        self._placed, self._clock = placed, clock
        jobs_of.clear()


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
        queue = snap.queue
        ahead = bisect_left(queue.free, key)
        mine = queue.held.get(user)
        if mine is not None:
            at = bisect_left(mine, key)
            if at < len(mine) and mine[at] == key:
                if queue.turns is not None:
                    return queue.turns.held[user][at], True
                return ahead + at, True
        if queue.turns is None:
            return ahead, False
        if ahead < len(queue.free) and queue.free[ahead] == key:
            return queue.turns.free[ahead], False
        return _unknown(queue, queue.turns, key), False

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


def _unknown(queue: Queue, turns: Turns, key: int) -> int:
    """Fair share's position of a job the snapshot does not hold: after one turn of every
    user queued at its rank (see module docstring), and never past where FIFO puts it."""
    rank = key >> _ID_BITS
    better = turns.before.get(rank)
    if better is None:  # no job of this rank in the snapshot: the better ranks' jobs
        better = bisect_left(queue.free, position_key(rank, 0))
    return min(better + turns.users.get(rank, 0), bisect_left(queue.free, key))
