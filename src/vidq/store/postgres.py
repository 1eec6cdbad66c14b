"""PostgreSQL driver of the job store: the scale-out database shared by API replicas and
workers.

A psycopg 3 connection pool in autocommit mode: every statement is its own transaction.
Pooled connections are checked before use, so the store recovers by itself once the
server is back. The statements' ``:name`` parameters become psycopg's ``%(name)s``.

Wake-ups cross processes: idle workers sleep in ``wait_for_jobs`` on one ``LISTEN
vidq_jobs`` connection per store, and every statement that queues jobs NOTIFYs that
channel itself (``prepare`` wraps it), so waking costs no round trip and is sent only
when the change commits.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool

from vidq.store.driver import Errors, Params, Session, Wakeups, describe
from vidq.store.sql import SQLStore
from vidq.store.statements import PostgresStatements, Statement

log = logging.getLogger(__name__)

CHANNEL = "vidq_jobs"
# How often the LISTEN thread looks up from its connection to see whether the store is
# closing: ``close()`` waits this long at most for it (each look is one poll(2)).
_LISTEN_POLL_S = 0.2
_ERRORS = Errors("PostgreSQL", refused=psycopg.IntegrityError, failed=psycopg.Error)
# A ``:name`` parameter; not the ``::type`` of a cast.
_PARAM = re.compile(r"(?<![:\w]):(\w+)")
# Wraps a ``wakes`` statement (its RETURNING rows carry state and pool): one NOTIFY per
# pool that got a queued job (PostgreSQL folds repeats within a transaction).
_NOTIFYING = """
    WITH changed AS ({sql})
    SELECT changed.*, CASE WHEN changed.state IN ('PENDING', 'RETRY')
        THEN pg_notify('{channel}', changed.pool) END AS woke
    FROM changed"""

Conn = psycopg.Connection[dict[str, Any]]


class PostgresDriver:
    """A pool of connections to one PostgreSQL database (see module docstring)."""

    statements = PostgresStatements
    inline_reads = False  # network round trips: the API reads from a thread

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 16,
        timeout_s: float = 3.0,
        connect_timeout_s: int = 3,
    ) -> None:
        self.conninfo = conninfo
        self._timeout_s = timeout_s
        self._connect_kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": connect_timeout_s,
        }
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            conninfo,
            connection_class=Conn,
            kwargs={**self._connect_kwargs, "row_factory": dict_row},
            configure=_configure,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout_s,
            # A connection broken by a server restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            # The pool's reconnect backoff doubles without bound: give up a series after
            # a few seconds so the next request starts a fresh, immediate attempt, and
            # the store is back within moments of the server.
            reconnect_timeout=5.0,
            name="vidq",
            open=False,
        )
        self._pool.open(wait=False)
        self.wakeups = Wakeups()  # fed by the LISTEN thread
        self._listener: threading.Thread | None = None
        self._listener_lock = threading.Lock()
        self._closing = threading.Event()

    def prepare(self, stmt: Statement) -> Statement:
        # psycopg reads % as the start of a placeholder: literal ones are doubled first.
        sql = _PARAM.sub(r"%(\1)s", stmt.sql.replace("%", "%%"))
        if stmt.wakes:
            sql = _NOTIFYING.format(sql=sql, channel=CHANNEL)
        return dataclasses.replace(stmt, sql=sql)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with _ERRORS, self._pool.connection(timeout=self._timeout_s) as conn:
            yield _PgSession(conn)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with _ERRORS, self._pool.connection(timeout=self._timeout_s) as conn:
            with conn.transaction():
                yield _PgSession(conn)

    def wait(self, timeout: float) -> None:
        self._ensure_listener()
        self.wakeups.wait(timeout)

    def close(self) -> None:
        self._closing.set()
        self.wakeups.wake()
        self._pool.close()
        if self._listener is not None:
            self._listener.join(5)

    def _ensure_listener(self) -> None:
        if self._listener is not None or self._closing.is_set():
            return
        with self._listener_lock:
            if self._listener is None:
                self._listener = threading.Thread(
                    target=self._listen, name="vidq-pg-listen", daemon=True
                )
                self._listener.start()

    def _listen(self) -> None:
        """Holds one LISTEN connection; reconnects after outages (waking everyone, since
        notifications sent while disconnected are lost)."""
        while not self._closing.is_set():
            try:
                with psycopg.connect(self.conninfo, **self._connect_kwargs) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self.wakeups.wake()
                    while not self._closing.is_set():
                        for _ in conn.notifies(timeout=_LISTEN_POLL_S, stop_after=1):
                            self.wakeups.wake()
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost: %s", describe(exc))
                self._closing.wait(1.0)


def _configure(conn: Conn) -> None:
    """Each pooled connection's settings, once. JIT compilation off: vidq's statements are
    short ones over indexes, but the claim's estimated cost grows with the jobs in retry
    back-off it may have to pass (about 800,000 with 100,000 of them, over the default
    ``jit_above_cost`` of 100,000), and compiling it then took 0.2-0.9 s on each claim."""
    conn.execute("SET jit = off")


class _PgSession(Session):
    """Reads by position come as plain tuples in binary format: the cheapest shape."""

    def __init__(self, conn: Conn) -> None:
        super().__init__(conn, _ERRORS)
        self._pg = conn

    def values(self, stmt: Statement, params: Params) -> Sequence[Sequence[Any]]:
        cur = self._pg.cursor(row_factory=tuple_row)
        return cur.execute(stmt.sql, params, binary=True).fetchall()


class PostgresStore(SQLStore):
    """The job store on a PostgreSQL server: ``SQLStore`` over ``PostgresDriver``."""

    def __init__(self, conninfo: str, *, fair_share: bool = True, **pool: Any) -> None:
        super().__init__(PostgresDriver(conninfo, **pool), fair_share=fair_share)

    @classmethod
    def from_url(cls, url: str, *, fair_share: bool = True) -> PostgresStore:
        """The store for a ``postgresql://`` (or ``postgres://``) URL."""
        if url.startswith("postgres://"):
            url = "postgresql://" + url.removeprefix("postgres://")
        return cls(url, fair_share=fair_share)
