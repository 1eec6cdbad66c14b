"""Queue versions: a counter per pool bumped by triggers whenever a job enters or leaves
the queue, so readers can cache a pool's order and know exactly when it went stale.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_QUEUED = "IN ('PENDING', 'RETRY')"

_SQLITE_BUMP = """
    INSERT INTO queue_versions (pool, version) VALUES (NEW.pool, 1)
    ON CONFLICT (pool) DO UPDATE SET version = version + 1;
"""

_PG_FUNCTION = """
CREATE FUNCTION vidq_bump_queue_version() RETURNS trigger AS $$
BEGIN
    INSERT INTO queue_versions (pool, version) VALUES (NEW.pool, 1)
    ON CONFLICT (pool) DO UPDATE SET version = queue_versions.version + 1;
    RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.create_table(
        "queue_versions",
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    changed = f"(OLD.state {_QUEUED}) IS NOT (NEW.state {_QUEUED})"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER jobs_queue_insert AFTER INSERT ON jobs BEGIN {_SQLITE_BUMP} END"
        )
        op.execute(
            "CREATE TRIGGER jobs_queue_state AFTER UPDATE OF state ON jobs "
            f"WHEN {changed} BEGIN {_SQLITE_BUMP} END"
        )
    else:
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER jobs_queue_insert AFTER INSERT ON jobs FOR EACH ROW "
            "EXECUTE FUNCTION vidq_bump_queue_version()"
        )
        op.execute(
            "CREATE TRIGGER jobs_queue_state AFTER UPDATE OF state ON jobs FOR EACH ROW "
            f"WHEN ((OLD.state {_QUEUED}) IS DISTINCT FROM (NEW.state {_QUEUED})) "
            "EXECUTE FUNCTION vidq_bump_queue_version()"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobs_queue_state" + ("" if _sqlite() else " ON jobs"))
    op.execute("DROP TRIGGER IF EXISTS jobs_queue_insert" + ("" if _sqlite() else " ON jobs"))
    if not _sqlite():
        op.execute("DROP FUNCTION IF EXISTS vidq_bump_queue_version()")
    op.drop_table("queue_versions")


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")
