"""What the statements of every role share: ``Statement``, the database clock, and how a
namespace of named statements is filled in for one dialect and one driver.

In a statement ``:name`` is a parameter (each driver converts it to its own placeholder
style), ``{NOW}`` the database clock in seconds since the epoch, ``{DAY}`` the start of the
current UTC day, ``{CREATED_DAY}`` the UTC day a job was created on (whole days since the
epoch), ``{PROMPT}`` a job's prompt input as text; each dialect (``statements/__init__.py``)
gives those expressions.

A statement marked ``wakes`` may move jobs into the queue (PENDING or RETRY); it returns
the ``state`` and ``pool`` of every row it changed, and when one of them is queued the
driver wakes the waiting workers. Every such transition must be one of these statements:
a worker asleep in ``wait_for_jobs`` would otherwise wait a whole poll interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar, Self


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    """One named SQL statement."""

    sql: str
    wakes: bool = False  # may queue jobs: returns (state, pool) rows; the driver wakes workers
    writes: bool = dataclasses.field(init=False, default=False)  # not a plain SELECT

    def __post_init__(self) -> None:
        object.__setattr__(self, "writes", not self.sql.lstrip().upper().startswith("SELECT"))


class RoleStatements:
    """A namespace of named statements. Each role's statements are one (``submissions``,
    ``queue``, ``tokens``, ...: the modules of this package); ``Statements`` composes them,
    and a subclass per dialect fills in its expressions and its few statements of its own."""

    NOW: ClassVar[str]  # the database clock as float seconds since the epoch
    DAY: ClassVar[str]  # the start of the current UTC day, in the same unit
    CREATED_DAY: ClassVar[str]  # a job's ``created_at`` as whole UTC days since the epoch
    PROMPT: ClassVar[str]  # a job's ``prompt`` input as text (NULL without one)

    now = Statement("SELECT {NOW} AS now")

    @classmethod
    def prepared(cls, prepare: Callable[[Statement], Statement]) -> Self:
        """The dialect's statements with its expressions filled in, each passed through
        a driver's ``prepare`` (placeholders, wake-ups). The claim is left out: its
        parameters depend on the number of pools (see ``with_pools``)."""
        done = object.__new__(cls)
        for name in dir(cls):
            stmt = getattr(cls, name)
            if isinstance(stmt, Statement) and "{pools}" not in stmt.sql:
                setattr(done, name, prepare(cls.expand(stmt)))
        return done

    @classmethod
    def expand(cls, stmt: Statement) -> Statement:
        """``stmt`` with this dialect's ``{NOW}``, ``{DAY}``, ``{CREATED_DAY}`` and
        ``{PROMPT}``."""
        sql = stmt.sql.replace("{CREATED_DAY}", cls.CREATED_DAY).replace("{PROMPT}", cls.PROMPT)
        sql = sql.replace("{DAY}", cls.DAY).replace("{NOW}", cls.NOW)
        return dataclasses.replace(stmt, sql=sql)

    @classmethod
    def with_pools(cls, stmt: Statement, count: int) -> Statement:
        """``stmt`` (not yet prepared) with ``{pools}`` as parameters ``:pool0``, ``:pool1``..."""
        names = ", ".join(f":pool{i}" for i in range(count))
        return cls.expand(dataclasses.replace(stmt, sql=stmt.sql.replace("{pools}", names)))
