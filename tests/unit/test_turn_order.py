"""Fair share's queue positions (store/positions.py, ``turn_order``): the claims played
out over a snapshot of a pool's queue. The same positions against a real database and
its claims: tests/integration/test_store_contract.py (``fair``)."""

from __future__ import annotations

from array import array

from vidq.jobs import queue_rank
from vidq.store.positions import NEVER_SERVED, Queue, QueueSnapshots, position_key, turn_order

BASE, PREMIUM = queue_rank(0, 0), queue_rank(2, 0)


def test_never_served_users_go_first_in_the_order_they_queued() -> None:
    # ann was served (served 5), ben and cat never: ben queued first
    queued = [
        (BASE, 1, "ann", 1, False),
        (BASE, 2, "ann", 1, False),
        (BASE, 3, "cat", 1, False),
        (BASE, 4, "ben", 1, False),
        (BASE, 5, "cat", 1, False),
    ]
    turns = {"ann": (5, 0), "cat": (3 - NEVER_SERVED, 0), "ben": (2 - NEVER_SERVED, 0)}
    order = turn_order(queued, turns)
    # ben (never served, queued first), cat, ann, cat, ann
    assert list(order.free) == [2, 4, 1, 0, 3]


def test_weights_give_turns_of_several_claims_and_a_turn_in_progress_ends_first() -> None:
    queued = [(BASE, i, user, weight, False) for i, (user, weight) in enumerate(
        [("ann", 2)] * 4 + [("ben", 1)] * 3, start=1
    )]  # fmt: skip
    # ann is at the front with one claim of her turn of 2 used: one more, then ben
    order = turn_order(queued, {"ann": (1, 1), "ben": (2, 0)})
    # claims: ann1, ben1, ann2, ann3, ben2, ann4, ben3
    assert list(order.free) == [0, 2, 3, 5, 1, 4, 6]


def test_better_ranks_first_and_the_turns_they_leave_carry_on() -> None:
    queued = [
        (PREMIUM, 1, "ann", 1, False),
        (BASE, 2, "ann", 1, False),
        (BASE, 3, "ben", 1, False),
    ]
    # ann is first in the order, but her premium job ends her turn: ben goes next
    order = turn_order(queued, {"ann": (1, 0), "ben": (2, 0)})
    assert list(order.free) == [0, 2, 1]
    assert order.before == {PREMIUM: 0, BASE: 1} and order.users == {PREMIUM: 1, BASE: 2}


def test_held_jobs_take_their_turns_and_count_ahead_of_nobody() -> None:
    queued = [
        (BASE, 1, "ann", 1, False),
        (BASE, 2, "ann", 1, True),
        (BASE, 3, "ben", 1, False),
        (BASE, 4, "ben", 1, False),
        (BASE, 5, "ann", 1, True),
    ]
    order = turn_order(queued, {"ann": (1, 0), "ben": (2, 0)})
    assert list(order.free) == [0, 1, 2]  # ann1, ben1, ben2: ann's held ones pass
    # ann's held jobs: after the claimable jobs placed before them, and her own held ones
    assert list(order.held["ann"]) == [2, 4]


def test_snapshot_positions_come_from_the_order() -> None:
    free = array("q", [position_key(BASE, i) for i in (1, 2, 3)])
    queued = [(BASE, 1, "ann", 1, False), (BASE, 2, "ann", 1, False), (BASE, 3, "ben", 1, False)]
    turns = turn_order(queued, {"ann": (1, 0), "ben": (1 - NEVER_SERVED, 0)})
    queue = Queue(1, None, free, {}, turns)
    snaps = QueueSnapshots()

    def at(user: str, job_id: int) -> int:
        position, held = snaps.position(
            "p", user, position_key(BASE, job_id), 1, lambda _: queue, lambda: (0, 0, 0.0)
        )
        assert not held
        return position

    assert [at("ben", 3), at("ann", 1), at("ann", 2)] == [0, 1, 2]
    # a job the snapshot does not hold: after one turn of the two users at its rank
    assert at("cat", 9) == 2
