"""What a worker says it is doing, for operators (``/admin/workers``, the Dashboard).

workers:
- ``state``: ``warming`` (loading its engines), ``ready`` (claiming; every claim sets it),
  ``engine_down`` (an engine's backend is unreachable: it claims nothing and probes it),
  ``draining`` (asked to stop, finishing its current job) or ``stopped`` (its loop
  ended); rows of workers that registered before this revision, and of older workers
  that only claim, read ``ready``.
- ``state_reason``: why, for ``engine_down`` (the probe's or the failed load's message).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.add_column("workers", sa.Column("state", sa.Text, nullable=False, server_default="ready"))
    op.add_column("workers", sa.Column("state_reason", sa.Text))


def downgrade() -> None:
    op.drop_column("workers", "state_reason")
    op.drop_column("workers", "state")
