"""vidq: a self-hosted video-generation queue service.

The package's public API is the client SDK (``vidq.Client``, ``vidq.AsyncClient``); it
imports only httpx, never the server's dependencies, and only when one of its names is
first used.
"""

# ruff: noqa: F405 (__all__ names what the star import above gives type checkers)
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names of __all__, for type checkers
    from vidq.client import *  # noqa: F403

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


def __getattr__(name: str) -> Any:
    """The SDK's names, imported from ``vidq.client`` (and httpx) on first use: a server,
    worker or engine process that never uses the SDK does not pay for its imports."""
    if name in __all__:
        import vidq.client

        return getattr(vidq.client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
