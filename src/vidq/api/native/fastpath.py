"""An ASGI fast path for the hottest route: ``GET /queue/{model}/requests/{id}/status``.

Clients poll status many times per job. Through FastAPI's dependency machinery and a
thread hop a poll costs several times what the work itself does (measured in
bench/api.py), so polls are answered here, before routing, by the same ``status_of`` the
documented FastAPI route uses. With an in-process store (SQLite) the reads run on the
event loop; with a network database they go to a thread like everything else.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from vidq.api.auth import parse_authorization, require_user_role
from vidq.api.context import AppContext
from vidq.api.native.routes import status_of
from vidq.errors import ServiceUnavailable, VidqError
from vidq.ops.metrics import HttpMetrics
from vidq.store.base import SubmitStore, Token

_STATUS = re.compile(r"/queue/([^/]+)/requests/([^/]+)/status")
ROUTE = "/queue/{model_id}/requests/{rid}/status"  # the template of the documented route


class StatusFastPath:
    """Serves status polls directly; everything else goes on to the app."""

    def __init__(
        self, app: ASGIApp, ctx: AppContext, store: SubmitStore, metrics: HttpMetrics
    ) -> None:
        self.app = app
        self.ctx = ctx
        self.store = store  # the job store as the status route uses it
        # The polls are counted and timed here, under the documented route's template
        # (the HTTP metrics middleware sits behind this one).
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            match = _STATUS.fullmatch(scope["path"])
            if match is not None:
                started = time.perf_counter()
                status = 500
                try:
                    status = await self._status(scope, match[1], match[2], send)
                finally:
                    self.metrics.observe(ROUTE, "GET", status, time.perf_counter() - started)
                return
        await self.app(scope, receive, send)

    async def _status(self, scope: Scope, model_id: str, rid: str, send: Send) -> int:
        """Answers one poll; returns the HTTP status it sent."""
        ctx = self.ctx
        authorization = host = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        try:
            token = await self._token(authorization)
            base = ctx.settings.server.public_url or ""
            if not base:  # what Starlette's request.base_url gives, without building a URL
                if host is None:
                    server = scope.get("server") or ("127.0.0.1", 80)
                    host = f"{server[0]}:{server[1]}"
                base = f"{scope.get('scheme', 'http')}://{host}{scope.get('root_path', '')}"
            base = base.rstrip("/")
            if self.store.inline_reads:
                body = status_of(ctx, self.store, model_id, rid, token, base)
            else:
                body = await run_in_threadpool(
                    status_of, ctx, self.store, model_id, rid, token, base
                )
            await _json(send, 200, body)
            return 200
        except VidqError as exc:
            headers: list[tuple[bytes, bytes]] = []
            if isinstance(exc, ServiceUnavailable):
                headers.append((b"retry-after", b"5"))
            if exc.http_status == 401:
                headers.append((b"www-authenticate", b"Bearer"))
            await _json(send, exc.http_status, {"detail": exc.detail}, headers)
            return exc.http_status

    async def _token(self, header: str | None) -> Token:
        token = parse_authorization(header)
        auth = self.ctx.auth
        hit = auth.cached(token)
        if hit is None and self.store.inline_reads:
            hit = auth.lookup(token)
        elif hit is None:
            hit = await run_in_threadpool(auth.lookup, token)
        return require_user_role(hit)


async def _json(
    send: Send, status: int, body: Any, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})
