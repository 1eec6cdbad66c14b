"""``AppContext``: what the routers share, built once by ``create_app``; and what a route
asks for from it (FastAPI dependencies): the context, the caller, the store role it uses.

Routers and services import this module, never ``api/app.py``: the app module is the
API's composition root and imports the routers, so the dependency points one way only.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Protocol

import anyio
from fastapi import Request
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from vidq.api.auth import Authenticator, parse_authorization, require_user_role
from vidq.api.eta import EtaEstimator
from vidq.blobs.base import BlobStore
from vidq.config import Settings
from vidq.media.intake import MediaIntake
from vidq.store.base import (
    JobStore,
    OperatorStore,
    SubmitStore,
    Token,
    TokenStore,
    UploadStore,
    WorkerStore,
)


class Webhooks(Protocol):
    """The webhook side of the API as routers use it (``api/webhooks.py`` implements it)."""

    def check(self, url: str | None) -> str | None:
        """Submit-time check of a ``fal_webhook`` value (None if absent)."""

    def secret_for(self, user: str) -> str:
        """The signing secret of ``user``'s webhooks."""

    def start(self) -> None:
        """Start delivering the job store's due webhooks (the app's startup); the submit's
        INSERT registers them (``SubmitStore.enqueue``)."""

    def stop(self) -> None:
        """Stop delivering (the app's shutdown)."""


@dataclasses.dataclass
class AppContext:
    """What the routes share."""

    settings: Settings
    store: JobStore  # every role (store/base.py); a route asks for its own below
    storage: BlobStore
    auth: Authenticator
    eta: EtaEstimator
    intake: MediaIntake  # a submit's media: fetched, checked and stored as blobs
    registry: CollectorRegistry  # what GET /metrics renders (api/admin.py)
    reaper_stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    # /ready's storage write probe: (when it ran, its error or None), reused a few seconds
    storage_probe: tuple[float, str | None] = (float("-inf"), None)
    webhooks: Webhooks = dataclasses.field(init=False)  # set by create_app
    # remote workers' long-polling claims (api/worker/routes.py): their own threads, so that
    # idle workers never hold the threads the other routes run on
    worker_polls: anyio.CapacityLimiter = dataclasses.field(init=False)

    def base_url(self, request: Request) -> str:
        return (self.settings.server.public_url or str(request.base_url)).rstrip("/")


def context(request: Request) -> AppContext:
    """The request's AppContext (a FastAPI dependency)."""
    ctx: AppContext = request.app.state.ctx
    return ctx


async def caller(request: Request) -> Token:
    """The authenticated user or admin token of this request (401 otherwise; 403 for a
    worker token, which may use only ``/worker/v1``)."""
    ctx = context(request)
    token = parse_authorization(request.headers.get("authorization"))
    hit = ctx.auth.cached(token)
    if hit is None:
        hit = await run_in_threadpool(ctx.auth.lookup, token)
    return require_user_role(hit)


def submit_store(request: Request) -> SubmitStore:
    """The job store as the user routes use it: a user's jobs (a FastAPI dependency)."""
    return context(request).store


def operator_store(request: Request) -> OperatorStore:
    """The job store as the admin routes use it (a FastAPI dependency)."""
    return context(request).store


def token_store(request: Request) -> TokenStore:
    """The job store as the token checks use it (a FastAPI dependency)."""
    return context(request).store


def upload_store(request: Request) -> UploadStore:
    """The job store as the upload routes use it (a FastAPI dependency)."""
    return context(request).store


def worker_store(request: Request) -> WorkerStore:
    """The job store as the worker protocol's routes use it (a FastAPI dependency)."""
    return context(request).store
