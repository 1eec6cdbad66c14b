"""The webhook outbox is the jobs table: a job's webhook is registered by the INSERT that
creates the job (one statement, one transaction), and its delivery state lives beside it.

- ``webhook_dialect``, ``webhook_base``: how to word the body ("native" or "fal") and the
  API's public base URL at submit (for the signed video URL);
- ``webhook_state``: 'pending', 'delivered' or 'given_up'; NULL when the job has none;
- ``webhook_attempts``: deliveries tried so far;
- ``webhook_next_at``: database time before which no API process tries the delivery: the
  backoff after a failed attempt, or the lease of the attempt in flight.

``ix_jobs_webhooks`` holds only the deliveries that may be due (pending, job finished), so
the dispatchers' poll reads no other row.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"

_DUE = sa.text("webhook_state = 'pending' AND state IN ('COMPLETED', 'FAILED', 'CANCELLED')")


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_dialect", sa.Text))
    op.add_column("jobs", sa.Column("webhook_base", sa.Text))
    op.add_column("jobs", sa.Column("webhook_state", sa.Text))
    op.add_column(
        "jobs", sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column("jobs", sa.Column("webhook_next_at", sa.Float(precision=53)))
    op.create_index("ix_jobs_webhooks", "jobs", ["id"], sqlite_where=_DUE, postgresql_where=_DUE)


def downgrade() -> None:
    op.drop_index("ix_jobs_webhooks", "jobs")
    for column in (
        "webhook_next_at", "webhook_attempts", "webhook_state", "webhook_base", "webhook_dialect"
    ):  # fmt: skip
        op.drop_column("jobs", column)
