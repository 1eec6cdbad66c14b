"""Users' own API keys: a name and an expiry per token.

tokens:
- ``name``: what its user called it (the web app's API keys page, ``POST /tokens``); NULL
  for the tokens made by ``vidq token create`` without ``--name``.
- ``expires_at``: after it the token is refused (401); NULL: it never expires.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    op.add_column("tokens", sa.Column("name", sa.Text))
    op.add_column("tokens", sa.Column("expires_at", sa.Float(precision=53)))


def downgrade() -> None:
    op.drop_column("tokens", "expires_at")
    op.drop_column("tokens", "name")
