"""Columns the hot paths read instead of the inputs JSON, and retry backoff.

- ``higher_quality``: the request's ``higher_quality_with_more_steps``, copied at submit, so
  a status poll never parses the inputs (which can be large).
- ``retry_at``: a job in RETRY is not claimed before this database time, so a retryable
  failure (storage down, an engine crash) backs off instead of spending every attempt at
  once.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    op.add_column(
        "jobs", sa.Column("higher_quality", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column("jobs", sa.Column("retry_at", sa.Float(precision=53)))
    if op.get_bind().dialect.name == "sqlite":
        flag = "json_extract(inputs, '$.higher_quality_with_more_steps') = 1"
    else:
        flag = "(inputs::jsonb ->> 'higher_quality_with_more_steps') = 'true'"
    op.execute(f"UPDATE jobs SET higher_quality = true WHERE {flag}")


def downgrade() -> None:
    op.drop_column("jobs", "retry_at")
    op.drop_column("jobs", "higher_quality")
