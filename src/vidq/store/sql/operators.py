"""The operators' queries (``OperatorStore``): every user's jobs, admin retries,
paused pools, the dashboard's pool figures and failures, users and workers."""

from __future__ import annotations

import bisect
import itertools
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence

from vidq.jobs import Job, JobState, WorkerState
from vidq.store.base import (
    DailyUsage,
    Failure,
    History,
    PoolHistory,
    PoolStats,
    UserStats,
    WorkerInfo,
)
from vidq.store.rows import daily_usage_from_row, job_from_row
from vidq.store.sql.core import NO_CURSOR, Queries


class OperatorQueries(Queries):
    """``OperatorStore`` (see ``base.OperatorStore``)."""

    def admin_jobs(
        self,
        *,
        user: str | None,
        states: Sequence[JobState],
        pool: str | None,
        since: float,
        limit: int,
        before_id: int | None = None,
    ) -> list[Job]:
        if len(states) > 2:
            raise ValueError("at most two states")
        names = [s.value for s in states]
        rows = self._rows(
            self._sql.admin_jobs, owner=user, pool=pool, since=since, limit=limit,
            state_a=names[0] if names else None, state_b=names[-1] if names else None,
            before=before_id if before_id is not None else NO_CURSOR,
        )  # fmt: skip
        return [job_from_row(r) for r in rows]

    def admin_retry(self, job_id: int) -> bool:
        return self._row(self._sql.admin_retry, id=job_id) is not None

    def user_stats(self, since: float) -> list[UserStats]:
        return [
            UserStats(
                user=r["owner"],
                queued=int(r["queued"]),
                running=int(r["running"]),
                completed_today=int(r["completed"]),
                failed_today=int(r["failed"]),
                video_seconds_today=round(float(r["video_seconds"] or 0.0), 3),
            )
            for r in self._rows(self._sql.user_stats, since=since)
        ]

    def all_usage(self, days: int) -> list[DailyUsage]:
        rows = self._rows(self._sql.all_usage, back_s=(days - 1) * 86400)
        return [daily_usage_from_row(r) for r in rows]

    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                name=r["name"],
                pools=tuple(p for p in r["pools"].split(",") if p),
                engines=dict(
                    pair.split("=", 1) for pair in (r["engines"] or "").split(",") if "=" in pair
                ),
                seen_s_ago=round(max(0.0, float(r["age"])), 3),
                state=_worker_state(r["state"]),
                state_reason=r["state_reason"] or None,
                current_job=int(r["job"]) if r["job"] is not None else None,
                jobs_done=int(r["done"]),
            )
            for r in self._rows(self._sql.workers)
        ]

    def pause_pool(self, pool: str) -> None:
        self._count(self._sql.pause_pool, pool=pool)

    def resume_pool(self, pool: str) -> bool:
        return bool(self._rows(self._sql.resume_pool, pool=pool))

    def paused_pools(self) -> list[str]:
        return [r["pool"] for r in self._rows(self._sql.paused_pools)]

    def pool_stats(self, window_s: float) -> dict[str, PoolStats]:
        # One read of the window's rows; the medians are taken here, alike on both databases.
        running: Counter[str] = Counter()
        completed: Counter[str] = Counter()
        failed: Counter[str] = Counter()
        waits: dict[str, list[float]] = defaultdict(list)
        runs: dict[str, list[float]] = defaultdict(list)
        for r in self._rows(self._sql.pool_window, window_s=window_s):
            pool, state, since = r["pool"], r["state"], float(r["now"]) - window_s
            started, finished = r["started_at"], r["finished_at"]
            running[pool] += state == "RUNNING"
            if started is not None and started > since:
                waits[pool].append(float(started) - float(r["created_at"]))
            if finished is None or finished <= since:
                continue
            completed[pool] += state == "COMPLETED"
            failed[pool] += state == "FAILED"
            if state == "COMPLETED" and started is not None:
                runs[pool].append(float(finished) - float(started))
        pools = set(running) | set(completed) | set(failed) | set(waits)
        return {
            p: PoolStats(
                running=running[p],
                completed=completed[p],
                failed=failed[p],
                median_wait_s=statistics.median(waits[p]) if waits[p] else None,
                median_run_s=statistics.median(runs[p]) if runs[p] else None,
            )
            for p in sorted(pools)
        }

    def recent_failures(self, limit: int) -> list[Failure]:
        return [
            Failure(
                int(r["id"]),
                r["owner"],
                r["model_id"],
                r["pool"],
                r["error"],
                r["error_type"],
                float(r["finished_at"] or 0.0),
            )
            for r in self._rows(self._sql.recent_failures, limit=limit)
        ]

    def pool_history(self, window_s: float, step_s: float) -> History:
        # Buckets aligned on the clock (whole minutes for a 60 s step), the last one the
        # current; one read of the rows the window touched, the figures taken here.
        now = self.now()
        n = max(1, math.ceil(window_s / step_s))
        first = math.floor(now / step_s) * step_s - (n - 1) * step_s
        times = [first + i * step_s for i in range(n)]
        ends = [min(t + step_s, now) for t in times]
        rows = self._rows(self._sql.pool_history, since=first, until=now)
        marks: dict[str, list[int]] = defaultdict(lambda: [0] * (n + 1))
        started: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        completed: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        failed: dict[str, list[int]] = defaultdict(lambda: [0] * n)
        waits: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(n)])

        def bucket(t: float) -> int | None:
            i = math.floor((t - first) / step_s)
            return i if 0 <= i < n and t <= now else None

        for r in rows:
            pool, created = r["pool"], float(r["created_at"])
            start = None if r["first_started_at"] is None else float(r["first_started_at"])
            end = None if r["finished_at"] is None else float(r["finished_at"])
            left = start if start is not None else end  # when it stopped waiting
            # Queued at each bucket end in [created, left): a run of buckets, marked at its
            # two ends (the counts are summed below), so a row costs two searches, not n.
            mark = marks[pool]  # every pool the window touched is listed
            first_in = bisect.bisect_left(ends, created)
            past = n if left is None else bisect.bisect_left(ends, left, lo=first_in)
            if first_in < past:
                mark[first_in] += 1
                mark[past] -= 1
            if start is not None and (b := bucket(start)) is not None:
                started[pool][b] += 1
                waits[pool][b].append(max(0.0, start - created))
            if end is not None and (b := bucket(end)) is not None:
                completed[pool][b] += r["state"] == "COMPLETED"
                failed[pool][b] += r["state"] == "FAILED"
        pools = {
            p: PoolHistory(
                queued=tuple(itertools.accumulate(marks[p][:n])),
                started=tuple(started[p]),
                completed=tuple(completed[p]),
                failed=tuple(failed[p]),
                wait_p50_s=tuple(_rank(w, 0.50) for w in waits[p]),
                wait_p95_s=tuple(_rank(w, 0.95) for w in waits[p]),
            )
            for p in sorted(marks)
        }
        return History(times=tuple(times), step_s=step_s, now=now, pools=pools)


def _rank(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (a value that occurred), rounded to milliseconds."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 3)


def _worker_state(value: str | None) -> WorkerState:
    """A stored worker state; one this version does not know (a newer worker's) reads as
    ``ready``, as rows from before the column do."""
    try:
        return WorkerState(value or WorkerState.READY)
    except ValueError:
        return WorkerState.READY
