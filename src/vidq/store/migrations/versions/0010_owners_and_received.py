"""Bounds per token: who registered a worker name, and how many bytes a pending upload holds.

workers:
- ``owner``: the user of the worker token that registered the name over ``/worker/v1``
  (NULL for local workers); a worker token may keep a bounded number of names alive
  (``VIDQ_MAX_WORKERS_PER_TOKEN``).

uploads:
- ``received``: bytes of a multipart upload's parts stored so far (0 until then); with
  ``size`` (the bytes of a stored upload) it counts against the uploader's byte limit
  (``VIDQ_MAX_UPLOAD_BYTES_PER_USER``) and the single-file limit while the parts arrive.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    op.add_column("workers", sa.Column("owner", sa.Text))
    op.create_index("ix_workers_owner", "workers", ["owner", "seen_at"])
    op.add_column(
        "uploads", sa.Column("received", sa.BigInteger, nullable=False, server_default="0")
    )
    op.create_index("ix_uploads_owner", "uploads", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_uploads_owner", "uploads")
    op.drop_column("uploads", "received")
    op.drop_index("ix_workers_owner", "workers")
    op.drop_column("workers", "owner")
