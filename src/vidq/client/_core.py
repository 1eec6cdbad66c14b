"""What the sync and async clients share: status parsing, the retry policy, request
headers, and encoding local files for a request. Only httpx and the standard library."""

from __future__ import annotations

import base64
import dataclasses
import mimetypes
import os
import random
import uuid
from pathlib import Path
from typing import Any

import httpx

from vidq.client.errors import APIError, error_for

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
BINARY_HEADER = "x-pipelet-output"
USER_AGENT = "vidq-client/0.1"


@dataclasses.dataclass(frozen=True, slots=True)
class Status:
    """A request's state as ``GET /requests/{id}`` reports it."""

    request_id: str
    model_id: str
    status: str  # IN_QUEUE, IN_PROGRESS, COMPLETED, FAILED, CANCELLED
    queue_position: int
    done: int  # progress steps done ...
    total: int  # ... of this many (0 until the engine reports)
    eta_seconds: float | None
    error: str | None
    error_type: str | None
    raw: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Status:
        progress = body.get("progress") or {}
        return cls(
            request_id=str(body["request_id"]),
            model_id=str(body.get("model_id", "")),
            status=str(body["status"]),
            queue_position=int(body.get("queue_position") or 0),
            done=int(progress.get("done") or 0),
            total=int(progress.get("total") or 0),
            eta_seconds=body.get("eta_seconds"),
            error=body.get("error"),
            error_type=body.get("error_type"),
            raw=body,
        )


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's ``Retry-After`` wins when longer."""

    max_retries: int = 4
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay(self, attempt: int, response: httpx.Response | None = None) -> float:
        wait: float = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        wait *= random.uniform(0.75, 1.25)
        if response is not None:
            after = response.headers.get("retry-after", "")
            if after.isdigit():
                wait = max(wait, min(float(after), self.max_backoff_s))
        return wait


def retryable(exc: Exception | None, response: httpx.Response | None, *, replay_safe: bool) -> bool:
    """Whether one failed try may be repeated. A request that may have reached the server
    (``replay_safe`` false: a submit without an idempotency key) is repeated only when it
    surely did not: the connection was never made, or the server answered 429."""
    if response is not None:
        if response.status_code == 429:
            return True
        return replay_safe and response.status_code in RETRY_STATUSES
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return True
    return replay_safe and isinstance(exc, httpx.TransportError)


def raise_for(response: httpx.Response) -> None:
    """Raise the typed APIError of an error response."""
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = {"detail": response.text[:500] or response.reason_phrase}
    raise error_for(response.status_code, body)


def new_idempotency_key() -> str:
    return f"vidq-{uuid.uuid4().hex}"


def submit_headers(binary_output: bool, idempotency_key: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if binary_output:
        headers[BINARY_HEADER] = "binary"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def client_settings(url: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    """The base URL and default headers: arguments first, then VIDQ_URL / VIDQ_TOKEN."""
    base = (url or os.environ.get("VIDQ_URL") or DEFAULT_URL).rstrip("/")
    token = token or os.environ.get("VIDQ_TOKEN")
    headers = {"User-Agent": USER_AGENT}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return base, headers


def decode_video(result: dict[str, Any]) -> tuple[bytes | None, str | None]:
    """From a native result: the MP4 bytes (base64 form) or the URL to fetch (binary form)."""
    video = result.get("video") or {}
    value = video.get("data_uri") or video.get("url") or ""
    if value.startswith(("http://", "https://")):
        return None, value
    if value.startswith("data:"):
        value = value.split(",", 1)[1]
    return base64.b64decode(value), None


# --- encoding local files ---------------------------------------------------------------------
_MEDIA_TYPES = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".flac": "audio/flac", ".ogg": "audio/ogg",
    ".m4a": "audio/mp4", ".mp4": "video/mp4", ".mov": "video/quicktime", ".webm": "video/webm",
}  # fmt: skip


def encode_file(path: str | os.PathLike[str]) -> str:
    """A local image, audio or video file as a ``data:<type>;base64,...`` URI."""
    p = Path(path)
    kind = _MEDIA_TYPES.get(p.suffix.lower()) or mimetypes.guess_type(p.name)[0]
    data = p.read_bytes()
    return f"data:{kind or 'application/octet-stream'};base64,{base64.b64encode(data).decode()}"


def as_input(value: str | os.PathLike[str]) -> str:
    """What to send for a media input: URLs and data: URIs as they are, files encoded."""
    text = os.fspath(value)
    if text.startswith(("http://", "https://", "data:")):
        return text
    return encode_file(text)


__all__ = [
    "APIError",
    "RetryPolicy",
    "Status",
    "as_input",
    "encode_file",
]
