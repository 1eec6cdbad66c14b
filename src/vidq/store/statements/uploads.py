"""The statements of uploaded files (``UploadStore``, fal's upload routes)."""

from __future__ import annotations

from vidq.store.rows import UPLOAD_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement


class UploadStatements(RoleStatements):
    """Uploads: recorded, their bytes stored, read back, forgotten."""

    insert_upload = Statement(f"""
        INSERT INTO uploads (id, owner, key, content_type, file_name, created_at, expires_at)
        VALUES (:id, :owner, :key, :content_type, :file_name, {{NOW}}, {{NOW}} + :expires_in)
        RETURNING {UPLOAD_COLUMNS}""")
    get_upload = Statement(f"SELECT {UPLOAD_COLUMNS} FROM uploads WHERE id = :id")
    upload_stored = Statement("UPDATE uploads SET size = :size WHERE id = :id AND size IS NULL")
    delete_upload = Statement("DELETE FROM uploads WHERE id = :id")
