"""Uploads as request inputs: a media field whose URL is one of vidq's own upload URLs
(``{base}/fal/files/{id}/{name}``, made by ``api/fal/storage.py``) is read from the blob
store directly, never fetched over HTTP, and only if the caller uploaded it: another
user's upload URL is a 422 naming the field, as an unknown one is.
"""

from __future__ import annotations

import dataclasses
import re

from vidq.blobs.base import BlobStore
from vidq.errors import InvalidInput, NotFound, PayloadTooLarge
from vidq.store.base import UploadStore

FILES_PATH = "/fal/files"  # {base}/fal/files/{id}/{file name}
_ID = re.compile(r"[0-9a-f]{32}")


def file_url(base: str, upload_id: str, file_name: str) -> str:
    """The URL of an upload: what the upload routes answer and inputs refer to."""
    return f"{base}{FILES_PATH}/{upload_id}/{file_name}"


def upload_id_of(url: str, base: str) -> str | None:
    """The upload id of one of this server's upload URLs ("" if malformed), else None (a
    remote URL)."""
    prefix = f"{base}{FILES_PATH}/"
    if not url.startswith(prefix):
        return None
    upload_id = url[len(prefix) :].split("?", 1)[0].split("/", 1)[0]
    return upload_id if _ID.fullmatch(upload_id) else ""


@dataclasses.dataclass(frozen=True, slots=True)
class OwnUploads:
    """``user``'s uploads, as the media intake reads them (``media.intake.OwnFiles``)."""

    store: UploadStore
    storage: BlobStore
    base: str  # this server's public URL, which its upload URLs start with
    user: str
    max_bytes: int  # VIDQ_MAX_INPUT_BYTES

    def file_id(self, url: str) -> str | None:
        return upload_id_of(url, self.base)

    def read(self, field: str, file_id: str) -> bytes:
        """The bytes of the upload (blocking: runs in a thread)."""
        upload = self.store.get_upload(file_id, self.user) if file_id else None
        if upload is None or upload.size is None:
            raise InvalidInput(field, "no such upload of yours (or its upload did not finish)")
        try:
            return self.storage.get_bytes(upload.key, max_bytes=self.max_bytes)
        except NotFound:
            raise InvalidInput(field, "the upload has expired") from None
        except PayloadTooLarge:
            raise PayloadTooLarge(f"{field}: over the limit of {self.max_bytes} bytes") from None
