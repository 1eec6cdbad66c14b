"""Per-token limits, job deadlines and cancelling running jobs.

tokens:
- ``max_queued``, ``max_running``, ``rate_per_minute``, ``daily_video_seconds``: the token's
  limits; NULL is unlimited. ``vidq token create`` fills them from the ``VIDQ_DEFAULT_*``
  settings, ``vidq token update`` changes them.

jobs:
- ``max_running``: the submitting token's limit, copied at submit, so the claim (one
  statement) holds back a user's jobs while that many of theirs run;
- ``video_seconds``: the planned output's duration, summed for the daily limit;
- ``deadline_at``: database time by which the job must be finished (``X-Request-Timeout``);
- ``start_by``: database time by which it must have started (fal's start timeout, and
  ``VIDQ_MAX_QUEUE_SECONDS``); ``start_error`` the error it then ends with;
- ``cancel_requested``: a cancel of the running job was asked for; the worker's heartbeat
  reads it and the worker stops the engine and records CANCELLED.

``ix_jobs_expiry_*`` hold only unfinished jobs with a deadline, so the reaper's expiry pass
reads no other row; ``ix_jobs_running_owner`` counts a user's running jobs for the claim.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

_TOKEN_LIMITS = ("max_queued", "max_running", "rate_per_minute", "daily_video_seconds")
_LIVE = "state IN ('PENDING', 'RETRY', 'RUNNING')"
_QUEUED = "state IN ('PENDING', 'RETRY')"


def upgrade() -> None:
    for name in _TOKEN_LIMITS:
        op.add_column("tokens", sa.Column(name, sa.BigInteger))
    op.add_column("jobs", sa.Column("max_running", sa.Integer))
    op.add_column(
        "jobs",
        sa.Column("video_seconds", sa.Float(precision=53), nullable=False, server_default="0"),
    )
    op.add_column("jobs", sa.Column("deadline_at", sa.Float(precision=53)))
    op.add_column("jobs", sa.Column("start_by", sa.Float(precision=53)))
    op.add_column("jobs", sa.Column("start_error", sa.Text))
    op.add_column(
        "jobs",
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    deadline = sa.text(f"deadline_at IS NOT NULL AND {_LIVE}")
    op.create_index(
        "ix_jobs_expiry_deadline", "jobs", ["deadline_at"],
        sqlite_where=deadline, postgresql_where=deadline,
    )  # fmt: skip
    start = sa.text(f"start_by IS NOT NULL AND {_QUEUED}")
    op.create_index(
        "ix_jobs_expiry_start", "jobs", ["start_by"], sqlite_where=start, postgresql_where=start
    )
    running = sa.text("state = 'RUNNING'")
    op.create_index(
        "ix_jobs_running_owner", "jobs", ["owner"],
        sqlite_where=running, postgresql_where=running,
    )  # fmt: skip
    # The rolling-minute and daily limits read a user's recent submits.
    op.create_index("ix_jobs_owner_created", "jobs", ["owner", "created_at"])


def downgrade() -> None:
    for index in (
        "ix_jobs_owner_created", "ix_jobs_running_owner", "ix_jobs_expiry_start",
        "ix_jobs_expiry_deadline",
    ):  # fmt: skip
        op.drop_index(index, "jobs")
    for column in (
        "cancel_requested", "start_error", "start_by", "deadline_at", "video_seconds",
        "max_running",
    ):  # fmt: skip
        op.drop_column("jobs", column)
    for name in reversed(_TOKEN_LIMITS):
        op.drop_column("tokens", name)
