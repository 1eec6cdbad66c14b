"""Public operational routes: the model list, liveness and readiness (the admin routes
are in ``api/admin.py``)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import AppContext, context, operator_store
from vidq.catalog import MODELS, schema_json
from vidq.errors import StorageUnavailable, VidqError
from vidq.store.base import OperatorStore

router = APIRouter(tags=["operations"])


@router.get(
    "/models", summary="Every model id with its family, tier, pool, engine and input schema"
)
async def list_models(request: Request) -> Response:
    settings = context(request).settings
    return JSONResponse(
        {
            "models": [
                {
                    "id": m.id,
                    "family": m.family.value,
                    "tier": m.tier.name.lower(),
                    "pool": m.pool,
                    "engine": settings.worker.engine_for(m.pool),
                    "input_schema": schema_json(m),
                }
                for m in MODELS.values()
            ],
            # What a media input may weigh, so that a client refuses a file before sending
            # it: decoded (each input), and as the request's body (base64 adds a third).
            "limits": {
                "max_input_bytes": settings.limits.max_input_bytes,
                "max_body_bytes": settings.limits.max_body_bytes,
            },
        }
    )


@router.get("/health", summary="Liveness")
async def health() -> Response:
    return JSONResponse({"status": "ok"})


# How long one storage write probe answers /ready: probes come every few seconds from
# every load balancer and orchestrator, and each is a real write.
STORAGE_PROBE_TTL_S = 5.0


def _storage_writable(ctx: AppContext) -> None:
    """Raise StorageUnavailable unless an object can be written and deleted now (a full
    disk or a read-only bucket still answers a plain reachability check)."""
    at, error = ctx.storage_probe
    now = time.monotonic()
    if now - at >= STORAGE_PROBE_TTL_S:
        key = f"ready/probe-{uuid.uuid4().hex}"
        try:
            ctx.storage.check()
            ctx.storage.put_bytes(key, b"ok", "text/plain")
            ctx.storage.delete(key)
            error = None
        except VidqError as exc:
            error = exc.message
        ctx.storage_probe = (now, error)
    if error is not None:
        raise StorageUnavailable(error)


@router.get("/ready", summary="Readiness: the job store answers and the storage takes writes")
async def ready(request: Request, store: OperatorStore = Depends(operator_store)) -> Response:
    ctx = context(request)
    checks: dict[str, str] = {}
    probes: dict[str, Callable[[], object]] = {
        "database": store.now,
        "storage": lambda: _storage_writable(ctx),
    }
    for name, probe in probes.items():
        try:
            await run_in_threadpool(probe)
            checks[name] = "ok"
        except VidqError as exc:
            checks[name] = exc.message
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "unavailable", "checks": checks},
        status_code=200 if ok else 503,
        headers=None if ok else {"Retry-After": "5"},
    )
