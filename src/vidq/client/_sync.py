"""The blocking client: ``Client`` and ``RequestHandle`` perform the steps of the core's
operations (``_core.py``) with httpx.Client and time.sleep. Nothing else lives here."""

from __future__ import annotations

import time
from typing import Any, TypeVar

import httpx

from vidq.client import _core

T = TypeVar("T")


class Client(_core.ClientApi["RequestHandle", httpx.Client, httpx.BaseTransport]):
    """A vidq API client that blocks (on httpx.Client). Its constructor, retry rules and
    methods are ``ClientApi``'s; ``AsyncClient`` has the same methods as coroutines."""

    def _connect(self, **options: Any) -> httpx.Client:
        return httpx.Client(**options)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the client's connections."""
        self._http.close()
        self._downloads.close()

    def _handle(self, request_id: str, model_id: str) -> RequestHandle:
        return RequestHandle(self, request_id, model_id)

    def _drive(self, op: _core.Op[T]) -> T:
        """Run an operation: make the HTTP exchanges and the pauses it asks for."""
        reply: _core.Reply = None
        while not isinstance(step := _core.advance(op, reply), _core.Done):
            if isinstance(step, _core.Sleep):
                time.sleep(step.seconds)
                reply = None
            else:
                reply = self._send(step)
        return step.value

    def _send(self, send: _core.Send) -> httpx.Response | httpx.TransportError:
        http = self._http if send.api else self._downloads
        try:
            return http.request(send.method, send.url, **send.options)
        except httpx.TransportError as exc:
            return exc


class RequestHandle(_core.HandleApi[Client]):
    """One submitted request (blocking)."""

    def _drive(self, op: _core.Op[T]) -> T:
        return self.client._drive(op)
