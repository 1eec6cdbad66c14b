"""The asyncio client: ``AsyncClient`` and ``AsyncRequestHandle`` perform the steps of the
core's operations (``_core.py``) with httpx.AsyncClient and asyncio.sleep. Nothing else
lives here."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

import httpx

from vidq.client import _core

T = TypeVar("T")


class AsyncClient(
    _core.ClientApi["AsyncRequestHandle", httpx.AsyncClient, httpx.AsyncBaseTransport]
):
    """A vidq API client for asyncio (on httpx.AsyncClient). Its constructor, retry rules
    and methods are ``ClientApi``'s, as coroutines; ``Client`` has the same ones, blocking."""

    def _connect(self, **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(**options)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client's connections."""
        await self._http.aclose()
        await self._downloads.aclose()

    def _handle(self, request_id: str, model_id: str) -> AsyncRequestHandle:
        return AsyncRequestHandle(self, request_id, model_id)

    async def _drive(self, op: _core.Op[T]) -> T:
        """Run an operation: make the HTTP exchanges and the pauses it asks for."""
        reply: _core.Reply = None
        while not isinstance(step := _core.advance(op, reply), _core.Done):
            if isinstance(step, _core.Sleep):
                await asyncio.sleep(step.seconds)
                reply = None
            else:
                reply = await self._send(step)
        return step.value

    async def _send(self, send: _core.Send) -> httpx.Response | httpx.TransportError:
        http = self._http if send.api else self._downloads
        try:
            return await http.request(send.method, send.url, **send.options)
        except httpx.TransportError as exc:
            return exc


class AsyncRequestHandle(_core.HandleApi[AsyncClient]):
    """One submitted request (asyncio)."""

    async def _drive(self, op: _core.Op[T]) -> T:
        return await self.client._drive(op)
