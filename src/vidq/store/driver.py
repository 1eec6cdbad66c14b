"""What the SQL store needs of a database driver, and the pieces both drivers share.

A driver (``sqlite.SQLiteDriver``, ``postgres.PostgresDriver``) holds only what differs
between databases: connections and transactions, its placeholder style, what its
exceptions mean, and how waiting workers are woken. Every JobStore method is written
once, in ``sql.SQLStore``, over this protocol.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any, Protocol

from vidq.errors import Conflict, StoreUnavailable
from vidq.jobs import JobState
from vidq.store.statements import Statement, Statements

Params = Mapping[str, Any]


class Row(Protocol):
    """A result row read by column name (sqlite3.Row, psycopg's dict rows)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Cursor(Protocol):
    """The part of a DB-API cursor the store uses."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    """The part of a DB-API connection the store uses (sqlite3, psycopg)."""

    def execute(self, query: str, params: Params, /) -> Cursor: ...


class Driver(Protocol):
    """One database, as the SQL store sees it."""

    @property
    def statements(self) -> type[Statements]:
        """The dialect: its clock, its claim and its locks, over every role's statements."""

    @property
    def inline_reads(self) -> bool:
        """See ``SubmitStore.inline_reads``."""

    @property
    def wakeups(self) -> Wakeups:
        """What ``wait`` sleeps on; ``SQLStore.claim`` marks each look at the queue."""

    def prepare(self, stmt: Statement) -> Statement:
        """``stmt`` as this driver runs it: ``:name`` parameters in its own style, and,
        if the driver wakes workers in SQL, a ``wakes`` statement made to do so."""

    def session(self) -> AbstractContextManager[Session]:
        """A connection for the statements of one ``with`` block. Driver errors raised in
        the block leave it as vidq errors (see ``Errors``)."""

    def transaction(self) -> AbstractContextManager[Session]:
        """Like ``session``, but the block's statements are one transaction (committed
        when the block ends, rolled back if it raises); SQLite's takes the write lock at
        once, so such transactions never interleave."""

    def wait(self, timeout: float) -> None:
        """Sleep until a statement that queued jobs wakes this process, or ``timeout``."""

    def close(self) -> None:
        """Release connections and wake every waiter."""


@dataclasses.dataclass(frozen=True, slots=True)
class Errors:
    """A driver's exceptions turned into vidq errors, as a context manager: a write the
    schema refuses (a constraint) is ``Conflict``, retrying would not help; any other
    driver error is ``StoreUnavailable``, retry later. The driver's exception is the cause;
    the layers above never see it."""

    database: str  # named in the messages
    refused: type[BaseException]  # the driver's integrity error
    failed: type[BaseException]  # the driver's base error

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, self.refused):
            raise Conflict(f"{self.database} refused the change: {describe(exc)}") from exc
        if isinstance(exc, self.failed):
            raise StoreUnavailable(f"{self.database} error: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """A one-line reason without the connection string (it may hold a password)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class Session:
    """Statements on one connection, for one ``with driver.session()`` block.

    ``queued`` is called after a ``wakes`` statement that put jobs in the queue, for
    drivers that wake their workers in-process; a driver that wakes them in SQL (a
    NOTIFY in the statement itself) passes None."""

    def __init__(
        self, conn: Connection, errors: Errors, queued: Callable[[], None] | None = None
    ) -> None:
        self._conn = conn
        self._errors = errors
        self._queued = queued

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._errors.__exit__(kind, exc, tb)

    def row(self, stmt: Statement, params: Params) -> Row | None:
        """The first row ``stmt`` returns, or None."""
        row: Row | None = self._conn.execute(stmt.sql, params).fetchone()
        if stmt.wakes and row is not None:
            self._woke([row])
        return row

    def rows(self, stmt: Statement, params: Params) -> list[Row]:
        """Every row ``stmt`` returns."""
        rows: list[Row] = self._conn.execute(stmt.sql, params).fetchall()
        if stmt.wakes:
            self._woke(rows)
        return rows

    def run(self, stmt: Statement, params: Params) -> None:
        """Runs ``stmt`` for its effect (a lock, say); its answer is not read."""
        assert not stmt.wakes, "a statement that queues jobs must return its rows"
        self._conn.execute(stmt.sql, params)

    def count(self, stmt: Statement, params: Params) -> int:
        """How many rows ``stmt`` changed."""
        assert not stmt.wakes, "a statement that queues jobs must return its rows"
        return self._conn.execute(stmt.sql, params).rowcount

    def values(self, stmt: Statement, params: Params) -> Sequence[Sequence[Any]]:
        """Every row ``stmt`` returns, read by position: the cheapest shape, for the
        status poll and queue snapshots."""
        rows: Sequence[Sequence[Any]] = self._conn.execute(stmt.sql, params).fetchall()
        return rows

    def _woke(self, rows: Sequence[Row]) -> None:
        if self._queued is not None and any(JobState(r["state"]).queued for r in rows):
            self._queued()


class Wakeups:
    """Wakes the threads of this process that wait for jobs.

    A generation counter, so that a wake-up is never lost: a thread that looked at the
    queue (``before_claim``) at generation g does not sleep once the counter has moved,
    even if the wake-up came between its claim and its wait."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._seen = threading.local()

    def before_claim(self) -> None:
        """The calling thread is about to look at the queue."""
        self._seen.generation = self._generation

    def wake(self) -> None:
        """Jobs may have been queued: wake every waiter."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep until ``wake`` or ``timeout``; at once if woken since ``before_claim``."""
        seen = getattr(self._seen, "generation", None)
        with self._cond:
            if seen is not None and seen != self._generation:
                return
            self._cond.wait(timeout)
