"""The vidq client SDK: ``Client`` / ``AsyncClient`` on httpx. It imports nothing of the
server (no FastAPI, SQLAlchemy, PyAV, Pillow, NumPy, torch)."""

from __future__ import annotations

from vidq.client._async import AsyncClient, AsyncRequestHandle
from vidq.client._core import RetryPolicy, Status
from vidq.client._files import as_input, encode_file
from vidq.client._sync import Client, RequestHandle
from vidq.client.errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimited,
    RequestCancelled,
    RequestFailed,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    ValidationError,
    VidqClientError,
    WaitTimeout,
)
from vidq.client.webhooks import verify_webhook

__all__ = [
    "APIError",
    "AsyncClient",
    "AsyncRequestHandle",
    "AuthenticationError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "NotFoundError",
    "PayloadTooLargeError",
    "RateLimited",
    "RequestCancelled",
    "RequestFailed",
    "RequestHandle",
    "RetryPolicy",
    "ServerError",
    "ServiceUnavailableError",
    "Status",
    "TransportError",
    "ValidationError",
    "VidqClientError",
    "WaitTimeout",
    "as_input",
    "encode_file",
    "verify_webhook",
]
