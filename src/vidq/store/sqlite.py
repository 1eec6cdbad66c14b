"""SQLite driver of the job store: the embedded default.

A small pool of connections (``pool_size``), WAL journal, ``synchronous=FULL`` so that a 2xx
on submit survives a power cut. Autocommit: every statement is its own transaction, and
SQLite serialises writers. sqlite3 takes the statements' ``:name`` parameters as they are.

A thread takes a connection from the pool for one ``with session()`` (or ``transaction()``)
block and gives it back at its end; a block nested in another on the same thread uses the
same connection (a statement inside a transaction must see it). Connections are never tied
to a thread: the API's thread pools start and retire threads all the time, and a
connection per thread once grew by one per new thread until the process ran out of file
descriptors. When every connection is in use a block waits for one (up to the busy
timeout), so the process never holds more than ``pool_size`` open connections.

The writers of one process also queue on a lock of their own: SQLite's busy handler makes
a writer that finds the database locked sleep (1, 2, 5, 10 ... 100 ms) and try again, so
with a dozen request threads submitting at once the database sat idle between commits
while they slept (submits/s fell and p99 reached a second). The lock hands the database
straight to the next writer; writers in other processes still meet at SQLite's own lock.
Reads never take it (WAL readers do not wait for writers).

Wake-ups are in-process: a statement that queued jobs wakes the threads of this store
waiting in ``wait_for_jobs`` (the embedded worker pool); workers in other processes
find new jobs at their next poll.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vidq.errors import StoreUnavailable
from vidq.store.driver import Errors, Params, Row, Session, Wakeups
from vidq.store.sql import SQLStore
from vidq.store.statements import SQLiteStatements, Statement

_ERRORS = Errors("SQLite", refused=sqlite3.IntegrityError, failed=sqlite3.Error)


class SQLiteDriver:
    """Connections to one SQLite file (see module docstring)."""

    statements = SQLiteStatements
    inline_reads = True  # WAL readers never wait for writers: a read takes microseconds

    def __init__(
        self, path: Path | str, *, busy_timeout_s: float = 10.0, pool_size: int = 16
    ) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self.pool_size = pool_size
        self._local = threading.local()  # the connection a thread holds, and how deep
        self._idle: list[sqlite3.Connection] = []  # LIFO: the warmest connection first
        self._open = 0
        self._closed = False
        self._pool = threading.Condition()
        self._writing = threading.RLock()  # this process's writers, one at a time
        self.wakeups = Wakeups()

    def prepare(self, stmt: Statement) -> Statement:
        return stmt  # sqlite3 binds :name parameters itself

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A pooled connection for the block (see module docstring)."""
        with self._held() as conn:
            with _SQLiteSession(conn, _ERRORS, self._writing, queued=self.wakeups.wake) as db:
                yield db

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """``BEGIN IMMEDIATE`` on a pooled connection; waiting workers are woken after the
        COMMIT, when what woke them can be seen."""
        queued: list[bool] = []
        # the writer lock first: a writer waiting for its turn holds no pooled connection
        with self._writing, self._held() as conn, _ERRORS:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SQLiteSession(
                    conn, _ERRORS, self._writing, queued=lambda: queued.append(True)
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        if queued:
            self.wakeups.wake()

    @contextmanager
    def _held(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection for a block: the one it already holds (a nested
        block), else one from the pool, given back when the outermost block ends."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn = self._checkout()
        self._local.conn, self._local.depth = conn, 1
        try:
            yield conn
        finally:
            self._local.conn = None
            self._checkin(conn)

    def _checkout(self) -> sqlite3.Connection:
        deadline = time.monotonic() + self._busy_timeout_s
        with self._pool:
            while True:
                if self._closed:
                    raise StoreUnavailable("the SQLite job store is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self.pool_size:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StoreUnavailable(
                        f"all {self.pool_size} SQLite connections stayed busy for "
                        f"{self._busy_timeout_s:g} s"
                    )
                self._pool.wait(left)
        try:
            return self._connect()
        except BaseException:
            with self._pool:
                self._open -= 1
                self._pool.notify()
            raise

    def _checkin(self, conn: sqlite3.Connection) -> None:
        with self._pool:
            if not self._closed:
                self._idle.append(conn)
                self._pool.notify()
                return
            self._open -= 1
        _close_quietly(conn)

    def _connect(self) -> sqlite3.Connection:
        with _ERRORS:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,  # pooled: used by one thread at a time
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def open_connections(self) -> int:
        """How many connections the pool holds open now (idle and in use)."""
        with self._pool:
            return self._open

    def wait(self, timeout: float) -> None:
        self.wakeups.wait(timeout)

    def close(self) -> None:
        """Close the idle connections now and the others as their blocks end."""
        with self._pool:
            self._closed = True
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._pool.notify_all()
        for conn in idle:
            _close_quietly(conn)
        self.wakeups.wake()


def _close_quietly(conn: sqlite3.Connection) -> None:
    try:
        conn.close()
    except sqlite3.Error:
        pass


class SQLiteStore(SQLStore):
    """The job store on one SQLite file: ``SQLStore`` over ``SQLiteDriver``."""

    def __init__(
        self,
        path: Path | str,
        *,
        busy_timeout_s: float = 10.0,
        pool_size: int = 16,
        fair_share: bool = True,
    ) -> None:
        super().__init__(
            SQLiteDriver(path, busy_timeout_s=busy_timeout_s, pool_size=pool_size),
            fair_share=fair_share,
        )

    @classmethod
    def from_url(cls, url: str, *, fair_share: bool = True) -> SQLiteStore:
        """The store for a ``sqlite:///path`` URL."""
        return cls(url.removeprefix("sqlite:///"), fair_share=fair_share)


class _SQLiteSession(Session):
    """A session whose writing statements take the process's writer lock (see the
    module docstring) for as long as SQLite runs them, their RETURNING rows included."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        errors: Errors,
        writing: threading.RLock,
        queued: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(conn, errors, queued)
        self._writing = writing

    def row(self, stmt: Statement, params: Params) -> Row | None:
        if not stmt.writes:
            return super().row(stmt, params)
        with self._writing:
            return super().row(stmt, params)

    def rows(self, stmt: Statement, params: Params) -> list[Row]:
        if not stmt.writes:
            return super().rows(stmt, params)
        with self._writing:
            return super().rows(stmt, params)

    def count(self, stmt: Statement, params: Params) -> int:
        with self._writing:  # only writes report a count
            return super().count(stmt, params)
