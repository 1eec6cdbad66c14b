"""Alembic environment: runs the migrations on the connection or URL it is given."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, text

config = context.config

# API replicas and workers all migrate at start; on PostgreSQL they take turns.
_MIGRATION_LOCK = 0x76696471  # "vidq"


def _serialize(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=None)
        with context.begin_transaction():
            _serialize(connection)
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=None)
        with context.begin_transaction():
            _serialize(conn)
            context.run_migrations()
    engine.dispose()


run()
