"""The one exception tree of vidq.

Every error a user can cause maps to exactly one HTTP status; the API turns a
``VidqError`` into ``{"detail": ...}`` with ``http_status``. A class docstring is the
default message.

    VidqError                      (500) base; never raised directly
    ├── UserError                  (400) the request is wrong
    │   ├── InvalidRequestId       (400) request id is not a number
    │   ├── InvalidInput           (422) an input field is invalid; names the field
    │   │   └── UrlUnreachable     (422) an input URL's server could not be reached (a
    │   │                                worker fetching a LoRA retries the attempt)
    │   ├── PayloadTooLarge        (413) body or decoded input over its limit
    │   ├── Unauthorized           (401) missing or unknown token
    │   ├── Forbidden              (403) the token's role may not do this (worker tokens)
    │   ├── NotFound               (404) unknown model, request, blob — or not yours
    │   ├── Conflict               (409) the job is not in a state that allows this
    │   ├── Gone                   (410) the result expired (retention) and was deleted
    │   └── RateLimited            (429) a limit of the token; names it, says when to retry
    ├── ServiceUnavailable         (503) a dependency is down; retry later
    │   ├── StoreUnavailable       (503) the job store cannot be reached
    │   └── StorageUnavailable     (503) the object storage cannot be reached
    │       └── StorageFull        (507) the object storage has no room (ENOSPC, quota)
    ├── CannotStart                (---) a process cannot start as configured (the CLI says
    │                                    why and exits 2: no data folder, missing weights...)
    ├── LeaseLost                  (---) a worker's fenced update changed no row
    └── EngineError                (---) an engine failed one attempt
        ├── EngineCrashed          (---) the engine child process died
        ├── EngineUnavailable      (---) the engine cannot run here (weights, GPU)
        └── InvalidLora            (---) a request's LoRA does not fit the model (final)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Pydantic starts the message of an error raised in a validator with its kind; a person
# reading "width must be a multiple of 16" needs no "Value error, " before it.
_PYDANTIC_PREFIXES = ("Value error, ", "Assertion failed, ")


def plain_message(msg: str) -> str:
    """A validation error's ``msg`` without pydantic's prefix (its ``type`` keeps the kind)."""
    for prefix in _PYDANTIC_PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :]
    return msg


class VidqError(Exception):
    """Internal error."""

    http_status = 500

    def __init__(self, message: str | None = None, **context: Any) -> None:
        self.message = message or (self.__doc__ or type(self).__name__).strip()
        self.context = context
        super().__init__(self.message)

    @property
    def detail(self) -> Any:
        """What the API sends as ``detail``."""
        return self.message


class UserError(VidqError):
    """Bad request."""

    http_status = 400


class InvalidRequestId(UserError):
    """Invalid requestId format: it must be a decimal number."""

    http_status = 400


class InvalidInput(UserError):
    """Invalid input."""

    http_status = 422

    def __init__(
        self,
        field: str,
        message: str,
        *,
        kind: str = "value_error",
        loc: Sequence[str | int] | None = None,
        where: str = "body",
    ) -> None:
        self.field = field
        self.kind = kind
        self.where = where  # "body", or "header" for a bad request header
        # Where in the body: ``loc`` when given (keys may hold dots, list items are ints),
        # else the dotted ``field``; empty for the body as a whole.
        self.loc: list[str | int] = (
            list(loc) if loc is not None else [*filter(None, field.split("."))]
        )
        super().__init__(f"{field}: {message}" if field else message)
        self.reason = message

    @property
    def detail(self) -> Any:
        # The shape FastAPI uses for validation errors, so clients parse one format.
        return [{"loc": [self.where, *self.loc], "msg": self.reason, "type": self.kind}]


class UrlUnreachable(InvalidInput):
    """An input URL's server could not be reached, timed out or answered 5xx: the API
    answers 422 as for any bad URL; a worker fetching a LoRA retries the attempt."""


class PayloadTooLarge(UserError):
    """Request body too large."""

    http_status = 413


class Unauthorized(UserError):
    """Missing or unknown token: send 'Authorization: Bearer <token>'."""

    http_status = 401


class Forbidden(UserError):
    """This token may not do this."""

    http_status = 403

    def __init__(self, message: str | None = None, *, loc: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.loc = list(loc) if loc else None

    @property
    def detail(self) -> Any:
        if self.loc is None:
            return self.message
        return [{"loc": self.loc, "msg": self.message, "type": "forbidden"}]


class NotFound(UserError):
    """Not found."""

    http_status = 404


class Conflict(UserError):
    """The request is not in a state that allows this."""

    http_status = 409


class Gone(UserError):
    """The result has expired and was deleted."""

    http_status = 410


class RateLimited(UserError):
    """Too many requests for this token's limits."""

    http_status = 429

    def __init__(self, message: str, *, limit: str, value: int, retry_after: float) -> None:
        super().__init__(message)
        self.limit = limit  # the limit's name, as `vidq token update` spells it
        self.value = value  # its value for this token
        self.retry_after = max(1, math.ceil(retry_after))  # seconds, for Retry-After

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``detail`` says it in words (fal-client shows that), the
        other keys are for programs."""
        return {
            "detail": self.message,
            "error_type": "rate_limited",
            "limit": self.limit,
            "value": self.value,
            "retry_after": self.retry_after,
        }


class ServiceUnavailable(VidqError):
    """Service temporarily unavailable; retry later."""

    http_status = 503


class StoreUnavailable(ServiceUnavailable):
    """The job store is unreachable; retry later."""


class StorageUnavailable(ServiceUnavailable):
    """The object storage is unreachable; retry later."""


class StorageFull(StorageUnavailable):
    """The object storage is full; nothing was stored. Retry later."""

    http_status = 507


class CannotStart(VidqError):
    """This process cannot start as configured."""

    @property
    def option(self) -> str | None:
        """The command-line option at fault, if one is (``--pools``)."""
        value = self.context.get("option")
        return str(value) if value is not None else None


class LeaseLost(VidqError):
    """The worker no longer holds the job's lease."""


class TokenRefused(VidqError):
    """The API refused a remote worker's token (revoked, unknown, or not a worker token)."""


class EngineError(VidqError):
    """The engine failed to generate the video."""


class EngineCrashed(EngineError):
    """The engine process crashed."""


class EngineUnavailable(EngineError):
    """The engine cannot run on this worker."""


class InvalidLora(EngineError):
    """A LoRA of the request is not a LoRA for this model (final: not retried)."""
