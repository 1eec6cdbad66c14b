"""Object storage: the BlobStore protocol and its adapters, chosen by URL."""

from __future__ import annotations

import secrets
from pathlib import Path

from vidq.blobs.base import BlobStore

__all__ = ["BlobStore", "load_secret", "open_storage"]


def load_secret(data_dir: Path, configured: str | None) -> bytes:
    """The HMAC key for signed URLs: configured, else generated once in the data dir."""
    if configured:
        return configured.encode()
    path = data_dir / "secret.key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def open_storage(url: str, *, secret: bytes, bucket: str = "vidq") -> BlobStore:
    """The adapter for a storage URL: ``file:///path`` or ``s3://bucket``."""
    if url.startswith("file://"):
        from vidq.blobs.local import LocalBlobStore

        return LocalBlobStore(Path(url.removeprefix("file://")), secret, bucket)
    if url.startswith("s3://"):
        from vidq.blobs.s3 import S3BlobStore  # type: ignore[import-not-found,unused-ignore]

        store: BlobStore = S3BlobStore.from_url(url)
        return store
    raise ValueError(f"unsupported storage URL scheme: {url.split(':', 1)[0]!r}")
