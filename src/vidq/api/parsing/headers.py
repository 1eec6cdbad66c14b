"""The headers a request is read with, each one refused by name (422) when malformed:

- ``Idempotency-Key`` (both dialects' submits): a submit retried with the same key answers
  the request the first one created, marked ``Idempotent-Replayed: true``;
- ``X-Request-Timeout`` (both dialects: finished within N s) and fal-client's
  ``X-Fal-Request-Timeout`` (fal dialect: started within N s), which with the server's
  ``max_queue_seconds`` make a submit's ``Deadline``;
- ``x-pipelet-output: binary`` (native dialect): the result as a signed download URL
  rather than base64;
- ``X-Fal-Queue-Priority: normal|low`` (fal dialect): ``low`` lowers the body's priority
  by ``LOW_PRIORITY_DROP``;
- ``X-Fal-Object-Lifecycle-Preference`` / ``X-Fal-Object-Lifecycle`` (fal uploads): the
  upload's expiry, ``expiration_duration_seconds``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

from vidq.config import Settings
from vidq.errors import InvalidInput
from vidq.jobs import PRIORITY_MIN

IDEMPOTENCY_KEY_HEADER = "idempotency-key"
IDEMPOTENCY_KEY_MAX = 200
REPLAYED_HEADER = "Idempotent-Replayed"  # "true" on an answer that replays an earlier submit


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    """The ``Idempotency-Key`` header's value (None if absent); 422 if malformed."""
    value = headers.get(IDEMPOTENCY_KEY_HEADER)
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > IDEMPOTENCY_KEY_MAX or not key.isprintable():
        raise InvalidInput(
            "Idempotency-Key",
            f"must be 1-{IDEMPOTENCY_KEY_MAX} printable characters",
        )
    return key


@dataclasses.dataclass(frozen=True, slots=True)
class Deadline:
    """A submit's deadlines, in seconds after it (None: none)."""

    finish_s: float | None = None  # X-Request-Timeout: ends FAILED 'deadline exceeded'
    start_s: float | None = None  # fal's start timeout, VIDQ_MAX_QUEUE_SECONDS
    start_error: str | None = None  # what a job not started by then ends with


REQUEST_TIMEOUT_HEADER = "x-request-timeout"  # both dialects: finished within N s
FAL_START_TIMEOUT_HEADER = "x-fal-request-timeout"  # fal-client's ``start_timeout``
DEADLINE_EXCEEDED = "deadline exceeded"
_MAX_TIMEOUT_S = 30 * 86400.0


def deadline(headers: Mapping[str, str], settings: Settings, *, fal: bool) -> Deadline:
    """The deadlines of a submit: its ``X-Request-Timeout`` header, on the fal dialect
    also fal-client's start timeout (``X-Fal-Request-Timeout``: time until it starts, as
    fal documents it), and the server's ``max_queue_seconds``. 422 naming a bad header."""
    finish = _seconds(headers, REQUEST_TIMEOUT_HEADER)
    starts: list[tuple[float, str]] = []
    fal_start = _seconds(headers, FAL_START_TIMEOUT_HEADER) if fal else None
    if fal_start is not None:
        starts.append((fal_start, DEADLINE_EXCEEDED))
    queue_s = settings.limits.max_queue_seconds
    if queue_s is not None:
        starts.append((queue_s, f"not started within {queue_s:g} s"))
    start_s, start_error = min(starts) if starts else (None, None)
    return Deadline(finish, start_s, start_error)


def _seconds(headers: Mapping[str, str], name: str) -> float | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        value = float(raw.strip())
    except ValueError:
        value = math.nan
    if not (0 < value <= _MAX_TIMEOUT_S):  # also NaN and infinities
        raise InvalidInput(
            name,
            f"must be a number of seconds above 0 and at most {_MAX_TIMEOUT_S:g}",
            loc=[name],
            where="header",
        )
    return value


BINARY_HEADER = "x-pipelet-output"


def binary_output(headers: Mapping[str, str]) -> bool:
    """Whether a native submit asks for its result as a URL (``x-pipelet-output: binary``)."""
    return headers.get(BINARY_HEADER, "").strip().lower() == "binary"


FAL_PRIORITY_HEADER = "x-fal-queue-priority"
LOW_PRIORITY_DROP = 500


def fal_priority(headers: Mapping[str, str], requested: int) -> int:
    """A fal submit's priority: ``X-Fal-Queue-Priority: low`` lowers the body's."""
    value = (headers.get(FAL_PRIORITY_HEADER) or "normal").strip().lower()
    if value == "normal":
        return requested
    if value == "low":
        return max(PRIORITY_MIN, requested - LOW_PRIORITY_DROP)
    raise InvalidInput("X-Fal-Queue-Priority", "must be 'normal' or 'low'")


LIFECYCLE_HEADERS = ("x-fal-object-lifecycle-preference", "x-fal-object-lifecycle")


def upload_expiry(headers: Mapping[str, str], max_s: float) -> float | None:
    """The seconds an upload asks to be kept (fal's lifecycle headers), never more than
    ``max_s`` (the operator's ``VIDQ_UPLOAD_TTL``; None: that TTL)."""
    for header in LIFECYCLE_HEADERS:
        raw = headers.get(header)
        if raw is None:
            continue
        try:
            value = json.loads(raw).get("expiration_duration_seconds")
        except (ValueError, AttributeError):
            raise InvalidInput(header, "must be a JSON object") from None
        if value is None:
            return None
        if (
            isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value <= 0
        ):  # fmt: skip
            raise InvalidInput(header, "expiration_duration_seconds must be a positive number")
        return min(float(value), max_s)
    return None
