"""Uploaded files (``UploadStore``): recorded before their bytes are stored."""

from __future__ import annotations

from vidq.store.base import Upload
from vidq.store.rows import upload_from_row
from vidq.store.sql.core import Queries


class UploadQueries(Queries):
    """``UploadStore`` (see ``base.UploadStore``)."""

    def create_upload(
        self,
        upload_id: str,
        user: str,
        key: str,
        content_type: str,
        file_name: str,
        expires_in_s: float | None,
        *,
        max_uploads: int | None = None,
    ) -> Upload | None:
        row = self._row(
            self._sql.insert_upload, id=upload_id, owner=user, key=key,
            content_type=content_type, file_name=file_name, expires_in=expires_in_s,
            max_uploads=-1 if max_uploads is None else max_uploads,
        )  # fmt: skip
        return upload_from_row(row) if row else None

    def get_upload(self, upload_id: str, user: str | None = None) -> Upload | None:
        row = self._row(self._sql.get_upload, id=upload_id)
        if row is None or (user is not None and row["owner"] != user):
            return None
        return upload_from_row(row)

    def upload_stored(self, upload_id: str, size: int, *, max_bytes: int | None = None) -> bool:
        limit = -1 if max_bytes is None else max_bytes
        return self._count(self._sql.upload_stored, id=upload_id, size=size, max_bytes=limit) == 1

    def upload_received(
        self, upload_id: str, size: int, *, max_one: int, max_bytes: int | None = None
    ) -> bool:
        limit = -1 if max_bytes is None else max_bytes
        changed = self._count(
            self._sql.upload_received, id=upload_id, size=size, max_one=max_one, max_bytes=limit
        )
        return changed == 1

    def delete_upload(self, upload_id: str) -> bool:
        return self._count(self._sql.delete_upload, id=upload_id) == 1
