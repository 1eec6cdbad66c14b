"""A job's LoRAs, from the URLs of its ``loras`` to local files the engine applies.

The API only checks a LoRA's URL at submit; the worker fetches it when it runs the job
(``LoraFetcher.fetch``), with the outbound policy of input URLs (``media/fetch.py``: the
address rules on every hop, https only unless allowed, one deadline for the whole fetch,
at most ``max_lora_bytes``), streaming it to a temporary file of the cache while hashing.

The cache (``LoraCache``) keeps the files by the sha256 of their bytes
(``<sha256>.safetensors``), so a LoRA many jobs use is stored once. A file is written
under a temporary name and renamed into place, so the GPU slots of one host (one cache
folder) never see a half-written file and two slots writing the same LoRA both end with
the same complete file. A use touches the file's modification time; past
``max_bytes`` the least recently used files are deleted, never those of the job at hand,
nor any used within ``grace_s`` (another GPU slot may be about to load it: the cache may
then hold more than its bound for that long).

Errors name the LoRA as ``loras[i] (https://host/path)`` (never the query string: it may
hold a signature). A URL that answers 4xx, is refused by the policy or is too large fails
the job (``InvalidInput``, ``PayloadTooLarge``: final); a server that cannot be reached,
times out or answers 5xx is ``ServiceUnavailable``: the attempt is retried, within the
job's attempts, as for storage trouble while downloading inputs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio

from vidq.engines.base import LoraFile
from vidq.errors import InvalidInput, PayloadTooLarge, ServiceUnavailable, UrlUnreachable

if TYPE_CHECKING:
    from vidq.media.fetch import FetchPolicy

# ``media/fetch.py`` and ``media/outbound.py`` (httpx) are imported by the first fetch: a
# worker process loads this module whether or not its jobs ever name a LoRA.

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
_PARTIAL = ".partial-"


def shown(url: str) -> str:
    """``url`` as errors and logs may show it: scheme, host and path, no query string or
    credentials, at most 200 characters."""
    try:
        parts = urlsplit(url.strip())
        host = parts.netloc.rpartition("@")[2]  # never the credentials
        text = f"{parts.scheme}://{host}{parts.path}"
    except ValueError:
        text = "an invalid URL"
    return text if len(text) <= 200 else text[:197] + "..."


class LoraCache:
    """LoRA files by content hash in ``folder``, at most ``max_bytes`` of them (see the
    module docstring). Safe for several threads and processes on one folder."""

    def __init__(self, folder: Path, max_bytes: int, grace_s: float = 900.0) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.grace_s = grace_s
        self._lock = threading.Lock()  # eviction, within a process

    def path_of(self, sha256: str) -> Path:
        return self.folder / f"{sha256}{SUFFIX}"

    def get(self, sha256: str) -> Path | None:
        """The cached file of ``sha256`` (marked used), or None."""
        path = self.path_of(sha256)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        return path

    @contextlib.contextmanager
    def writing(self) -> Any:
        """A temporary file in the cache folder to write a LoRA to; ``commit(fh, sha256)``
        renames it into place. Left without a commit, it is deleted."""
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=_PARTIAL, dir=self.folder)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh, Path(name)
        finally:
            Path(name).unlink(missing_ok=True)

    def commit(self, partial: Path, sha256: str) -> Path:
        """Move a fully written ``partial`` file to its place (atomic; a file already
        there has the same bytes), marked used."""
        path = self.path_of(sha256)
        os.replace(partial, path)
        os.utime(path)
        return path

    def evict(self, keep: Sequence[str] = ()) -> list[str]:
        """Delete the least recently used files until the cache holds at most
        ``max_bytes`` (never the hashes in ``keep``, files used within ``grace_s``, nor
        files being written); the hashes deleted."""
        recent = time.time() - self.grace_s
        with self._lock:
            entries: list[tuple[float, int, Path]] = []
            try:
                listing = list(os.scandir(self.folder))
            except FileNotFoundError:
                return []
            for entry in listing:
                if not entry.name.endswith(SUFFIX) or entry.name.startswith(_PARTIAL):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, Path(entry.path)))
            total = sum(size for _, size, _ in entries)
            deleted: list[str] = []
            for used, size, path in sorted(entries):
                if total <= self.max_bytes or used > recent:
                    break
                sha = path.name.removesuffix(SUFFIX)
                if sha in keep:
                    continue
                path.unlink(missing_ok=True)
                total -= size
                deleted.append(sha)
            return deleted


@dataclasses.dataclass(frozen=True, slots=True)
class LoraOptions:
    """How a worker fetches and keeps LoRAs (Settings: limits and worker groups)."""

    cache_dir: Path
    cache_bytes: int = 20 * 1024**3
    cache_grace_s: float = 900.0  # a file used this recently is never evicted
    max_bytes: int = 2 * 1024**3
    timeout_s: float = 300.0
    allow_http: bool = False  # local testing only
    allow_networks: tuple[Any, ...] = ()  # non-global networks allowed (testing only)

    def policy(self) -> FetchPolicy:
        from vidq.media.fetch import FetchPolicy

        return FetchPolicy(
            max_bytes=self.max_bytes,
            timeout_s=self.timeout_s,
            allow_http=self.allow_http,
            allow_networks=self.allow_networks,
        )


class LoraFetcher:
    """Fetches a job's LoRAs into the cache (one per worker process, shared by its
    slots). ``fetch`` blocks: a worker thread runs it."""

    def __init__(self, options: LoraOptions) -> None:
        self.options = options
        self.cache = LoraCache(options.cache_dir, options.cache_bytes, options.cache_grace_s)
        self._tls: Any = None
        self._tls_lock = threading.Lock()

    def fetch(self, loras: Any) -> list[LoraFile]:
        """The local files of a job's ``loras`` (the stored request's list of ``{path,
        scale, transformer}``), in order; errors as the module docstring says."""
        if not loras:
            return []
        if not isinstance(loras, list):
            raise InvalidInput("loras", "must be a list of {path, scale, transformer}")
        files: list[LoraFile] = []
        for i, item in enumerate(loras):
            if not isinstance(item, dict) or not isinstance(item.get("path"), str):
                raise InvalidInput(f"loras[{i}]", "must be an object with a path")
            name = f"loras[{i}] ({shown(item['path'])})"
            started = time.monotonic()
            sha, size, path = self._one(name, item["path"])
            log.info(
                "LoRA %s: %d bytes, sha256 %s, in %.2f s",
                name, size, sha[:12], time.monotonic() - started,
            )  # fmt: skip
            files.append(
                LoraFile(
                    index=i,
                    name=name,
                    path=str(path),
                    sha256=sha,
                    size=size,
                    scale=float(item.get("scale", 1.0)),
                    transformer=str(item.get("transformer", "high")),
                )
            )
        self.cache.evict(keep=[f.sha256 for f in files])
        return files

    def _one(self, name: str, url: str) -> tuple[str, int, Path]:
        from vidq.media.fetch import fetch_to

        policy = self.options.policy()
        with self.cache.writing() as (fh, partial):
            digest = hashlib.sha256()

            def write(chunk: bytes) -> None:
                digest.update(chunk)
                fh.write(chunk)

            try:
                size = anyio.run(fetch_to, name, url, policy, write, self._tls_context())
            except UrlUnreachable as exc:
                raise ServiceUnavailable(f"{name}: {exc.reason}") from None
            except PayloadTooLarge:
                raise PayloadTooLarge(
                    f"{name}: over the limit of {policy.max_bytes} bytes (VIDQ_MAX_LORA_BYTES)"
                ) from None
            fh.flush()
            os.fsync(fh.fileno())
            sha = digest.hexdigest()
            cached = self.cache.get(sha)
            if cached is not None:  # the same bytes are there already
                return sha, size, cached
            return sha, size, self.cache.commit(partial, sha)

    def _tls_context(self) -> Any:
        from vidq.media.outbound import tls_context

        with self._tls_lock:  # built once, lazily: ~0.1 s of CPU
            if self._tls is None:
                self._tls = tls_context()
            return self._tls
