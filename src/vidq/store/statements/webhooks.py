"""The statements of the webhook outbox (``WebhookStore``): the jobs table is the outbox."""

from __future__ import annotations

from vidq.store.rows import JOB_COLUMNS
from vidq.store.statements.base import RoleStatements, Statement

# A webhook that may be due: pending, its job finished. The predicate of ix_jobs_webhooks
# (migration 0004), so the dispatchers' poll reads that small index only.
_WEBHOOK_DUE = "webhook_state = 'pending' AND state IN ('COMPLETED', 'FAILED', 'CANCELLED')"


class WebhookStatements(RoleStatements):
    """Due deliveries, their leases and their outcomes."""

    # Due deliveries in id order from a cursor, so a dispatcher whose first rows all wait
    # on a slow receiver still reaches the others on its next polls.
    due_webhooks = Statement(f"""
        SELECT id, owner, webhook_url FROM jobs
        WHERE {_WEBHOOK_DUE} AND id > :after AND webhook_next_at <= {{NOW}}
        ORDER BY id LIMIT :limit""")
    # The lease of one attempt: it moves ``webhook_next_at`` past the attempt, so another
    # API process's take of the same row changes nothing (PostgreSQL re-checks the WHERE
    # on the row the first take committed).
    take_webhook = Statement(f"""
        UPDATE jobs SET webhook_next_at = {{NOW}} + :lease_s
        WHERE id = :id AND {_WEBHOOK_DUE} AND webhook_next_at <= {{NOW}}
        RETURNING {JOB_COLUMNS}, webhook_attempts""")
    # Fenced by the attempt count the take returned: a late result of an attempt whose
    # lease expired (and was taken again) changes nothing.
    webhook_result = Statement("""
        UPDATE jobs SET webhook_state = :state, webhook_attempts = webhook_attempts + 1,
            webhook_next_at = CASE WHEN :state = 'pending'
                THEN {NOW} + :retry_after_s ELSE NULL END
        WHERE id = :id AND webhook_state = 'pending' AND webhook_attempts = :attempts""")
