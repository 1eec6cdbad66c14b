"""A request's media fields in, checked inputs stored as blobs out: the one call a submit
makes into media/ (``MediaIntake.take``), the same for both wire dialects.

``take`` gets the bytes of the media fields given as URLs: the caller's own uploads from
storage (``OwnFiles``: never fetched over HTTP), the others from the network, on the
event loop (``fetch.py``: no thread waits on a remote server). Then, in a thread, at most
``limiter``'s count of requests with media at once, it decodes and checks every media
field (``inputs.py``), computes the output plan, stores each field's bytes under
``inputs/<user>/<uuid>/<field>`` and hands the inputs as the job is to keep them
(``StoredInputs``) to the caller's ``then``, the submit's INSERT, in the same thread.
All or nothing: a refused input stores nothing, and the blobs of a ``then`` that raises
are deleted.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from vidq.catalog import Family
from vidq.errors import VidqError
from vidq.jobs import user_folder
from vidq.media.decode import DecodePool
from vidq.media.fetch import Fetcher
from vidq.media.inputs import (
    BLOB_PREFIX,
    MEDIA_FIELDS,
    Limits,
    MediaInput,
    load_media,
    media_urls,
    plan_of,
)
from vidq.media.sizing import Plan

log = logging.getLogger(__name__)

T = TypeVar("T")


class Blobs(Protocol):
    """Where inputs are stored (a ``BlobStore``)."""

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        """Store bytes under a key."""

    def delete(self, key: str) -> None:
        """Remove the object; no error if it is already gone."""


class OwnFiles(Protocol):
    """Files of this server that an input URL may name (the caller's uploads): read from
    storage, never fetched."""

    def file_id(self, url: str) -> str | None:
        """The id of the file ``url`` names; None for a URL of another server."""

    def read(self, field: str, file_id: str) -> bytes:
        """The file's bytes (blocking); InvalidInput naming ``field`` if the caller has
        no such file."""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredInputs:
    """A request's inputs as its job keeps them: each media field replaced by a reference
    to its blob (``blob://<key>``: megabytes of base64 stay out of the job row), with
    ``_blobs`` ({field: key}, when there are any) and ``_plan`` (the output plan)."""

    inputs: dict[str, Any]
    blobs: dict[str, str]  # field -> blob key
    plan: Plan


class MediaIntake:
    """Takes requests' media in (see the module docstring). One per API process: its
    fetcher and ``limiter`` are used on the app's event loop, its decode pool by the
    threads it starts."""

    def __init__(
        self,
        blobs: Blobs,
        limits: Limits,
        fetcher: Fetcher,
        images: DecodePool,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.blobs = blobs
        self.limits = limits
        self.fetcher = fetcher
        self.images = images  # where input images are decoded
        self.limiter = limiter  # requests with media being decoded, stored and queued

    async def take(
        self,
        family: Family,
        inputs: dict[str, Any],
        user: str,
        own: OwnFiles,
        then: Callable[[StoredInputs], T],
    ) -> T:
        """Check and store the media of ``inputs`` (a request of ``family`` by ``user``),
        then call ``then`` with the inputs to keep, in the same thread; its result."""
        urls = media_urls(family, inputs)
        local = {field: fid for field, url in urls.items() if (fid := own.file_id(url)) is not None}
        remote = {field: url for field, url in urls.items() if field not in local}
        limiter = self.limiter if MEDIA_FIELDS[family] else None  # None: the default pool

        def store(fetched: dict[str, bytes]) -> T:
            fetched.update((field, own.read(field, fid)) for field, fid in local.items())
            media = load_media(family, inputs, self.limits, fetched, self.images)
            plan = plan_of(family, inputs, media)
            blobs = self._put(user, media)
            kept = dict(inputs)
            for field, key in blobs.items():
                kept[field] = BLOB_PREFIX + key
            if blobs:
                kept["_blobs"] = blobs
            kept["_plan"] = plan.as_json()
            try:
                return then(StoredInputs(kept, blobs, plan))
            except BaseException:
                self.discard(blobs)
                raise

        async with self.fetcher.fetching(remote, user) as fetched:
            return await anyio.to_thread.run_sync(store, dict(fetched), limiter=limiter)

    def _put(self, user: str, media: dict[str, MediaInput]) -> dict[str, str]:
        """``inputs/<user>/<uuid>/<field>`` for each media input; all or nothing."""
        folder = f"inputs/{user_folder(user)}/{uuid.uuid4().hex}"
        stored: dict[str, str] = {}
        try:
            for field, item in media.items():
                key = f"{folder}/{field}"
                self.blobs.put_bytes(key, item.data, item.format.content_type)
                stored[field] = key
        except BaseException:
            self.discard(stored)
            raise
        return stored

    def discard(self, blobs: Mapping[str, str]) -> None:
        """Delete stored inputs ({field: key}) that no job keeps; a failure is logged."""
        for key in blobs.values():
            try:
                self.blobs.delete(key)
            except VidqError:
                log.warning("could not delete an input blob", extra={"key": key})

    def close(self) -> None:
        """Stop the decode pool (the app's shutdown)."""
        self.images.close()
