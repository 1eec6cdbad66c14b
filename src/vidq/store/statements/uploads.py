"""The statements of uploaded files (``UploadStore``, fal's upload routes)."""

from __future__ import annotations

from vidq.store.rows import UPLOAD_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement

# The bytes an uploader holds besides this upload: stored uploads by their size, uploads in
# progress by the bytes of their parts so far.
_HELD = """(SELECT coalesce(sum(coalesce(m.size, m.received)), 0) FROM uploads AS m
            WHERE m.owner = uploads.owner AND m.id <> uploads.id)"""


class UploadStatements(RoleStatements):
    """Uploads: recorded, their bytes stored, read back, forgotten."""

    # Recorded only while the uploader keeps fewer than ``:max_uploads`` (-1: no limit).
    insert_upload = Statement(f"""
        INSERT INTO uploads (id, owner, key, content_type, file_name, created_at, expires_at)
        SELECT :id, :owner, :key, :content_type, :file_name, {{NOW}}, {{NOW}} + :expires_in
        WHERE :max_uploads < 0
            OR (SELECT count(*) FROM uploads WHERE owner = :owner) < :max_uploads
        RETURNING {UPLOAD_COLUMNS}""")
    get_upload = Statement(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = :id")
    upload_stored = Statement(f"""
        UPDATE uploads SET size = :size
        WHERE id = :id AND size IS NULL AND (:max_bytes < 0 OR {_HELD} + :size <= :max_bytes)""")
    # A part of an upload in progress: within the single-file limit and the uploader's.
    upload_received = Statement(f"""
        UPDATE uploads SET received = received + :size
        WHERE id = :id AND size IS NULL AND received + :size <= :max_one
            AND (:max_bytes < 0 OR {_HELD} + received + :size <= :max_bytes)""")
    delete_upload = Statement("DELETE FROM uploads WHERE id = :id")
