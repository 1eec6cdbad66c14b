"""Local-folder BlobStore with HMAC-signed, expiring download URLs served by the API."""

from __future__ import annotations

import errno
import hashlib
import hmac
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from vidq.errors import NotFound, PayloadTooLarge, StorageFull, StorageUnavailable

_FULL = (errno.ENOSPC, errno.EDQUOT)


def _write_error(exc: OSError) -> StorageUnavailable:
    if exc.errno in _FULL:
        return StorageFull(f"cannot write object: the blob folder is full ({exc.strerror})")
    return StorageUnavailable(f"cannot write object: {exc.strerror}")


class LocalBlobStore:
    """Objects are files under ``root/<bucket>/<key>``; writes are atomic renames."""

    def __init__(self, root: Path, secret: bytes, bucket: str = "vidq") -> None:
        self.root = root
        self.bucket = bucket
        self._secret = secret
        (root / bucket).mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        base = (self.root / self.bucket).resolve()
        path = (base / key).resolve()
        if not key or base not in path.parents:
            raise NotFound("No such object.")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())

        self._put(key, write)

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        self._put(key, lambda tmp: shutil.copyfile(path, tmp))

    def _put(self, key: str, fill: Callable[[str], object]) -> None:
        """``fill`` a temporary file beside the object, then move it into place: a reader
        sees the old object or the whole new one, never part of it."""
        dest = self._path(key)
        tmp = None
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".upload-")
            os.close(fd)
            fill(tmp)
            os.replace(tmp, dest)
        except OSError as exc:
            _discard(tmp)
            raise _write_error(exc) from exc

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        try:
            size = path.stat().st_size
            if max_bytes is not None and size > max_bytes:
                raise PayloadTooLarge(f"object is {size} bytes, over the limit of {max_bytes}")
            return path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound("No such object.") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read object: {exc.strerror}") from exc

    def download(self, key: str, path: Path) -> None:
        src = self._path(key)
        try:
            shutil.copyfile(src, path)
        except FileNotFoundError as exc:
            raise NotFound("No such object.") from exc
        except OSError as exc:
            raise StorageUnavailable(f"cannot read object: {exc.strerror}") from exc

    def open_path(self, key: str) -> Path:
        """The file behind a key, for the API's file route."""
        path = self._path(key)
        if not path.is_file():
            raise NotFound("No such object.")
        return path

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot delete object: {exc.strerror}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    # -- signed URLs -----------------------------------------------------------------
    def _signature(self, key: str, expires: int) -> str:
        msg = f"{self.bucket}/{key}\n{expires}".encode()
        return hmac.new(self._secret, msg, hashlib.sha256).hexdigest()

    def sign(self, *parts: str) -> str:
        """An HMAC of ``parts`` with this store's secret: only a holder of the secret (the
        API) can make a signature another request is checked against."""
        message = "\0".join(parts).encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, key: str, ttl_s: int, base_url: str) -> str:
        expires = int(time.time()) + ttl_s
        sig = self._signature(key, expires)
        path = quote(f"{self.bucket}/{key}")
        return f"{base_url.rstrip('/')}/files/{path}?expires={expires}&signature={sig}"

    def verify(self, key: str, expires: str, signature: str) -> bool:
        """Whether a signed URL's query is valid now (constant-time comparison)."""
        if not expires.isdigit() or len(expires) > 12 or int(expires) < time.time():
            return False
        return hmac.compare_digest(self._signature(key, int(expires)), signature)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def check(self) -> None:
        if not os.access(self.root / self.bucket, os.W_OK):
            raise StorageUnavailable(f"blob folder not writable: {self.root / self.bucket}")

    def keys(self, prefix: str) -> list[str]:
        """The keys that start with ``prefix``, reading only the folder the prefix names
        (``outputs/free/12_`` lists ``outputs/free`` alone, not every object of the bucket),
        and below it only the subfolders whose names fit the prefix."""
        base = (self.root / self.bucket).resolve()
        folder, _, start = prefix.rpartition("/")
        top = (base / folder).resolve()
        if not top.is_relative_to(base) or not top.is_dir():
            return []
        found = []
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            if here == top:  # below it, every name is past the prefix
                dirnames[:] = [d for d in dirnames if d.startswith(start)]
                filenames = [f for f in filenames if f.startswith(start)]
            found += [
                (here / f).relative_to(base).as_posix()
                for f in filenames
                if not f.startswith(".upload-")
            ]
        return sorted(found)


def _discard(tmp: str | None) -> None:
    """Remove a partial upload (a full disk must not keep half of an object)."""
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass
