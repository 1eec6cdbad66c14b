"""vidq: a self-hosted video-generation queue service.

The package's public API is the client SDK (``vidq.Client``, ``vidq.AsyncClient``); it
imports only httpx, never the server's dependencies.
"""

from vidq.client import (
    APIError,
    AsyncClient,
    AsyncRequestHandle,
    AuthenticationError,
    BadRequestError,
    Client,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimited,
    RequestCancelled,
    RequestFailed,
    RequestHandle,
    RetryPolicy,
    ServerError,
    ServiceUnavailableError,
    Status,
    TransportError,
    ValidationError,
    VidqClientError,
    WaitTimeout,
    as_input,
    encode_file,
    verify_webhook,
)

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
__version__ = "0.1.0"
