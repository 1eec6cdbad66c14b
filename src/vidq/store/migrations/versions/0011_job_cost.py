"""What each job cost, and a daily limit on it per token.

jobs:
- ``gpu_seconds``: the seconds its engine ran on a GPU slot, summed over its attempts (a
  failed or released attempt's time counts: it used the device); the worker measures it
  around the engine call and records it with the attempt's end, in the same fenced update.
- ``device``: the device its last finished attempt ran on (``cpu``, ``cuda:0``, ...);
- ``first_started_at``: when its first attempt was claimed (``started_at`` is the last
  one's): its queue time is ``first_started_at - created_at``. Filled from ``started_at``
  for jobs that started before this revision.

tokens:
- ``daily_gpu_seconds``: the token's limit on the GPU-seconds of its user's jobs per UTC
  day (NULL: unlimited); ``vidq token create --daily-gpu-seconds``.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("gpu_seconds", sa.Float(precision=53), nullable=False, server_default="0"),
    )
    op.add_column("jobs", sa.Column("device", sa.Text))
    op.add_column("jobs", sa.Column("first_started_at", sa.Float(precision=53)))
    op.execute("UPDATE jobs SET first_started_at = started_at WHERE started_at IS NOT NULL")
    op.add_column("tokens", sa.Column("daily_gpu_seconds", sa.BigInteger))


def downgrade() -> None:
    op.drop_column("tokens", "daily_gpu_seconds")
    op.drop_column("jobs", "first_started_at")
    op.drop_column("jobs", "device")
    op.drop_column("jobs", "gpu_seconds")
