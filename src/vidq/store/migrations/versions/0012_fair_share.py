"""Fair share within a rank: users take turns (weighted round robin, least recently served).

tokens, jobs:
- ``weight``: claims a user gets in a row per turn (``vidq token create --weight N``,
  1..100); copied onto the job at submit like the token's limits.

turns, one row per (pool, owner) that ever queued a job in the pool:
- ``served``: when the user was last served in the pool, as a number that only grows
  (a turn ends: ``max(served) + 1`` of the pool, always > 0); a user never served there
  has ``first queued job id - 2**62``, below every served user, in submission order;
- ``used``: claims taken in the user's current turn (the turn ends at ``weight``);
  ``served`` and ``used`` move with the claim itself (a job leaving the queue for RUNNING),
  in the trigger below, so the claim's statement needs no second one;
- ``queued``: the user's PENDING/RETRY jobs in the pool, and ``best_rank``, the best
  (smallest) rank among them, kept by triggers on ``jobs`` (an insert, a change of state
  into or out of the queue, a delete), so the claim walks only users with something
  queued at the rank it serves or better (``ix_turns_next``: a premium job is not found
  after a walk past every user with only base jobs queued) and never sorts the queued
  jobs.

``ix_jobs_turn`` finds one user's first queued job at one rank (the claim's probe, and the
turn-aware queue positions' read of owners).

The claim (``store/statements/queue.py``, ``FAIR_*``) reads ``turns`` only when
``VIDQ_FAIR_SHARE`` is on; the triggers keep it current either way, so turning fair share
on later starts from true counts.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

_QUEUED = "IN ('PENDING', 'RETRY')"
NEVER_SERVED = 2**62  # a never-served user's ``served`` is their first job id minus this

# What a job entering the queue does to its user's row.
_ENTER = f"""
    INSERT INTO turns (pool, owner, served, used, queued, best_rank)
    VALUES (NEW.pool, NEW.owner, NEW.id - {NEVER_SERVED}, 0, 1, NEW.rank)
    ON CONFLICT (pool, owner) DO UPDATE SET queued = turns.queued + 1,
        best_rank = CASE WHEN turns.best_rank IS NULL OR NEW.rank < turns.best_rank
            THEN NEW.rank ELSE turns.best_rank END;
"""
# ... and one leaving it (the job's new state is visible: the trigger runs after it).
_LEAVE = f"""
    UPDATE turns SET queued = queued - 1, best_rank = (SELECT min(rank) FROM jobs
        WHERE pool = OLD.pool AND owner = OLD.owner AND state {_QUEUED})
    WHERE pool = OLD.pool AND owner = OLD.owner;
"""
# ... and one leaving it by a change of state: a claim (RUNNING) also counts in the user's
# turn, which ends after ``weight`` claims: then they go to the back of the pool's order.
_LEAVE_BY = f"""
    UPDATE turns SET queued = queued - 1, best_rank = (SELECT min(rank) FROM jobs
            WHERE pool = OLD.pool AND owner = OLD.owner AND state {_QUEUED}),
        served = CASE WHEN NEW.state = 'RUNNING' AND used + 1 >= NEW.weight
            THEN (SELECT coalesce(max(served), 0) + 1 FROM turns AS t
                WHERE t.pool = OLD.pool AND t.served > 0)
            ELSE served END,
        used = CASE WHEN NEW.state <> 'RUNNING' THEN used
            WHEN used + 1 >= NEW.weight THEN 0 ELSE used + 1 END
    WHERE pool = OLD.pool AND owner = OLD.owner;
"""

_PG_FUNCTION = f"""
CREATE FUNCTION vidq_count_turns() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.state {_QUEUED} THEN
        {_LEAVE_BY}
    ELSIF TG_OP = 'DELETE' THEN
        {_LEAVE}
    END IF;
    IF TG_OP <> 'DELETE' AND NEW.state {_QUEUED} THEN
        {_ENTER}
    END IF;
    RETURN NULL;
END $$ LANGUAGE plpgsql
"""


def upgrade() -> None:
    op.add_column("tokens", sa.Column("weight", sa.Integer, nullable=False, server_default="1"))
    op.add_column("jobs", sa.Column("weight", sa.Integer, nullable=False, server_default="1"))
    op.create_table(
        "turns",
        sa.Column("pool", sa.Text, primary_key=True),
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("served", sa.BigInteger, nullable=False),
        sa.Column("used", sa.Integer, nullable=False, server_default="0"),
        sa.Column("queued", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("best_rank", sa.Integer),
    )
    active = sa.text("queued > 0")
    op.create_index(
        "ix_turns_next", "turns", ["pool", "served", "best_rank"],
        sqlite_where=active, postgresql_where=active,
    )  # fmt: skip
    op.create_index("ix_turns_served", "turns", ["pool", "served"])
    queued = sa.text(f"state {_QUEUED}")
    op.create_index(
        "ix_jobs_turn", "jobs", ["pool", "owner", "rank", "id"],
        sqlite_where=queued, postgresql_where=queued,
    )  # fmt: skip
    # The queues as they are now: every user with queued jobs, never served yet.
    op.execute(f"""
        INSERT INTO turns (pool, owner, served, used, queued, best_rank)
        SELECT pool, owner, min(id) - {NEVER_SERVED}, 0, count(*), min(rank) FROM jobs
        WHERE state {_QUEUED} GROUP BY pool, owner""")
    if _sqlite():
        op.execute(
            "CREATE TRIGGER jobs_turns_insert AFTER INSERT ON jobs "
            f"WHEN NEW.state {_QUEUED} BEGIN {_ENTER} END"
        )
        op.execute(
            "CREATE TRIGGER jobs_turns_enter AFTER UPDATE OF state ON jobs "
            f"WHEN NEW.state {_QUEUED} AND NOT (OLD.state {_QUEUED}) BEGIN {_ENTER} END"
        )
        op.execute(
            "CREATE TRIGGER jobs_turns_leave AFTER UPDATE OF state ON jobs "
            f"WHEN OLD.state {_QUEUED} AND NOT (NEW.state {_QUEUED}) BEGIN {_LEAVE_BY} END"
        )
        op.execute(
            "CREATE TRIGGER jobs_turns_delete AFTER DELETE ON jobs "
            f"WHEN OLD.state {_QUEUED} BEGIN {_LEAVE} END"
        )
    else:
        op.execute(_PG_FUNCTION)
        op.execute(
            "CREATE TRIGGER jobs_turns_insert AFTER INSERT ON jobs FOR EACH ROW "
            f"WHEN (NEW.state {_QUEUED}) EXECUTE FUNCTION vidq_count_turns()"
        )
        op.execute(
            "CREATE TRIGGER jobs_turns_state AFTER UPDATE OF state ON jobs FOR EACH ROW "
            f"WHEN ((OLD.state {_QUEUED}) IS DISTINCT FROM (NEW.state {_QUEUED})) "
            "EXECUTE FUNCTION vidq_count_turns()"
        )
        op.execute(
            "CREATE TRIGGER jobs_turns_delete AFTER DELETE ON jobs FOR EACH ROW "
            f"WHEN (OLD.state {_QUEUED}) EXECUTE FUNCTION vidq_count_turns()"
        )


def downgrade() -> None:
    on = "" if _sqlite() else " ON jobs"
    triggers = ["jobs_turns_insert", "jobs_turns_delete"]
    triggers += ["jobs_turns_enter", "jobs_turns_leave"] if _sqlite() else ["jobs_turns_state"]
    for name in triggers:
        op.execute(f"DROP TRIGGER IF EXISTS {name}{on}")
    if not _sqlite():
        op.execute("DROP FUNCTION IF EXISTS vidq_count_turns()")
    op.drop_index("ix_jobs_turn", "jobs")
    op.drop_table("turns")
    op.drop_column("jobs", "weight")
    op.drop_column("tokens", "weight")


def _sqlite() -> bool:
    return bool(op.get_bind().dialect.name == "sqlite")
