"""``RequestGuard``: the middleware every request's body passes before any route (its
size limit, its content type)."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_JSON_ALIASES = (b"application/x-www-form-urlencoded", b"text/plain", b"")


_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


class RequestGuard:
    """Rejects bodies over ``max_bytes`` with 413, by Content-Length or while streaming,
    and reads bodies as JSON whatever the client claimed: ``curl -d`` (the spec's examples)
    sends form encoding, and every body this API takes is JSON."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            await self.app(scope, receive, send)
            return
        headers = self._headers(scope)
        if headers is None:
            await _too_large(self.max_bytes, send)
            return
        body = _StreamLimit(receive, send, self.max_bytes)
        try:
            await self.app({**scope, "headers": headers}, body.receive, body.send)
        except Exception:
            if not body.over:
                raise
        if body.over and not body.started:
            await _too_large(self.max_bytes, send)

    def _headers(self, scope: Scope) -> list[tuple[bytes, bytes]] | None:
        """The headers with JSON as the content type; None if Content-Length is too big."""
        headers = []
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                return None
            if name == b"content-type" and value.split(b";")[0].strip() in _JSON_ALIASES:
                value = b"application/json"
            headers.append((name, value))
        return headers


class _StreamLimit:
    """Counts a streamed body; past the limit the app sees a client disconnect and its
    answer is dropped, so that the guard can answer 413 instead."""

    def __init__(self, receive: Receive, send: Send, max_bytes: int) -> None:
        self._receive, self._send, self.max_bytes = receive, send, max_bytes
        self.seen = 0
        self.over = False
        self.started = False

    async def receive(self) -> Message:
        if self.over:
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.max_bytes:
                self.over = True
                return {"type": "http.disconnect"}
        return message

    async def send(self, message: Message) -> None:
        if self.over:
            return
        self.started = self.started or message["type"] == "http.response.start"
        await self._send(message)


async def _too_large(max_bytes: int, send: Send) -> None:
    body = JSONResponse(
        {"detail": f"request body is over the limit of {max_bytes} bytes"}, status_code=413
    )
    await send({"type": "http.response.start", "status": 413, "headers": body.raw_headers})
    await send({"type": "http.response.body", "body": body.body})
