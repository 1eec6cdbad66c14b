"""SQLite driver of the job store: the embedded default.

One connection per thread, WAL journal, ``synchronous=FULL`` so that a 2xx on submit
survives a power cut. Autocommit: every statement is its own transaction, and SQLite
serialises writers. sqlite3 takes the statements' ``:name`` parameters as they are.

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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from vidq.store.driver import Errors, Params, Row, Session, Wakeups
from vidq.store.sql import SQLStore
from vidq.store.statements import SQLiteStatements, Statement

_ERRORS = Errors("SQLite", refused=sqlite3.IntegrityError, failed=sqlite3.Error)


class SQLiteDriver:
    """Connections to one SQLite file (see module docstring)."""

    statements = SQLiteStatements
    inline_reads = True  # WAL readers never wait for writers: a read takes microseconds

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._writing = threading.RLock()  # this process's writers, one at a time
        self.wakeups = Wakeups()

    def prepare(self, stmt: Statement) -> Statement:
        return stmt  # sqlite3 binds :name parameters itself

    def session(self) -> Session:
        """This thread's connection (a Session is its own context manager)."""
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            conn = self._local.conn = self._connect()
            session = self._local.session = _SQLiteSession(
                conn, _ERRORS, self._writing, queued=self.wakeups.wake
            )
        return session

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """``BEGIN IMMEDIATE`` on this thread's connection; waiting workers are woken
        after the COMMIT, when what woke them can be seen."""
        self.session()
        conn: sqlite3.Connection = self._local.conn
        queued: list[bool] = []
        with _ERRORS, self._writing:
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

    def _connect(self) -> sqlite3.Connection:
        with _ERRORS:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,  # autocommit: each statement is its own transaction
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self._all.append(conn)
        return conn

    def wait(self, timeout: float) -> None:
        self.wakeups.wait(timeout)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._all.clear()
        self._local = threading.local()
        self.wakeups.wake()


class SQLiteStore(SQLStore):
    """The job store on one SQLite file: ``SQLStore`` over ``SQLiteDriver``."""

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 10.0) -> None:
        super().__init__(SQLiteDriver(path, busy_timeout_s=busy_timeout_s))

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        """The store for a ``sqlite:///path`` URL."""
        return cls(url.removeprefix("sqlite:///"))


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
