"""Initial schema: jobs, tokens, workers.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

# BIGINT on PostgreSQL; on SQLite only "INTEGER PRIMARY KEY" is the rowid alias.
_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_QUEUED = sa.text("state IN ('PENDING', 'RETRY')")


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("model_id", sa.Text, nullable=False),
        sa.Column("pool", sa.Text, nullable=False),
        sa.Column("tier", sa.Integer, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("inputs", sa.Text, nullable=False),
        sa.Column("binary_output", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("lease_token", sa.Text),
        sa.Column("lease_until", sa.Float(precision=53)),
        sa.Column("worker", sa.Text),
        sa.Column("progress_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("progress_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("work_units", sa.Float(precision=53), nullable=False, server_default="0"),
        sa.Column("result_key", sa.Text),
        sa.Column("result_meta", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("error_type", sa.Text),
        sa.Column("idempotency_key", sa.Text),
        sa.Column("webhook_url", sa.Text),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("started_at", sa.Float(precision=53)),
        sa.Column("finished_at", sa.Float(precision=53)),
        sqlite_autoincrement=True,  # request ids are never reused
    )
    op.create_index(
        "ix_jobs_queue",
        "jobs",
        ["pool", "rank", "id"],
        sqlite_where=_QUEUED,
        postgresql_where=_QUEUED,
    )
    running = sa.text("state = 'RUNNING'")
    op.create_index(
        "ix_jobs_lease", "jobs", ["lease_until"], sqlite_where=running, postgresql_where=running
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner", "id"])
    idem = sa.text("idempotency_key IS NOT NULL")
    op.create_index(
        "ux_jobs_idempotency",
        "jobs",
        ["owner", "idempotency_key"],
        unique=True,
        sqlite_where=idem,
        postgresql_where=idem,
    )
    op.create_index("ix_jobs_result_key", "jobs", ["result_key"])
    done = sa.text("state = 'COMPLETED'")
    op.create_index(
        "ix_jobs_done", "jobs", ["pool", "finished_at"], sqlite_where=done, postgresql_where=done
    )

    op.create_table(
        "tokens",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False, unique=True),
        sa.Column("max_priority", sa.Integer, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("revoked_at", sa.Float(precision=53)),
    )
    op.create_table(
        "workers",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("pools", sa.Text, nullable=False),
        sa.Column("seen_at", sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    op.drop_table("tokens")
    op.drop_table("jobs")
