"""The BlobStore protocol: where inputs and outputs live.

Adapters (``local``, ``s3``) translate their errors into ``StorageUnavailable``; a missing
key is ``NotFound``. Keys are ``inputs/<user>/...`` and ``outputs/<tier>/...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class WorkerBlobs(Protocol):
    """The blob store as a local worker's attempts use it (``worker/local.py``).
    ``BlobStore`` has it all; a remote worker reaches none of it (the API hands its
    attempts signed URLs)."""

    def download(self, key: str, path: Path) -> None:
        """Copy the object to a local file."""

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """Store a local file under a key (overwrites)."""

    def keys(self, prefix: str) -> list[str]:
        """Keys under a prefix (for operators and tests: orphan checks)."""

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""


class BlobStore(WorkerBlobs, Protocol):
    """Object storage for inputs and outputs."""

    bucket: str

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store bytes under a key (overwrites)."""

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object's bytes; NotFound if missing, PayloadTooLarge over ``max_bytes``."""

    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    def signed_url(self, key: str, ttl_s: int, base_url: str) -> str:
        """A URL that downloads the object without credentials until it expires.
        ``base_url`` is the API's public base (used by stores the API serves itself)."""

    def uri(self, key: str) -> str:
        """``s3://bucket/key``, as the spec's ``result_uri``."""

    def check(self) -> None:
        """Raise StorageUnavailable if the store cannot be reached."""
