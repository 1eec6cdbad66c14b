"""The job store's ports by role (``store/base.py``) and their one implementation.

``JobStore`` is exactly the union of the roles; ``SQLStore`` writes each method once, in
the query class of a role that declares it (``store/sql/<role>.py``), and that class runs
only the statements of the same role (``store/statements/<role>.py``), where each
statement has one name. What the store *does* is the contract suite's
(``tests/integration/test_store_contract.py``); this is where it lives.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from vidq.store.base import (
    JobStore,
    MetricStore,
    OperatorStore,
    RetentionStore,
    RunTimeStore,
    SubmitStore,
    TokenStore,
    UploadStore,
    WebhookStore,
    WorkerStore,
)
from vidq.store.sql import SQLStore
from vidq.store.sql.core import Queries
from vidq.store.sql.metrics import MetricQueries
from vidq.store.sql.operators import OperatorQueries
from vidq.store.sql.queue import QueueQueries
from vidq.store.sql.retention import RetentionQueries
from vidq.store.sql.submissions import SubmitQueries
from vidq.store.sql.tokens import TokenQueries
from vidq.store.sql.uploads import UploadQueries
from vidq.store.sql.webhooks import WebhookQueries
from vidq.store.statements import PostgresStatements, SQLiteStatements, Statement, Statements
from vidq.store.statements.base import RoleStatements
from vidq.store.statements.metrics import MetricStatements
from vidq.store.statements.operators import OperatorStatements
from vidq.store.statements.queue import QueueStatements
from vidq.store.statements.retention import RetentionStatements
from vidq.store.statements.submissions import SubmitStatements
from vidq.store.statements.tokens import TokenStatements
from vidq.store.statements.uploads import UploadStatements
from vidq.store.statements.webhooks import WebhookStatements

# Each role, the query class that implements it and the statements that class runs.
ROLES: dict[type, tuple[type[Queries], type[RoleStatements]]] = {
    SubmitStore: (SubmitQueries, SubmitStatements),
    WorkerStore: (QueueQueries, QueueStatements),
    TokenStore: (TokenQueries, TokenStatements),
    UploadStore: (UploadQueries, UploadStatements),
    WebhookStore: (WebhookQueries, WebhookStatements),
    OperatorStore: (OperatorQueries, OperatorStatements),
    RetentionStore: (RetentionQueries, RetentionStatements),
    MetricStore: (MetricQueries, MetricStatements),
    RunTimeStore: (MetricQueries, MetricStatements),
}
# What every role shares: the clock and closing (``store/sql/core.py``).
CORE = {"now", "close"}


def declared(protocol: type) -> set[str]:
    """The public members a protocol declares itself (methods and attributes)."""
    own = set(vars(protocol)) | set(getattr(protocol, "__annotations__", {}))
    return {name for name in own if not name.startswith("_")}


def named(statements: type[RoleStatements]) -> set[str]:
    """The statements a namespace names itself (those a dialect fills in included)."""
    own = {n for n, v in vars(statements).items() if isinstance(v, Statement)}
    return own | {n for n in vars(statements).get("__annotations__", {}) if n.islower()}


def public_methods(cls: type) -> set[str]:
    """The public methods ``cls`` defines itself."""
    return {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}


def test_job_store_is_the_union_of_the_roles_and_nothing_else() -> None:
    roles = set().union(*(declared(role) for role in ROLES))
    assert set(JobStore.__mro__[1:-1]) >= set(ROLES)
    assert declared(JobStore) == {"close"}
    assert roles | {"close"} == {
        name for cls in JobStore.__mro__ if cls is not object for name in declared(cls)
    }


def test_the_one_store_implements_every_role() -> None:
    for role in (*ROLES, JobStore):
        for name in declared(role) | (CORE if role is JobStore else set()):
            assert hasattr(SQLStore, name) or name == "inline_reads", (role.__name__, name)
    assert set(SQLStore.__bases__) == {cls for cls, _ in ROLES.values()}


def test_every_method_is_written_once_in_a_class_of_a_role_that_declares_it() -> None:
    homes: dict[str, list[type]] = {}
    for cls in SQLStore.__mro__:
        for name in public_methods(cls):
            homes.setdefault(name, []).append(cls)
    for name, classes in homes.items():
        assert len(classes) == 1, (name, classes)
        (home,) = classes
        if home is Queries:
            assert name in CORE
            continue
        roles = [role for role, (cls, _) in ROLES.items() if cls is home]
        assert any(name in declared(role) for role in roles), (name, home.__name__)


def test_a_statement_has_one_name_in_one_role() -> None:
    seen: dict[str, str] = {}
    for cls in (RoleStatements, *Statements.__bases__):
        for name in named(cls):
            assert name not in seen, (name, seen.get(name), cls.__name__)
            seen[name] = cls.__name__
    assert {cls for _, cls in ROLES.values()} == set(Statements.__bases__)
    # ... and those are all of them: PostgreSQL's dialect has a value for every one
    every = {
        n for n in dir(PostgresStatements) if isinstance(getattr(PostgresStatements, n), Statement)
    }
    assert set(seen) == every
    # a dialect gives its clock (and the UTC day of a submit) and overrides only the
    # statements that truly differ
    for dialect in (SQLiteStatements, PostgresStatements):
        own = {n for n in vars(dialect) if not n.startswith("_")}
        clock = {"NOW", "DAY", "CREATED_DAY", "PROMPT"}  # and the prompt of a job's inputs
        assert own <= clock | {
            "claim",
            "lock_user",
            "lock_running",
            "fair_lock",
            "fair_claim",
            "lock_token_owner",
        }, own


def test_each_role_runs_the_statements_of_its_own_role() -> None:
    """``self._sql.<name>`` in a role's module names a statement of that role's module
    (or the shared clock): the statements split along the same lines as the methods."""
    for cls, statements in {*ROLES.values()}:
        source = Path(inspect.getfile(cls)).read_text()
        used = set(re.findall(r"self\._sql\.(\w+)", source))
        used |= set(re.findall(r"self\._dialect\.(\w+)", source)) - {"with_pools"}
        own = named(statements) | set(vars(statements)) | named(RoleStatements)
        assert used, cls.__name__
        assert used <= own, (cls.__name__, used - own)
