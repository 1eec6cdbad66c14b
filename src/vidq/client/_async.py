"""The asyncio client: ``AsyncClient`` and ``AsyncRequestHandle`` (the same API as
``Client``, awaitable)."""

from __future__ import annotations

import asyncio
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from vidq.client import _core
from vidq.client._core import RetryPolicy, Status
from vidq.client._sync import _raise_unfinished, _write
from vidq.client.errors import TransportError, WaitTimeout


class AsyncClient:
    """A vidq API client (asyncio). ``url``/``token`` default to ``VIDQ_URL``/``VIDQ_TOKEN``.

    Reads and cancels are retried on 429/502/503/504 and connection errors with backoff;
    a submit is retried only under an ``Idempotency-Key`` (one is generated per submit
    unless ``idempotency_key`` is given or ``auto_idempotency`` is off).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        auto_idempotency: bool = True,
        verify: bool | str | ssl.SSLContext = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, headers = _core.client_settings(url, token)
        if isinstance(verify, str):  # a CA bundle file
            verify = ssl.create_default_context(cafile=verify)
        self.retry = retry or RetryPolicy()
        self.auto_idempotency = auto_idempotency
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=timeout, verify=verify, transport=transport
        )
        self._downloads = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()
        await self._downloads.aclose()

    # -- transport ---------------------------------------------------------------------
    async def request(
        self, method: str, path: str, *, replay_safe: bool = True, **kwargs: Any
    ) -> httpx.Response:
        """One API call with the retry policy; raises the typed error of a 4xx/5xx."""
        attempt = 0
        while True:
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            failed = error is not None or (
                response is not None and response.status_code in _core.RETRY_STATUSES
            )
            if not failed or attempt >= self.retry.max_retries:
                break
            if not _core.retryable(error, response, replay_safe=replay_safe):
                break
            await asyncio.sleep(self.retry.delay(attempt, response))
            attempt += 1
        if response is None:
            raise TransportError(f"cannot reach {self.url}: {type(error).__name__}") from error
        _core.raise_for(response)
        return response

    # -- the API -----------------------------------------------------------------------
    async def submit(
        self,
        model_id: str,
        inputs: dict[str, Any],
        binary_output: bool = False,
        *,
        idempotency_key: str | None = None,
        webhook_url: str | None = None,
    ) -> AsyncRequestHandle:
        """Queue a request; returns its handle."""
        key = idempotency_key or (_core.new_idempotency_key() if self.auto_idempotency else None)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        response = await self.request(
            "POST",
            f"/queue/{model_id}",
            json=inputs,
            params=params,
            headers=_core.submit_headers(binary_output, key),
            replay_safe=key is not None,
        )
        body = response.json()
        return AsyncRequestHandle(self, str(body["request_id"]), model_id)

    async def run(
        self,
        model_id: str,
        inputs: dict[str, Any],
        binary_output: bool = False,
        *,
        on_update: Callable[[Status], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Submit, wait, and return the result (``{"video": {"data_uri": ...}}``)."""
        handle = await self.submit(model_id, inputs, binary_output)
        await handle.wait(on_update=on_update, timeout=timeout)
        return await handle.result()

    async def get_handle(
        self, request_id: str | int, model_id: str | None = None
    ) -> AsyncRequestHandle:
        """A handle for an existing request; the model is looked up if not given."""
        rid = str(request_id)
        if model_id is None:
            model_id = (await self.request("GET", f"/requests/{rid}")).json()["model_id"]
        return AsyncRequestHandle(self, rid, str(model_id))

    async def requests(self, limit: int = 20, before: int | None = None) -> dict[str, Any]:
        """A page of your requests, newest first: ``{"requests": [...], "next_before"}``."""
        params: dict[str, Any] = {"limit": limit}
        if before is not None:
            params["before"] = before
        body: dict[str, Any] = (await self.request("GET", "/requests", params=params)).json()
        return body

    async def models(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = (await self.request("GET", "/models")).json()["models"]
        return models

    async def webhook_secret(self) -> str:
        """The secret that signs your webhooks."""
        return str((await self.request("GET", "/webhooks/secret")).json()["secret"])

    async def fetch(self, url: str) -> bytes:
        """GET a signed download URL (no credentials are sent with it)."""
        try:
            response = await self._downloads.get(url)
        except httpx.TransportError as exc:
            raise TransportError(f"cannot download: {type(exc).__name__}") from exc
        _core.raise_for(response)
        return response.content


class AsyncRequestHandle:
    """One submitted request."""

    def __init__(self, client: AsyncClient, request_id: str, model_id: str) -> None:
        self.client = client
        self.request_id = request_id
        self.model_id = model_id

    def __repr__(self) -> str:
        return f"AsyncRequestHandle(request_id={self.request_id!r}, model_id={self.model_id!r})"

    @property
    def _path(self) -> str:
        return f"/queue/{self.model_id}/requests/{self.request_id}"

    async def status(self) -> Status:
        """The current status, with queue position, progress and ETA."""
        response = await self.client.request("GET", f"/requests/{self.request_id}")
        return Status.from_json(response.json())

    async def wait(
        self,
        on_update: Callable[[Status], None] | None = None,
        *,
        poll_interval: float = 0.5,
        timeout: float | None = None,
    ) -> Status:
        """Poll until the request is finished; ``on_update`` sees every poll."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.status()
            if on_update is not None:
                on_update(status)
            if status.finished:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(f"request {self.request_id} is still {status.status}")
            await asyncio.sleep(poll_interval)

    async def result(self) -> dict[str, Any]:
        """The native result; RequestFailed / RequestCancelled if it did not complete."""
        _raise_unfinished(await self.status())
        body: dict[str, Any] = (await self.client.request("GET", self._path)).json()
        return body

    async def cancel(self) -> None:
        """Cancel while queued (ConflictError once it started or finished)."""
        await self.client.request("PUT", f"{self._path}/cancel")

    async def download(self, path: str | os.PathLike[str]) -> Path:
        """Write the finished video to ``path`` (atomically); returns the path."""
        data, url = _core.decode_video(await self.result())
        if data is None:
            assert url is not None
            data = await self.client.fetch(url)
        return _write(Path(path), data)
