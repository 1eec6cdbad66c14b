"""The job store: every JobStore method, written once over a database driver, grouped
by role.

The shape of procrastinate's ``JobManager(connector)`` and pgqueuer's ``Queries(driver)``:
each role's class (``submissions``, ``queue``, ``tokens``, ``uploads``, ``webhooks``,
``operators``, ``retention``, ``metrics``; their base in ``core``) decides what to run and
how to read the answer for the methods of its protocol in ``store/base.py``; ``SQLStore``
composes them into the one store. The statements are named in ``store/statements/`` (one
module per role, the same names); the driver (``sqlite.py``, ``postgres.py``) runs them,
translates its errors and wakes workers. Each method is one statement on one connection,
except where a comment says why not; time is always the database's clock.
"""

from __future__ import annotations

from vidq.store.driver import Driver
from vidq.store.sql.metrics import MetricQueries
from vidq.store.sql.operators import OperatorQueries
from vidq.store.sql.queue import QueueQueries
from vidq.store.sql.retention import RetentionQueries
from vidq.store.sql.submissions import SubmitQueries
from vidq.store.sql.tokens import TokenQueries
from vidq.store.sql.uploads import UploadQueries
from vidq.store.sql.webhooks import WebhookQueries

__all__ = ["SQLStore"]


class SQLStore(
    SubmitQueries,
    QueueQueries,
    TokenQueries,
    UploadQueries,
    WebhookQueries,
    OperatorQueries,
    RetentionQueries,
    MetricQueries,
):
    """JobStore over a ``Driver``: every role's queries, one class (see module docstring
    and ``base.JobStore``)."""

    def __init__(self, driver: Driver, *, fair_share: bool = True) -> None:
        super().__init__(driver)
        self.fair_share = fair_share
