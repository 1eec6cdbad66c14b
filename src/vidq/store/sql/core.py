"""What the methods of every role share: the driver, its prepared statements, one
statement on one connection, and the database clock."""

from __future__ import annotations

from typing import Any

from vidq.store.driver import Driver, Row
from vidq.store.statements import Statement

# A cursor for the first page of list_jobs: above every id.
# A worker seen within this long is alive (the registry's gauges, the per-token bound).
LIVE_WINDOW_S = 60.0
NO_CURSOR = 2**62


class Queries:
    """The base of every role's queries (``sql/<role>.py``): a role's class holds its
    methods, ``SQLStore`` composes them all over one driver."""

    # Claims take turns between users within a rank (``VIDQ_FAIR_SHARE``; the claim in
    # ``sql/queue.py``, the positions in ``sql/submissions.py``); False: FIFO by (rank, id).
    fair_share: bool = True

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.inline_reads = driver.inline_reads
        self._dialect = driver.statements
        self._sql = driver.statements.prepared(driver.prepare)

    def close(self) -> None:
        self.driver.close()

    def now(self) -> float:
        row = self._row(self._sql.now)
        assert row is not None
        return float(row["now"])

    # -- one statement, one connection ---------------------------------------------------
    def _row(self, stmt: Statement, **params: Any) -> Row | None:
        with self.driver.session() as db:
            return db.row(stmt, params)

    def _rows(self, stmt: Statement, **params: Any) -> list[Row]:
        with self.driver.session() as db:
            return db.rows(stmt, params)

    def _count(self, stmt: Statement, **params: Any) -> int:
        with self.driver.session() as db:
            return db.count(stmt, params)
