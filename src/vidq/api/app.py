"""``create_app(settings, store, storage)``: the FastAPI application, the API's
composition root: it builds the ``AppContext`` (the settings turned into the media
intake's policies, the token cache, the ETA estimator, the webhook dispatcher), the
error handlers, the middleware and the routers, and runs the reaper.

The app holds no module-level state: everything it needs hangs off ``app.state.ctx``.
"""

from __future__ import annotations

import logging
import threading
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry
from starlette.middleware.trustedhost import TrustedHostMiddleware

from vidq.api import admin, admin_tokens, docs, files, ops, web, webhooks
from vidq.api.auth import Authenticator
from vidq.api.context import AppContext
from vidq.api.eta import EtaEstimator
from vidq.api.fal import queue as fal
from vidq.api.fal import run as fal_run
from vidq.api.fal import storage as fal_storage
from vidq.api.guard import RequestGuard
from vidq.api.native import requests, tokens
from vidq.api.native import routes as native
from vidq.api.native.fastpath import StatusFastPath
from vidq.api.worker import routes as worker
from vidq.blobs.base import BlobStore
from vidq.config import Settings
from vidq.errors import RateLimited, ServiceUnavailable, VidqError, plain_message
from vidq.media.decode import DecodePool
from vidq.media.fetch import Fetcher, FetchPolicy
from vidq.media.inputs import Limits
from vidq.media.intake import MediaIntake
from vidq.ops.metrics import HttpMetrics, HttpMetricsMiddleware, JobFamilies
from vidq.store.base import JobStore

log = logging.getLogger(__name__)


WORKER_POLLS = 256  # remote workers' claims waiting at once (each holds a thread)


def create_app(
    settings: Settings,
    store: JobStore,
    storage: BlobStore,
    *,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The vidq API over a job store and a blob store. ``GET /metrics`` renders
    ``registry`` (in-process workers' families, if any) plus the job and HTTP families."""
    registry = registry or CollectorRegistry(auto_describe=True)
    registry.register(JobFamilies(store))
    http_metrics = HttpMetrics(registry)
    ctx = AppContext(
        settings=settings,
        store=store,
        storage=storage,
        auth=Authenticator(store),
        eta=EtaEstimator(store, settings),
        intake=media_intake(settings, storage),
        registry=registry,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        reaper = threading.Thread(target=_reaper, args=(ctx,), name="vidq-reaper", daemon=True)
        reaper.start()
        ctx.webhooks.start()
        yield
        ctx.reaper_stop.set()
        ctx.webhooks.stop()
        ctx.intake.close()

    app = FastAPI(
        title="vidq",
        version="0.1.0",
        summary="Self-hosted video generation queue (Wan 2.2, HunyuanVideo-Foley).",
        lifespan=lifespan,
        # vidq exports no OpenTelemetry data; FastAPI's native telemetry would otherwise
        # look up whether it is configured on every request (~10 us, bench/api.py).
        telemetry={"tracing": False, "metrics": False, "logs": False},
        docs_url=None,  # api/docs.py serves /docs and /redoc without a CDN
        redoc_url=None,
    )
    app.state.ctx = ctx

    @app.exception_handler(VidqError)
    async def vidq_error(request: Request, exc: VidqError) -> Response:
        headers = {"Retry-After": "5"} if isinstance(exc, ServiceUnavailable) else None
        if exc.http_status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        if exc.http_status >= 500:
            log.error("internal error: %s", exc.message)
        if isinstance(exc, RateLimited):
            headers = {"Retry-After": str(exc.retry_after)}
            return JSONResponse(exc.body(), status_code=exc.http_status, headers=headers)
        return JSONResponse({"detail": exc.detail}, status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
        # Never echo inputs back: they can be megabytes of base64.
        detail = [
            {
                "loc": list(e.get("loc", ())),
                "msg": plain_message(str(e.get("msg", ""))),
                "type": e.get("type", ""),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": detail}, status_code=422)

    ctx.webhooks = webhooks.WebhookDispatcher(ctx, store)
    ctx.worker_polls = anyio.CapacityLimiter(WORKER_POLLS)
    # The router tries routes in this order, matching each one's pattern: the submit and
    # request routes of both dialects come first (no other path starts with /queue or
    # /requests), so that a submit does not first try every admin and ops route.
    app.include_router(native.model_router())  # the catalog's ids, before /queue/{model_id}
    app.include_router(native.router)
    app.include_router(requests.router)
    app.include_router(tokens.router)
    app.include_router(fal.alias_router())  # the catalog's fal endpoint ids
    app.include_router(fal.router)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(admin_tokens.router)
    app.include_router(files.router)
    # Behind the fast path (which counts its polls itself, cheaper), inside the body guard
    # (which copies the scope: the router's route must land in the scope this one reads).
    app.add_middleware(HttpMetricsMiddleware, metrics=http_metrics)
    app.add_middleware(StatusFastPath, ctx=ctx, store=store, metrics=http_metrics)
    app.include_router(fal_storage.router)
    app.include_router(fal_run.router)
    app.include_router(worker.router)  # the worker protocol (remote workers)
    app.include_router(worker.uploads)
    app.include_router(docs.router)  # /docs, /redoc
    app.include_router(web.router(web.WebFiles()))  # the web app at /
    app.add_middleware(RequestGuard, max_bytes=settings.limits.max_body_bytes)
    hosts = settings.server.trusted_hosts()
    if hosts is not None:  # outermost: a Host that is not ours is never reflected in a URL
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    return app


def media_intake(settings: Settings, storage: BlobStore) -> MediaIntake:
    """What a submit's media go through (``media/intake.py``), under the settings' limits:
    input sizes and lengths, URL fetching, decoding threads and concurrent submits."""
    limits = settings.limits
    fetcher = Fetcher(
        FetchPolicy(
            max_bytes=limits.max_input_bytes,
            timeout_s=limits.fetch_timeout,
            allow_http=limits.fetch_allow_http,
            allow_networks=limits.fetch_allow_networks,
        ),
        total=limits.fetch_concurrency,
        per_user=limits.fetch_per_user,
    )
    checks = Limits(
        max_bytes=limits.max_input_bytes,
        max_image_pixels=limits.max_image_pixels,
        max_audio_seconds=limits.max_audio_seconds,
        max_video_seconds=limits.max_video_seconds,
    )
    images = DecodePool(limits.decode_threads)
    return MediaIntake(
        storage, checks, fetcher, images, anyio.CapacityLimiter(limits.media_concurrency)
    )


def _reaper(ctx: AppContext) -> None:
    """Turns expired leases into RETRY/FAILED and jobs past their deadlines into FAILED;
    safe to run in every API and worker (every API runs it, so deadlines hold even for a
    pool no worker serves)."""
    while not ctx.reaper_stop.wait(ctx.settings.store.reaper_interval):
        try:
            ctx.store.reap()
        except VidqError as exc:
            log.warning("reaper: %s", exc.message)
