"""Every SQL statement of the job store, by name, written once: one module per role of
the store (the protocols of ``store/base.py``), composed here into ``Statements``, and
the few statements that truly differ per database in one class per dialect.

``base``        ``Statement``, the ``{NOW}``/``{DAY}`` placeholders, how a namespace of
                statements is prepared for a driver
``submissions`` a user's jobs: the submit's INSERT (with the token's limits), status,
                positions, lists, cancel, usage (``SubmitStore``)
``queue``       the worker queue: claim, heartbeat, progress, complete, fail, release,
                reap, workers, depths (``WorkerStore``)
``tokens``      API tokens (``TokenStore``)
``uploads``     uploaded files (``UploadStore``)
``webhooks``    the webhook outbox (``WebhookStore``)
``operators``   the admin routes (``OperatorStore``)
``retention``   the collector: its lease, blobs due, purge into the rollup (``RetentionStore``)
``metrics``     job counters and histograms, gauges, recent run times (``MetricStore``,
                ``RunTimeStore``)

A statement has one name in one role module (``tests/unit/test_store_roles.py`` checks
it); each dialect subclass gives the clock expressions and overrides the statements that
differ: the claim, and PostgreSQL's per-user locks.
"""

from __future__ import annotations

from vidq.store.rows import JOB_COLUMNS
from vidq.store.statements.base import Statement
from vidq.store.statements.metrics import DURATION_BUCKETS, MetricStatements
from vidq.store.statements.operators import OperatorStatements
from vidq.store.statements.queue import FAIR_BEST, FAIR_TURN, FIRST_QUEUED, TAKE, QueueStatements
from vidq.store.statements.retention import RetentionStatements
from vidq.store.statements.submissions import SubmitStatements
from vidq.store.statements.tokens import TokenStatements
from vidq.store.statements.uploads import UploadStatements
from vidq.store.statements.webhooks import WebhookStatements

__all__ = [
    "DURATION_BUCKETS",
    "PostgresStatements",
    "SQLiteStatements",
    "Statement",
    "Statements",
]


class Statements(
    SubmitStatements,
    QueueStatements,
    TokenStatements,
    UploadStatements,
    WebhookStatements,
    OperatorStatements,
    RetentionStatements,
    MetricStatements,
):
    """Every role's statements in one namespace, as both dialects share them; a subclass
    per dialect fills in the rest."""


class SQLiteStatements(Statements):
    """SQLite: the clock from ``julianday``."""

    NOW = "((julianday('now') - 2440587.5) * 86400.0)"
    DAY = "(CAST(strftime('%s', 'now', 'start of day') AS REAL))"
    CREATED_DAY = "CAST(created_at / 86400 AS INTEGER)"  # truncates: the floor of a positive
    PROMPT = "CAST(json_extract(inputs, '$.prompt') AS TEXT)"
    # One UPDATE: SQLite takes the database's write lock when a writing statement starts,
    # before it reads (as BEGIN IMMEDIATE would), so two claimers never pick one row.
    claim = Statement(f"""
        UPDATE jobs SET {TAKE}
        WHERE id = ({FIRST_QUEUED})
        RETURNING {JOB_COLUMNS}""")


def _over_best(sql: str) -> str:
    """``sql`` with the pool and rank of the CTE ``best`` for ``:pool`` and ``:rank``."""
    return sql.replace(":pool", "(SELECT pool FROM best)").replace(
        ":rank", "(SELECT rank FROM best)"
    )


class PostgresStatements(Statements):
    """PostgreSQL: the transaction's ``now()`` (one instant for a whole statement, so the
    reaper compares every row against it and the planner can use ``ix_jobs_lease``)."""

    NOW = "extract(epoch from now())::float8"
    DAY = "extract(epoch from date_trunc('day', now() AT TIME ZONE 'UTC'))::float8"
    CREATED_DAY = "floor(created_at / 86400)::bigint"  # a plain cast would round
    PROMPT = "(inputs::jsonb ->> 'prompt')"
    # A transaction-scoped lock per user (key 1987470152 names vidq's submit limits).
    lock_user = Statement("SELECT pg_advisory_xact_lock(1987470152, hashtext(:owner))")
    # Key 1987470155 names a user's token creates (``TokenStatements.insert_user_token``).
    lock_token_owner = Statement("SELECT pg_advisory_xact_lock(1987470155, hashtext(:owner))")
    # Key 1987470153 names the claims' max_running check (see ``QueueStatements.lock_running``).
    lock_running = Statement("SELECT pg_advisory_xact_lock(1987470153, hashtext(:owner))")
    # Fair share's claim as two statements in one transaction: the lock of every pool the
    # worker claims from (key 1987470154 names the pools' fair-share claims; taken in the
    # pools' order, volatile functions being evaluated after the sort, so two claimers
    # never wait for each other crosswise), then, under a snapshot taken after the lock,
    # the best rank, the user whose turn it is and the take, as ``fair_best`` and
    # ``fair_take`` do on SQLite. The answer has a row whenever a job was claimable
    # (``best``); its job columns are NULL when the take missed it.
    fair_lock = Statement(
        "SELECT pg_advisory_xact_lock(1987470154, hashtext(pool)) IS NULL AS locked"
        " FROM unnest(ARRAY[{pools}]::text[]) AS pool ORDER BY pool"
    )
    fair_claim = Statement(f"""
        WITH best AS ({FAIR_BEST}),
        taken AS (
            UPDATE jobs SET {TAKE}
            WHERE id = coalesce(({_over_best(FAIR_TURN)}), (SELECT id FROM best))
                AND state IN ('PENDING', 'RETRY')
            RETURNING {JOB_COLUMNS}, max_running)
        SELECT best.id AS best, taken.* FROM best LEFT JOIN taken ON true""")
    # The CTE locks the first queued row that no other claimer holds (SKIP LOCKED), so
    # concurrent claimers neither block on nor share a row.
    claim = Statement(f"""
        WITH next AS ({FIRST_QUEUED}
            FOR UPDATE SKIP LOCKED)
        UPDATE jobs SET {TAKE}
        WHERE id = (SELECT id FROM next)
        RETURNING {JOB_COLUMNS}, max_running""")
