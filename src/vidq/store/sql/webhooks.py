"""The webhook outbox (``WebhookStore``): due deliveries, one lease per attempt, and
outcomes fenced by the attempt count."""

from __future__ import annotations

from vidq.jobs import WebhookState
from vidq.store.base import DueWebhook, WebhookDelivery
from vidq.store.rows import job_from_row
from vidq.store.sql.core import Queries


class WebhookQueries(Queries):
    """``WebhookStore`` (see ``base.WebhookStore``)."""

    def due_webhooks(self, limit: int, after_id: int = 0) -> list[DueWebhook]:
        rows = self._rows(self._sql.due_webhooks, after=after_id, limit=limit)
        return [DueWebhook(int(r["id"]), r["owner"], r["webhook_url"]) for r in rows]

    def take_webhook(self, job_id: int, lease_s: float) -> WebhookDelivery | None:
        row = self._row(self._sql.take_webhook, id=job_id, lease_s=lease_s)
        return WebhookDelivery(job_from_row(row), int(row["webhook_attempts"])) if row else None

    def webhook_result(
        self, job_id: int, attempts: int, state: WebhookState, retry_after_s: float = 0.0
    ) -> bool:
        changed = self._count(
            self._sql.webhook_result, id=job_id, attempts=attempts, state=state.value,
            retry_after_s=retry_after_s,
        )  # fmt: skip
        return changed == 1
