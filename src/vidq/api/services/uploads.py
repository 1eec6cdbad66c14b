"""Uploads as request inputs: a media field whose URL is one of vidq's own upload URLs
(``{base}/fal/files/{id}/{name}``, made by ``api/fal_storage.py``) is read from the blob
store directly, never fetched over HTTP, and only if the caller uploaded it: another
user's upload URL is a 422 naming the field, as an unknown one is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from vidq.api.context import AppContext
from vidq.errors import InvalidInput, NotFound, PayloadTooLarge

FILES_PATH = "/fal/files"  # {base}/fal/files/{id}/{file name}
_ID = re.compile(r"[0-9a-f]{32}")


def file_url(base: str, upload_id: str, file_name: str) -> str:
    """The URL of an upload: what the upload routes answer and inputs refer to."""
    return f"{base}{FILES_PATH}/{upload_id}/{file_name}"


def upload_id_of(url: str, base: str) -> str | None:
    """The upload id of one of this server's upload URLs, else None (a remote URL)."""
    prefix = f"{base}{FILES_PATH}/"
    if not url.startswith(prefix):
        return None
    upload_id = url[len(prefix) :].split("?", 1)[0].split("/", 1)[0]
    return upload_id if _ID.fullmatch(upload_id) else ""


def split(urls: Mapping[str, str], base: str) -> tuple[dict[str, str], dict[str, str]]:
    """``{field: url}`` as (this server's uploads ``{field: id}``, the remote URLs)."""
    local: dict[str, str] = {}
    remote: dict[str, str] = {}
    for field, url in urls.items():
        upload_id = upload_id_of(url, base)
        if upload_id is None:
            remote[field] = url
        else:
            local[field] = upload_id
    return local, remote


def read(ctx: AppContext, ids: Mapping[str, str], user: str) -> dict[str, bytes]:
    """The bytes of ``user``'s uploads ``{field: id}`` (blocking: runs in a thread)."""
    limit = ctx.settings.limits.max_input_bytes
    out: dict[str, bytes] = {}
    for field, upload_id in ids.items():
        upload = ctx.store.get_upload(upload_id, user) if upload_id else None
        if upload is None or upload.size is None:
            raise InvalidInput(field, "no such upload of yours (or its upload did not finish)")
        try:
            out[field] = ctx.storage.get_bytes(upload.key, max_bytes=limit)
        except NotFound:
            raise InvalidInput(field, "the upload has expired") from None
        except PayloadTooLarge:
            raise PayloadTooLarge(f"{field}: over the limit of {limit} bytes") from None
    return out
