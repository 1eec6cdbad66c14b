"""The client's exception tree. Every API error status maps to one class; ``detail`` is
the server's JSON ``detail`` (a string, or FastAPI's list of ``{loc, msg, type}``).

    VidqClientError                 base
    ├── TransportError              the server could not be reached (after retries)
    ├── APIError                    the server answered an error status
    │   ├── BadRequestError         400 (e.g. malformed request id)
    │   ├── AuthenticationError     401 missing or unknown token
    │   ├── NotFoundError           404 unknown model or request (or not yours)
    │   ├── ConflictError           409 not in a state that allows this
    │   ├── PayloadTooLargeError    413 body over the server's limit
    │   ├── ValidationError         422 an input is invalid; ``errors`` names the fields
    │   ├── RateLimited             429 over a limit of the token (``retry_after``, ``limit``)
    │   ├── ServiceUnavailableError 502/503/504 (retried first)
    │   └── ServerError             any other 5xx
    ├── RequestFailed               the request finished FAILED (``error``, ``error_type``)
    ├── RequestCancelled            the request was cancelled
    └── WaitTimeout                 ``wait(timeout=...)`` ran out (also a TimeoutError)
"""

from __future__ import annotations

from typing import Any


class VidqClientError(Exception):
    """Base of every error the vidq client raises."""


class TransportError(VidqClientError):
    """The server could not be reached."""


class APIError(VidqClientError):
    """The server answered with an error status."""

    def __init__(self, status_code: int, detail: Any, body: Any = None) -> None:
        self.status_code = status_code
        self.detail = detail
        self.body = body
        super().__init__(f"HTTP {status_code}: {_text(detail)}")


class BadRequestError(APIError):
    """400."""


class AuthenticationError(APIError):
    """401: missing or unknown token."""


class NotFoundError(APIError):
    """404: unknown model or request, or another user's."""


class ConflictError(APIError):
    """409: the request is not in a state that allows this."""


class PayloadTooLargeError(APIError):
    """413: the body is over the server's limit."""


class ValidationError(APIError):
    """422: an input is invalid."""

    @property
    def errors(self) -> list[dict[str, Any]]:
        """FastAPI-style ``[{loc, msg, type}]``, whatever shape the detail had."""
        if isinstance(self.detail, list):
            return [e for e in self.detail if isinstance(e, dict)]
        return [{"loc": ["body"], "msg": _text(self.detail), "type": "value_error"}]


class RateLimited(APIError):
    """429: over a limit of the token (``limit`` names it, ``value`` is its value);
    ``retry_after`` is the server's Retry-After in seconds (None if it sent none)."""

    def __init__(
        self, status_code: int, detail: Any, body: Any = None, retry_after: float | None = None
    ) -> None:
        super().__init__(status_code, detail, body)
        self.retry_after = retry_after
        self.limit = body.get("limit") if isinstance(body, dict) else None
        self.value = body.get("value") if isinstance(body, dict) else None


class ServiceUnavailableError(APIError):
    """502/503/504: the service (or a dependency) is temporarily down."""


class ServerError(APIError):
    """Any other 5xx."""


class RequestFailed(VidqClientError):
    """The request finished FAILED."""

    def __init__(self, request_id: str, error: str, error_type: str | None) -> None:
        self.request_id = request_id
        self.error = error
        self.error_type = error_type
        super().__init__(f"request {request_id} failed: {error}")


class RequestCancelled(VidqClientError):
    """The request was cancelled."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        super().__init__(f"request {request_id} was cancelled")


class WaitTimeout(VidqClientError, TimeoutError):
    """Waiting for the request ran out of time."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimited,
    502: ServiceUnavailableError,
    503: ServiceUnavailableError,
    504: ServiceUnavailableError,
}


def error_for(status_code: int, body: Any, retry_after: float | None = None) -> APIError:
    """The exception for an error response (``retry_after``: its Retry-After, seconds)."""
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if status_code == 429:
        return RateLimited(status_code, detail, body, retry_after)
    cls = _BY_STATUS.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIError
    return cls(status_code, detail, body)


def _text(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for e in detail:
            if isinstance(e, dict):
                loc = ".".join(str(x) for x in e.get("loc", []) if x != "body")
                parts.append(f"{loc}: {e.get('msg', '')}" if loc else str(e.get("msg", "")))
            else:
                parts.append(str(e))
        return "; ".join(parts)
    return str(detail)
