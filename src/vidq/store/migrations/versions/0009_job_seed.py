"""The seed a job runs with, as a column the status poll reads.

jobs:
- ``seed``: the request's ``seed`` (given, or drawn at submit), copied at submit like
  ``higher_quality``, so that a status poll reports it without parsing the inputs. Jobs
  queued before this revision get theirs from the inputs where they had one.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("seed", sa.BigInteger))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "UPDATE jobs SET seed = json_extract(inputs, '$.seed') "
            "WHERE json_type(inputs, '$.seed') = 'integer'"
        )
    else:
        op.execute(
            "UPDATE jobs SET seed = (inputs::jsonb ->> 'seed')::numeric::bigint "
            "WHERE jsonb_typeof(inputs::jsonb -> 'seed') = 'number'"
        )


def downgrade() -> None:
    op.drop_column("jobs", "seed")
