"""Output objects of jobs, as the workers (local), the API (for remote workers) and the
retention collector keep them: finding and sweeping the uploads of other attempts, and
hashing what was uploaded."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from vidq.errors import VidqError
from vidq.jobs import Job, output_attempt, output_prefix, poster_output

log = logging.getLogger(__name__)


class _Listing(Protocol):
    def keys(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...


def attempt_uploads(storage: _Listing, job: Job, drop: Callable[[int], bool]) -> list[str]:
    """``job``'s output objects (videos and their posters) of the attempts ``drop`` names."""
    return [
        key for key in storage.keys(output_prefix(job))
        if (attempt := output_attempt(job, poster_output(key) or key)) is not None
        and drop(attempt)
    ]  # fmt: skip


def sweep_attempts(storage: _Listing, job: Job, drop: Callable[[int], bool]) -> None:
    """Delete ``job``'s output objects (videos and their posters) of the attempts ``drop``
    names. A stale or killed attempt cannot delete its own upload: the attempt that wins
    (or the next one) does, and one stored after that is the retention collector's
    (``ops/retention.py``, late uploads).
    Never raises: what is left is an orphan for retention, not a failed job."""
    try:
        for key in attempt_uploads(storage, job, drop):
            storage.delete(key)
            log.info("deleted the upload of another attempt", extra={"key": key})
    except VidqError as exc:
        log.warning("could not sweep other attempts' uploads: %s", exc.message)


def size_and_sha256(path: Path) -> tuple[int, str]:
    """A file's size and hex sha256, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            digest.update(chunk)
    return size, digest.hexdigest()
