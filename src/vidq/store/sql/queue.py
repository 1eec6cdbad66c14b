"""The worker queue (``WorkerStore``): claims (fair share or FIFO, with the
``max_running`` check), the fenced updates of a running job, the reaper, waiting for
jobs, the worker registry and the queue depths."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from vidq.jobs import Claim, Ran, WorkerState
from vidq.store.base import Lease, ReapResult
from vidq.store.driver import Driver, Row, Session
from vidq.store.rows import claim_from_row, dumps
from vidq.store.sql.core import LIVE_WINDOW_S, Queries
from vidq.store.statements import Statement

# Claims rolled back (over a user's max_running, or beaten to the job) before a claim
# gives up (returns None).
_CLAIM_TRIES = 5


class _Missed(Exception):
    """A claim's transaction is rolled back and the claim tries again."""


class _OverLimit(_Missed):
    """A claim found its user over ``max_running``: its transaction is rolled back."""


class QueueQueries(Queries):
    """``WorkerStore`` (see ``base.WorkerStore``)."""

    def __init__(self, driver: Driver) -> None:
        super().__init__(driver)
        # the claims' statements with ``{pools}``, by their text and number of pools
        self._claims: dict[tuple[str, int], Statement] = {}

    def claim(self, pools: Sequence[str], worker: str, lease_s: float) -> Claim | None:
        self.driver.wakeups.before_claim()
        if not pools:
            return None
        params: dict[str, Any] = {f"pool{i}": pool for i, pool in enumerate(pools)}
        params.update(token=secrets.token_hex(16), worker=worker, lease_s=lease_s)
        if self.fair_share:
            take = self._claim_fair
        elif self._sql.lock_running is None:
            row = self._row(self._claim(len(pools)), **params)
            return claim_from_row(row) if row else None
        else:
            take = self._claim_checked
        for _ in range(_CLAIM_TRIES):
            try:
                return take(params, len(pools))
            except _Missed:
                continue  # rolled back; the next try sees what the other claims took
        return None

    def _claim_checked(self, params: dict[str, Any], pools: int) -> Claim | None:
        """The FIFO claim in a transaction that, when the job's user has ``max_running``,
        counts their running jobs under a per-user lock and rolls itself back when over
        (see ``Statements.lock_running``). Claims of users without a limit take no lock."""
        with self.driver.transaction() as db:
            row = db.row(self._claim(pools), params)
            if row is None:
                return None
            self._check_running(db, row)
            return claim_from_row(row)

    def _claim_fair(self, params: dict[str, Any], pools: int) -> Claim | None:
        """Fair share's claim (``VIDQ_FAIR_SHARE``; see ``QueueStatements.fair_take``), one
        transaction: the best claimable rank and its pool; the user served least recently
        with a claimable job there, their first one taken, and their turn advanced. On
        PostgreSQL under the lock of the worker's pools, so a pool's claims take turns one
        at a time and each sees the last one's turn, in one statement after the lock
        (``PostgresStatements.fair_claim``). Rolled back (``_Missed``) when
        another claim took the job meanwhile, or the user is over ``max_running``
        (PostgreSQL's re-check)."""
        # Where a read takes microseconds (SQLite), an idle worker's poll of an empty
        # queue ends here, without the write lock. On PostgreSQL the peek would be a round
        # trip more for every claim; the transaction's first statement answers it too.
        peek = self._with_pools(self._dialect.fair_peek, pools)
        if self.inline_reads and self._row(peek, **params) is None:
            return None
        lock, claim = self._dialect.fair_lock, self._dialect.fair_claim
        if lock is not None and claim is not None:
            with self.driver.transaction() as db:
                db.run(self._with_pools(lock, pools), params)
                row = db.row(self._with_pools(claim, pools), params)
                if row is None:
                    return None
                if row["id"] is None:
                    raise _Missed
                self._check_running(db, row)
                return claim_from_row(row)
        with self.driver.transaction() as db:
            best = db.row(self._fair_best(pools), params)
            if best is None:
                return None
            pick = {"pool": best["pool"], "rank": best["rank"], "id": best["id"]}
            row = db.row(self._sql.fair_take, {**params, **pick})
            if row is None:
                raise _Missed
            self._check_running(db, row)
            return claim_from_row(row)

    def _check_running(self, db: Session, row: Row) -> None:
        """PostgreSQL: raise ``_OverLimit`` when the claimed job's user is over their
        ``max_running`` counting every committed claim (see ``Statements.lock_running``)."""
        limit = row["max_running"]
        if self._sql.lock_running is None or limit is None:
            return
        db.row(self._sql.lock_running, {"owner": row["owner"]})
        counted = db.row(self._sql.running_of, {"owner": row["owner"]})
        if counted is not None and int(counted["n"]) > int(limit):
            raise _OverLimit

    def completed_by(self, job_id: int, token: str, key: str) -> bool:
        return self._row(self._sql.completed_by, id=job_id, token=token, key=key) is not None

    def claimed(self, job_id: int) -> Claim | None:
        row = self._row(self._sql.claimed, id=job_id)
        return claim_from_row(row) if row else None

    def _claim(self, pools: int) -> Statement:
        return self._with_pools(self._dialect.claim, pools)

    def _fair_best(self, pools: int) -> Statement:
        return self._with_pools(self._dialect.fair_best, pools)

    def _with_pools(self, stmt: Statement, pools: int) -> Statement:
        done = self._claims.get((stmt.sql, pools))
        if done is None:
            raw = self._dialect.with_pools(stmt, pools)
            done = self._claims[stmt.sql, pools] = self.driver.prepare(raw)
        return done

    def heartbeat(self, job_id: int, token: str, lease_s: float) -> Lease:
        row = self._row(self._sql.heartbeat, id=job_id, token=token, lease_s=lease_s)
        if row is None:
            return Lease.LOST
        return Lease.CANCEL if row["cancel_requested"] else Lease.HELD

    def progress(self, job_id: int, token: str, done: int, total: int) -> bool:
        changed = self._count(self._sql.progress, id=job_id, token=token, done=done, total=total)
        return changed == 1

    def preview(self, job_id: int, token: str, key: str, step: int) -> bool:
        return self._count(self._sql.preview, id=job_id, token=token, key=key, step=step) == 1

    def complete(
        self, job_id: int, token: str, result_key: str, meta: dict[str, Any], ran: Ran = Ran()
    ) -> bool:
        changed = self._count(
            self._sql.complete, id=job_id, token=token, result_key=result_key, meta=dumps(meta),
            **_ran(ran),
        )  # fmt: skip
        return changed == 1

    def finish_cancel(self, job_id: int, token: str, ran: Ran = Ran()) -> bool:
        return self._count(self._sql.finish_cancel, id=job_id, token=token, **_ran(ran)) == 1

    def fail(
        self,
        job_id: int,
        token: str,
        error: str,
        error_type: str,
        retry: bool,
        retry_after_s: float = 0.0,
        ran: Ran = Ran(),
    ) -> bool:
        row = self._row(
            self._sql.fail, id=job_id, token=token, error=error, error_type=error_type,
            retry=retry, retry_after_s=retry_after_s, **_ran(ran),
        )  # fmt: skip
        return row is not None

    def release(self, job_id: int, token: str, ran: Ran = Ran()) -> bool:
        return self._row(self._sql.release, id=job_id, token=token, **_ran(ran)) is not None

    def reap(self) -> ReapResult:
        rows = self._rows(self._sql.reap)
        expired = self._rows(self._sql.expire)
        return ReapResult(
            retried=[int(r["id"]) for r in rows if r["state"] == "RETRY"],
            failed=[int(r["id"]) for r in rows if r["state"] == "FAILED"],
            cancelled=[int(r["id"]) for r in rows if r["state"] == "CANCELLED"],
            expired=[int(r["id"]) for r in expired],
        )

    def register_worker(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str] | None = None,
        *,
        owner: str | None = None,
        max_names: int | None = None,
        state: WorkerState = WorkerState.READY,
        reason: str | None = None,
    ) -> bool:
        engines_text = ",".join(f"{p}={e}" for p, e in (engines or {}).items())
        changed = self._count(
            self._sql.register_worker, name=worker, pools=",".join(pools), engines=engines_text,
            owner=owner, max_names=-1 if max_names is None else max_names,
            window_s=LIVE_WINDOW_S, state=state.value, reason=reason or None,
        )  # fmt: skip
        return changed > 0

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        self.driver.wait(timeout)

    def queue_depths(self) -> dict[str, int]:
        return {r["pool"]: int(r["queued"]) for r in self._rows(self._sql.queue_depths)}


def _ran(ran: Ran) -> dict[str, Any]:
    """The parameters of what an attempt used (``statements.queue.RAN``)."""
    return {"gpu_seconds": max(0.0, float(ran.seconds)), "device": ran.device}
