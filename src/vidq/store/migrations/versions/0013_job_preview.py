"""The live preview of a running job, as columns the status poll reads.

jobs:
- ``preview_key``: the blob of the running attempt's latest preview (an animated WebP
  under ``previews/``, see ``storage/outputs.py``), NULL until its engine published one.
- ``preview_step``: the step of the run the preview shows.
- ``preview_at``: when it was published (the database clock).

A claim clears all three: a new attempt never shows the last one's preview.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("preview_key", sa.Text))
    op.add_column("jobs", sa.Column("preview_step", sa.Integer))
    op.add_column("jobs", sa.Column("preview_at", sa.Float(precision=53)))


def downgrade() -> None:
    op.drop_column("jobs", "preview_at")
    op.drop_column("jobs", "preview_step")
    op.drop_column("jobs", "preview_key")
