"""Uploads: files a user stored with fal's upload routes (``fal_client.upload_file``, the
JS client's automatic upload) to use as inputs of their own requests.

- ``id``: the random id in the file's URL; ``owner``: the uploader (only their requests
  may read it); ``key``: where the bytes are in the blob store;
- ``size``: NULL until the bytes are stored (an initiated upload waiting for its PUT);
- ``created_at``, ``expires_at``: database time; ``expires_at`` is the expiry the client
  asked for (``X-Fal-Object-Lifecycle-Preference``), NULL for the retention default.
  Retention deletes the blob, then the row (``expired_uploads``, ``delete_upload``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("key", sa.Text, nullable=False),
        sa.Column("content_type", sa.Text, nullable=False),
        sa.Column("file_name", sa.Text, nullable=False),
        sa.Column("size", sa.BigInteger),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53)),
    )
    op.create_index("ix_uploads_created_at", "uploads", ["created_at"])
    op.create_index("ix_uploads_expires_at", "uploads", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_uploads_expires_at", "uploads")
    op.drop_index("ix_uploads_created_at", "uploads")
    op.drop_table("uploads")
