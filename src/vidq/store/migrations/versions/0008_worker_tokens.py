"""Worker tokens (remote workers over ``/worker/v1``).

tokens:
- ``worker``: the token is a worker's (``vidq token create --worker``): it may use only the
  worker routes, and no user or admin route;
- ``pools``: the comma-separated pools a worker token may claim from; NULL: every pool.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.add_column(
        "tokens", sa.Column("worker", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("tokens", sa.Column("pools", sa.Text))


def downgrade() -> None:
    op.drop_column("tokens", "pools")
    op.drop_column("tokens", "worker")
