"""Waiting on conditions, never for a fixed time.

``eventually`` polls until a condition holds (and fails, saying what it waited for and
what it saw last, once its timeout passes); ``holds`` polls for a whole period and fails
the first time the condition does not hold: it is how a test watches for something that
must *not* happen (a second webhook delivery), for as long as that failure would take to
show. ``wait_status`` is ``eventually`` on a request's status.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def eventually(
    condition: Callable[[], T], timeout: float = 30.0, *, interval: float = 0.05, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy and return that; an
    AssertionError naming ``what`` (and the last value seen) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"not within {timeout:g} s: {what or getattr(condition, '__name__', 'condition')}"
                f" (last: {value!r})"
            )
        time.sleep(interval)


def until(
    fetch: Callable[[], T],
    done: Callable[[T], object],
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    what: str = "",
) -> T:
    """Call ``fetch`` until ``done`` accepts what it returned, and return that; an
    AssertionError naming ``what`` (and the last value) after ``timeout`` seconds."""
    last: list[T] = []

    def accepted() -> bool:
        last[:] = [fetch()]
        return bool(done(last[0]))

    try:
        eventually(accepted, timeout, interval=interval, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last: {last[0] if last else None!r}") from None
    return last[0]


def holds(
    condition: Callable[[], object], seconds: float, *, interval: float = 0.05, what: str = ""
) -> None:
    """Poll ``condition`` for ``seconds``: an AssertionError naming ``what`` the first time
    it is falsy. Watch for as long as the failure it guards against takes to show."""
    deadline = time.monotonic() + seconds
    while True:
        value = condition()
        assert value, f"no longer true: {what or getattr(condition, '__name__', 'condition')}"
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def wait_status(
    client: httpx.Client, model: str, rid: str, statuses: set[str], timeout: float = 60
) -> dict[str, Any]:
    """Poll the request's status until it is one of ``statuses``; its status body."""
    last: dict[str, Any] = {}

    def reached() -> dict[str, Any] | None:
        nonlocal last
        r = client.get(f"/queue/{model}/requests/{rid}/status")
        assert r.status_code == 200, r.text
        last = r.json()
        return last if last["status"] in statuses else None

    try:
        return eventually(reached, timeout)
    except AssertionError:
        raise AssertionError(f"request {rid} never reached {statuses}; last: {last}") from None
