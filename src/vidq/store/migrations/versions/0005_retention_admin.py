"""Retention, paused pools, the collector's lease, counters of purged jobs, admin retries.

- ``jobs.inputs_expired_at`` / ``inputs_deleted_at``: the collector marks a finished
  job's inputs expired *before* it deletes their blobs, and deleted after; a rerun after a
  crash finishes the jobs marked but not deleted.
- ``jobs.expired_at`` / ``output_deleted_at``: the same for the output. From
  ``expired_at`` on the API answers 410 for the result (the row says so before any blob
  is gone: a job never points at a missing blob without saying so).
- ``jobs.past_attempts`` / ``admin_retries``: what an admin retry (FAILED -> queued,
  attempts reset) recorded, so that attempt and failure counters never go backwards.
- ``paused_pools``: pools no worker claims from (survives restarts).
- ``leases``: named leases on the database clock; ``gc`` makes the collector run in one
  process of the fleet at a time.
- ``metric_rollup``: the job counters of rows the collector purged (``JOB_TTL``), so the
  counters derived from the jobs table stay monotonic.
- ``workers.engines``: ``pool=engine,...`` a worker serves, for ``GET /admin/workers``.

Partial indexes on ``finished_at`` list, oldest first, what the collector still has to
do: ``ix_jobs_inputs_due`` (finished jobs whose inputs are not deleted yet),
``ix_jobs_outputs_due`` (completed jobs whose output is not deleted yet) and
``ix_jobs_finished`` (finished jobs, for purging rows past ``JOB_TTL``).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_FINISHED = sa.text("state IN ('COMPLETED', 'FAILED', 'CANCELLED')")
_INPUTS_DUE = sa.text("state IN ('COMPLETED', 'FAILED', 'CANCELLED') AND inputs_deleted_at IS NULL")
_OUTPUTS_DUE = sa.text("state = 'COMPLETED' AND output_deleted_at IS NULL")
_FLOAT = sa.Float(precision=53)


def upgrade() -> None:
    for column in ("inputs_expired_at", "inputs_deleted_at", "expired_at", "output_deleted_at"):
        op.add_column("jobs", sa.Column(column, _FLOAT))
    op.add_column(
        "jobs", sa.Column("past_attempts", sa.Integer, nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("admin_retries", sa.Integer, nullable=False, server_default="0")
    )
    op.create_index(
        "ix_jobs_finished", "jobs", ["finished_at"], sqlite_where=_FINISHED,
        postgresql_where=_FINISHED,
    )  # fmt: skip
    for name, where in (("ix_jobs_inputs_due", _INPUTS_DUE), ("ix_jobs_outputs_due", _OUTPUTS_DUE)):
        op.create_index(name, "jobs", ["finished_at"], sqlite_where=where, postgresql_where=where)
    op.add_column("workers", sa.Column("engines", sa.Text))
    op.create_table(
        "paused_pools",
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("paused_at", _FLOAT, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("until", _FLOAT, nullable=False),
    )
    op.create_table(
        "metric_rollup",
        sa.Column("family", sa.Text, primary_key=True),
        sa.Column("labels", sa.Text, primary_key=True),
        sa.Column("value", _FLOAT, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metric_rollup")
    op.drop_table("leases")
    op.drop_table("paused_pools")
    op.drop_column("workers", "engines")
    for index in ("ix_jobs_finished", "ix_jobs_inputs_due", "ix_jobs_outputs_due"):
        op.drop_index(index, "jobs")
    for column in (
        "admin_retries", "past_attempts", "output_deleted_at", "expired_at",
        "inputs_deleted_at", "inputs_expired_at",
    ):  # fmt: skip
        op.drop_column("jobs", column)
