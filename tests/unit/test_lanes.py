"""The order ``make test`` hands files to its xdist workers in (tests/support/lanes.py):
a lane's files go to one worker at a time; the others keep their order."""

from __future__ import annotations

from pathlib import Path

from tests.support.lanes import LANES, TORCH, WAITING, choose

ROOT = Path(__file__).parents[2]
WAIT = sorted(WAITING)
TORCHED = sorted(TORCH)


def test_every_file_in_a_lane_exists() -> None:
    assert all((ROOT / f).is_file() for files in LANES.values() for f in files)
    assert not WAITING & TORCH


def test_a_free_lane_is_taken_and_a_held_one_left_to_its_worker() -> None:
    queue = ["tests/a.py", TORCHED[0], WAIT[0], "tests/b.py"]
    assert choose(queue, set(), set()) == TORCHED[0]  # the first free lane
    assert choose(queue, set(), {TORCHED[1]}) == WAIT[0]  # torch is on another worker
    assert choose(queue, set(), {TORCHED[1], WAIT[1]}) == "tests/a.py"  # both are
    assert choose(queue, {WAIT[1]}, {TORCHED[1]}) == WAIT[0]  # it goes on with its lane


def test_when_only_lane_files_are_left_every_worker_takes_them() -> None:
    assert choose([WAIT[0], WAIT[1]], set(), {WAIT[2]}) == WAIT[0]
    assert choose(["tests/a.py"], {WAIT[2]}, set()) == "tests/a.py"
