"""Operators' routes (admin tokens only; any other token gets 404, as an unknown route):
``/metrics``, queue statistics, every user's requests (list, cancel, retry), users, what
every user's requests used per day (``/admin/usage``), workers, and pausing pools.

``/metrics`` may be made public (``VIDQ_METRICS_PUBLIC``), for scrapers that send no token.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, operator_store, submit_store
from vidq.api.native.answers import USAGE_DAYS_MAX, summary, usage
from vidq.api.parsing.params import request_id
from vidq.api.services.control import admin_cancel, admin_retry
from vidq.api.services.results import iso
from vidq.catalog import MODELS, POOLS
from vidq.errors import NotFound
from vidq.jobs import Job, JobState, WireStatus
from vidq.ops.metrics import CONTENT_TYPE, render
from vidq.store.base import OperatorStore, PoolHistory, PoolStats, SubmitStore, Token

router = APIRouter(tags=["admin"])

PAGE_MAX = 500
# A wire status (or an internal state) -> the internal states it stands for.
STATES: dict[str, tuple[JobState, ...]] = {
    WireStatus.IN_QUEUE.value: (JobState.PENDING, JobState.RETRY),
    WireStatus.IN_PROGRESS.value: (JobState.RUNNING,),
    **{s.value: (s,) for s in JobState},
}


async def admin(request: Request) -> Token:
    """The caller, who must hold an admin token (404 otherwise, as for unknown routes)."""
    token = await caller(request)
    if not token.admin:
        raise NotFound("Not found.")
    return token


@router.get(
    "/metrics",
    summary="Prometheus metrics (admin token, or public with VIDQ_METRICS_PUBLIC=true)",
    response_class=Response,
)
async def metrics(request: Request) -> Response:
    ctx = context(request)
    if not ctx.settings.server.metrics_public:
        await admin(request)
    body = await run_in_threadpool(render, ctx.registry)
    return Response(body, media_type=CONTENT_TYPE)


# The dashboard's window (completed/failed counts, medians) and how many failures it lists.
STATS_WINDOW_S = 3600.0
FAILURES_SHOWN = 10


@router.get(
    "/admin/queues",
    summary="Per pool: queue depth, running, live workers, pause state and the last hour",
)
async def queues(
    token: Token = Depends(admin), store: OperatorStore = Depends(operator_store)
) -> Response:
    def work() -> dict[str, Any]:
        depths = store.queue_depths()
        workers = store.live_workers()
        paused = set(store.paused_pools())
        stats = store.pool_stats(STATS_WINDOW_S)
        pools = sorted({m.pool for m in MODELS.values()})
        return {
            "window_s": STATS_WINDOW_S,
            "pools": {
                p: {
                    "queued": depths.get(p, 0),
                    "workers": workers.get(p, 0),
                    "paused": p in paused,
                    **dataclasses.asdict(stats.get(p, PoolStats())),
                }
                for p in pools
            },
            "failures": [dataclasses.asdict(f) for f in store.recent_failures(FAILURES_SHOWN)],
        }

    return JSONResponse(await run_in_threadpool(work))


# The history's longest window, and its bucket: a minute up to two hours, else 5 minutes.
HISTORY_MINUTES_MAX = 360


@router.get(
    "/admin/history",
    summary="Per pool, the last minutes: queue depth, throughput, wait p50/p95 per bucket",
)
async def history(
    minutes: int = Query(60, ge=5, le=HISTORY_MINUTES_MAX, description="How far back, in minutes."),
    token: Token = Depends(admin),
    store: OperatorStore = Depends(operator_store),
) -> Response:
    """The dashboard's charts, from the jobs' rows (what retention purged is gone)."""
    step_s = 60.0 if minutes <= 120 else 300.0

    def work() -> dict[str, Any]:
        past = store.pool_history(minutes * 60.0, step_s)
        pools = sorted({m.pool for m in MODELS.values()} | set(past.pools))
        n = len(past.times)
        quiet = PoolHistory((0,) * n, (0,) * n, (0,) * n, (0,) * n, (None,) * n, (None,) * n)
        return {
            "minutes": minutes,
            "step_s": past.step_s,
            "now": past.now,
            "times": list(past.times),
            "pools": {p: dataclasses.asdict(past.pools.get(p, quiet)) for p in pools},
        }

    return JSONResponse(await run_in_threadpool(work))


def _invalid(name: str, message: str) -> RequestValidationError:
    """A 422 naming the query parameter, in FastAPI's own shape."""
    return RequestValidationError([{"loc": ("query", name), "msg": message, "type": "value_error"}])


def _states(value: str | None) -> tuple[JobState, ...]:
    if value is None:
        return ()
    states = STATES.get(value.strip().upper())
    if states is None:
        raise _invalid("state", f"must be one of {', '.join(STATES)}")
    return states


def _since(value: str | None) -> float:
    """Seconds since the epoch, or an ISO 8601 time (UTC unless it says otherwise)."""
    if value is None or not value.strip():
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _invalid("since", "must be seconds since the epoch or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when.timestamp()


def _pool(value: str | None) -> str | None:
    if value is not None and value not in POOLS:
        raise _invalid("pool", f"unknown pool; known: {', '.join(POOLS)}")
    return value


def _job(job: Job, base: str) -> dict[str, Any]:
    return {
        **summary(job, base),
        "user": job.user,
        "pool": job.pool,
        "state": job.state.value,
        "worker": job.worker,
        # The GPU that ran it (`vidq worker --gpus`: its engine's CUDA_VISIBLE_DEVICES).
        "device": job.result_meta.get("device"),
        "max_attempts": job.max_attempts,
        "error": job.error,
        "error_type": job.error_type,
    }


@router.get("/admin/requests", summary="Every user's requests, newest first (paged, filtered)")
async def list_requests(
    request: Request,
    user: str | None = Query(None, max_length=200, description="Only this user's requests."),
    state: str | None = Query(
        None,
        description="IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED (or PENDING, "
        "RETRY, RUNNING).",
    ),
    pool: str | None = Query(None, description="Only this pool."),
    since: str | None = Query(
        None, description="Created at or after: epoch seconds or an ISO 8601 time."
    ),
    limit: int = Query(50, ge=1, le=PAGE_MAX, description="Page size."),
    before: int | None = Query(None, ge=1, le=2**62, description="The `next_before` of a page."),
    token: Token = Depends(admin),
    store: OperatorStore = Depends(operator_store),
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)
    states, start, only_pool = _states(state), _since(since), _pool(pool)

    def work() -> dict[str, Any]:
        jobs = store.admin_jobs(
            user=user, states=states, pool=only_pool, since=start, limit=limit + 1,
            before_id=before,
        )  # fmt: skip
        page = jobs[:limit]
        return {
            "requests": [_job(j, base) for j in page],
            "next_before": page[-1].id if len(jobs) > limit and page else None,
        }

    return JSONResponse(await run_in_threadpool(work))


@router.post("/admin/requests/{rid}/cancel", summary="Cancel any user's unfinished request")
async def cancel(
    rid: str,
    request: Request,
    token: Token = Depends(admin),
    jobs: SubmitStore = Depends(submit_store),
) -> Response:
    job_id = request_id(rid)
    ctx = context(request)
    job = await run_in_threadpool(admin_cancel, jobs, job_id)
    return JSONResponse(_job(job, ctx.base_url(request)))


@router.post(
    "/admin/requests/{rid}/retry", summary="Queue a FAILED request again with fresh attempts"
)
async def retry(
    rid: str,
    request: Request,
    token: Token = Depends(admin),
    store: OperatorStore = Depends(operator_store),
    jobs: SubmitStore = Depends(submit_store),
) -> Response:
    job_id = request_id(rid)
    ctx = context(request)
    job = await run_in_threadpool(admin_retry, store, jobs, job_id)
    return JSONResponse(_job(job, ctx.base_url(request)))


@router.get("/admin/users", summary="Per user: queued, running, finished and video seconds today")
async def users(
    token: Token = Depends(admin), store: OperatorStore = Depends(operator_store)
) -> Response:
    def work() -> dict[str, Any]:
        now = store.now()
        day = datetime.datetime.fromtimestamp(now, datetime.UTC).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        stats = store.user_stats(day.timestamp())
        return {
            "since": iso(day.timestamp()),
            "users": [
                {
                    "user": s.user,
                    "queued": s.queued,
                    "running": s.running,
                    "completed_today": s.completed_today,
                    "failed_today": s.failed_today,
                    "video_seconds_today": s.video_seconds_today,
                }
                for s in stats
            ],
        }

    return JSONResponse(await run_in_threadpool(work))


@router.get("/admin/usage", summary="Per user: what their requests used per UTC day and model")
async def usage_of_users(
    days: int = Query(
        7, ge=1, le=USAGE_DAYS_MAX, description="The last N UTC days, today included."
    ),
    token: Token = Depends(admin),
    store: OperatorStore = Depends(operator_store),
) -> Response:
    """``GET /usage`` of every user: requests, video seconds and GPU-seconds per user, UTC
    day and model (the ``vidq_gpu_seconds_total`` counter has no user label: this has)."""

    def work() -> dict[str, Any]:
        return usage(store.all_usage(days), days, store.now(), users=True)

    return JSONResponse(await run_in_threadpool(work))


@router.get(
    "/admin/workers",
    summary="Workers: pools, engines, state (warming, ready, engine down), current job, "
    "heartbeat age",
)
async def workers(
    token: Token = Depends(admin), store: OperatorStore = Depends(operator_store)
) -> Response:
    def work() -> dict[str, Any]:
        return {
            "workers": [
                {
                    "name": w.name,
                    "pools": list(w.pools),
                    "engines": w.engines,
                    "current_job": w.current_job,
                    "last_seen_seconds": w.seen_s_ago,
                    "jobs_done": w.jobs_done,
                    "state": w.state.value,
                    "state_reason": w.state_reason,
                }
                for w in store.workers()
            ]
        }

    return JSONResponse(await run_in_threadpool(work))


def _known_pool(pool: str) -> str:
    if pool not in POOLS:
        raise NotFound(f"Unknown pool '{pool[:100]}'; known: {', '.join(POOLS)}.")
    return pool


@router.post("/admin/pools/{pool}/pause", summary="Stop workers claiming from a pool")
async def pause(
    pool: str, token: Token = Depends(admin), store: OperatorStore = Depends(operator_store)
) -> Response:
    await run_in_threadpool(store.pause_pool, _known_pool(pool))
    return JSONResponse({"pool": pool, "paused": True})


@router.post("/admin/pools/{pool}/resume", summary="Let workers claim from a paused pool again")
async def resume(
    pool: str, token: Token = Depends(admin), store: OperatorStore = Depends(operator_store)
) -> Response:
    was = await run_in_threadpool(store.resume_pool, _known_pool(pool))
    return JSONResponse({"pool": pool, "paused": False, "was_paused": was})
