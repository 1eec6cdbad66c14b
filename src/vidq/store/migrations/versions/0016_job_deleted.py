"""A request its user deleted (``DELETE /requests/{id}``).

jobs:
- ``deleted_at``: when its user deleted it, NULL while kept. The delete also sets the
  retention marks (``expired_at`` of a completed job's output, ``inputs_expired_at``), so
  its blobs are deleted as the collector deletes expired ones; the row stays, for its
  status, times, usage and cost, and leaves the user's list.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("deleted_at", sa.Float(precision=53)))


def downgrade() -> None:
    op.drop_column("jobs", "deleted_at")
