"""The JobStore contract, run against every adapter: SQLite (a real file) and PostgreSQL
(a real server started by the test session).

Grouped by the role each test exercises (the ports of ``store/base.py``), one section per
role; a test that needs only its role's methods asks for that role, the others take the
whole ``JobStore`` to set up what their role then reads (a claimed, finished job...)."""

from __future__ import annotations

import dataclasses
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.processes import vidq_env
from tests.support.stores import seed_sqlite
from vidq.errors import Conflict, RateLimited, StoreUnavailable
from vidq.jobs import JobState, NewJob, Ran, WebhookState, WorkerState, poster_key, queue_rank
from vidq.store import JobStore, open_store
from vidq.store.base import (
    Cancel,
    DueWebhook,
    JobFilter,
    Lease,
    Quota,
    RetentionStore,
    SubmitStore,
    TokenStore,
)
from vidq.store.migrate import HEAD, head_revision, sqlalchemy_url, upgrade
from vidq.store.rows import JOB_COLUMNS

POOL = "wan22-t2v"
OTHER = "wan22-i2v"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database, for the tests of the migrations themselves."""
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path / 'vidq.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def db_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the head revision: a copy of one the migrations built once per test
    process (tests/support/stores.py, PostgresServer.create_database)."""
    if dialect == "sqlite":
        seed_sqlite(tmp_path)
        return f"sqlite:///{tmp_path / 'vidq.db'}"
    url: str = request.getfixturevalue("pg_head_url")
    return url


@pytest.fixture
def store(db_url: str) -> Iterator[JobStore]:
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def fifo(db_url: str) -> Iterator[JobStore]:
    """A store whose claims are first in, first out within a rank (VIDQ_FAIR_SHARE=false)."""
    s = open_store(db_url, fair_share=False)
    try:
        yield s
    finally:
        s.close()


def new(
    user: str = "alice",
    *,
    pool: str = POOL,
    tier: int = 0,
    priority: int = 0,
    max_attempts: int = 3,
    key: str | None = None,
    webhook: str | None = None,
) -> NewJob:
    return NewJob(
        user=user,
        model_id="wan22-fast-t2v",
        pool=pool,
        tier=tier,
        priority=priority,
        inputs={"prompt": "a fox", "width": 128},
        max_attempts=max_attempts,
        work_units=1.0,
        idempotency_key=key,
        webhook_url=webhook,
        webhook_dialect="fal" if webhook else None,
        webhook_base="https://vidq.example" if webhook else None,
    )


# ========================================================================================
# SubmitStore: a user's jobs (submit, idempotency, limits, status, positions, list, cancel)
# What the user routes ask of the store (api/services/ and the routers).
# ========================================================================================


def test_enqueue_get_and_isolation(store: JobStore) -> None:
    job = store.enqueue(new())
    assert job.id > 0 and job.state is JobState.PENDING and job.attempt == 0
    assert abs(job.created_at - store.now()) < 5
    got = store.get(job.id, "alice")
    assert got is not None and got.inputs == {"prompt": "a fox", "width": 128}
    assert store.get(job.id, "bob") is None
    assert store.get(job.id) is not None
    assert store.get(job.id + 1000) is None
    assert [j.id for j in store.list_jobs("alice", 10)] == [job.id]
    assert store.list_jobs("bob", 10) == []


def test_idempotency_key_returns_the_same_job(store: SubmitStore) -> None:
    first = store.enqueue(new(key="k1"))
    again = store.enqueue(new(key="k1"))
    assert again.id == first.id
    assert store.enqueue(new("bob", key="k1")).id != first.id
    found = store.find_by_idempotency_key("alice", "k1")
    assert found is not None and found.id == first.id


def test_concurrent_submits_with_one_idempotency_key_settle_on_one_job(db_url: str) -> None:
    """The documented way (ON CONFLICT DO NOTHING, then read the row): every racer gets
    the winner's job, none an error."""
    stores = [open_store(db_url, migrate=i == 0) for i in range(4)]
    try:
        start = threading.Barrier(8)
        ids: list[int] = []
        errors: list[BaseException] = []

        def submit(s: JobStore) -> None:
            start.wait(10)
            try:
                ids.append(s.enqueue(new(key="same")).id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=submit, args=(stores[i % 4],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(ids) == 8 and len(set(ids)) == 1, ids
        assert [j.id for j in stores[0].list_jobs("alice", 10)] == ids[:1]
    finally:
        for s in stores:
            s.close()


def test_status_reads_never_parse_the_inputs(store: SubmitStore, db_url: str) -> None:
    """A status poll reads columns only: the inputs can be large (issue 12, row 5)."""
    plain = store.enqueue(new())
    hq = store.enqueue(
        NewJob("alice", "wan22-fast-t2v", POOL, 0, 0,
               {"prompt": "x", "higher_quality_with_more_steps": True}, max_attempts=3)
    )  # fmt: skip
    before = store.job_status(hq.id, "alice")
    assert before is not None and before.higher_quality
    assert not store.job_status(plain.id, "alice").higher_quality  # type: ignore[union-attr]
    # Inputs that no JSON parser accepts: a status read that parsed them would fail.
    if db_url.startswith("sqlite"):
        with closing(sqlite3.connect(db_url.removeprefix("sqlite:///"))) as conn, conn:
            conn.execute("UPDATE jobs SET inputs = 'not json'")
    else:
        with psycopg.connect(db_url) as conn:
            conn.execute("UPDATE jobs SET inputs = 'not json'")
    after = store.job_status(hq.id, "alice")
    assert after is not None and after.higher_quality and after.queue_position == 1


def test_cancel_only_from_queued_states(store: JobStore) -> None:
    queued = store.enqueue(new())
    assert not store.cancel(queued.id, "bob")  # another user's job
    assert store.cancel(queued.id, "alice")
    assert store.get(queued.id).state is JobState.CANCELLED  # type: ignore[union-attr]
    assert not store.cancel(queued.id, "alice")
    running = store.enqueue(new())
    c = store.claim([POOL], "w", 30)
    assert c is not None and c.job.id == running.id
    assert not store.cancel(running.id, "alice")
    assert store.release(c.job.id, c.lease_token)  # RETRY is cancellable
    assert store.cancel(running.id, "alice")
    assert store.claim([POOL], "w", 30) is None


def limited(user: str = "alice", *, key: str | None = None, seconds: float = 5.0) -> NewJob:
    return dataclasses.replace(new(user, key=key), video_seconds=seconds)


def test_submit_limits_refuse_in_the_insert_and_store_nothing(store: SubmitStore) -> None:
    quota = Quota(max_queued=2)
    first = store.enqueue(limited(key="k1"), quota)
    store.enqueue(limited(), quota)
    with pytest.raises(RateLimited) as refused:
        store.enqueue(limited(), quota)
    assert (refused.value.limit, refused.value.value) == ("max_queued", 2)
    assert refused.value.retry_after >= 1 and "2" in refused.value.message
    assert len(store.list_jobs("alice", 10)) == 2  # nothing stored
    # A replay of a key is its first job, never counted (even at the limit).
    assert store.enqueue(limited(key="k1"), quota).id == first.id
    assert store.enqueue(limited(), Quota(max_queued=3)).id > first.id  # per-token value
    assert store.enqueue(limited("bob"), quota).user == "bob"  # per user
    assert store.cancel(first.id, "alice")  # a finished job frees its slot
    store.enqueue(limited(), Quota(max_queued=3))
    usage = store.usage("alice")
    assert (usage.queued, usage.running, usage.last_minute) == (3, 0, 4)

    with pytest.raises(RateLimited) as rate:
        store.enqueue(limited(), Quota(rate_per_minute=4))
    assert rate.value.limit == "rate_per_minute" and 1 <= rate.value.retry_after <= 60
    day = Quota(daily_video_seconds=int(usage.video_seconds_today) + 5)
    store.enqueue(limited("alice", seconds=5.0), day)  # exactly at the limit: accepted
    with pytest.raises(RateLimited) as daily:
        store.enqueue(limited("alice", seconds=0.5), day)
    assert daily.value.limit == "daily_video_seconds"
    assert 1 <= daily.value.retry_after <= 86400
    assert len(store.list_jobs("alice", 20)) == 5


def test_daily_gpu_seconds_refuse_once_used_up_running_jobs_included(store: JobStore) -> None:
    """Today's finished attempts count what they recorded, a running one its time since its
    claim; at the limit a submit is refused until 00:00 UTC, naming the limit."""
    quota = Quota(daily_gpu_seconds=10)
    first = store.enqueue(new(), quota)
    claimed = store.claim([POOL], "w", 30)
    assert claimed is not None and claimed.job.id == first.id
    assert store.fail(first.id, claimed.lease_token, "boom", "EngineError", retry=True,
                      ran=Ran(6.0, "cuda:0"))  # fmt: skip
    store.enqueue(new(), quota)  # 6 of 10 used: accepted
    assert store.usage("alice").gpu_seconds_today == pytest.approx(6.0)
    again = store.claim([POOL], "w", 30)
    assert again is not None and again.job.id == first.id
    time.sleep(0.3)  # running: its time so far counts on top of the failed attempt's
    running = store.usage("alice").gpu_seconds_today
    assert 6.2 < running < 30
    assert store.complete(first.id, again.lease_token, f"outputs/free/{first.id}.mp4", {},
                          Ran(4.5, "cuda:1"))  # fmt: skip
    assert store.usage("alice").gpu_seconds_today == pytest.approx(10.5)
    before = store.now()
    with pytest.raises(RateLimited) as refused:
        store.enqueue(new(), quota)
    after = store.now()
    assert refused.value.limit == "daily_gpu_seconds" and refused.value.value == 10
    assert "daily_gpu_seconds" in refused.value.message
    assert 0 < refused.value.retry_after <= 86400
    # 00:00 UTC, in whole seconds rounded up, from when the refusal was made (between the
    # two clock reads: a busy machine may take more than a second between them)
    midnight = (before // 86400 + 1) * 86400
    assert midnight - after <= refused.value.retry_after < midnight - before + 1
    assert len(store.list_jobs("alice", 10)) == 2  # nothing stored
    store.enqueue(new(), Quota(daily_gpu_seconds=11))  # per token value
    store.enqueue(new("bob"), quota)  # per user


def test_fifty_simultaneous_submits_against_max_queued_five(db_url: str) -> None:
    """Two store objects (two API processes' connection pools) and 50 threads: the
    limit is decided in the database, so exactly 5 are accepted."""
    stores = [open_store(db_url, migrate=i == 0) for i in range(2)]
    try:
        start = threading.Barrier(50)
        outcomes: list[str] = []

        def submit(i: int) -> None:
            start.wait(10)
            try:
                stores[i % 2].enqueue(limited("carol"), Quota(max_queued=5))
                outcomes.append("accepted")
            except RateLimited:
                outcomes.append("refused")

        threads = [threading.Thread(target=submit, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outcomes.count("accepted") == 5 and outcomes.count("refused") == 45
        assert len(stores[0].list_jobs("carol", 100)) == 5
    finally:
        for s in stores:
            s.close()


def test_positions_count_only_what_workers_claim_first(fifo: JobStore) -> None:
    """Jobs held by their user's max_running count ahead of nobody else's; a held job
    reports the position it will have once it may start (store/positions.py). The held
    set follows running jobs in other pools too (the running fingerprint). FIFO claims."""
    store = fifo
    ann = [store.enqueue(dataclasses.replace(new("ann"), max_running=1)) for _ in range(3)]
    ben = [store.enqueue(new("ben")) for _ in range(2)]
    ann_other = store.enqueue(dataclasses.replace(new("ann", pool=OTHER), max_running=1))
    ben_other = store.enqueue(new("ben", pool=OTHER))

    def where(job_id: int, user: str) -> tuple[int | None, bool]:
        status = store.job_status(job_id, user)
        assert status is not None
        job = store.get(job_id)
        assert job is not None and store.queue_position(job) == status.queue_position
        return status.queue_position, status.held

    # nothing runs: ann's first job may start, her others wait for it to end
    assert where(ann[0].id, "ann") == (0, False)
    assert [where(j.id, "ben") for j in ben] == [(1, False), (2, False)]
    assert [where(j.id, "ann") for j in ann[1:]] == [(1, True), (2, True)]
    assert where(ann_other.id, "ann") == (0, False)
    assert where(ben_other.id, "ben") == (1, False)

    first = store.claim([POOL], "w", 30)
    assert first is not None and first.job.id == ann[0].id
    assert [where(j.id, "ben") for j in ben] == [(0, False), (1, False)]
    assert [where(j.id, "ann") for j in ann[1:]] == [(0, True), (1, True)]
    # the other pool's version did not move, its snapshot follows the running jobs
    assert where(ann_other.id, "ann") == (0, True)
    assert where(ben_other.id, "ben") == (0, False)
    # what the positions promise is what the workers do
    taken = store.claim([OTHER], "w", 30)
    assert taken is not None and taken.job.id == ben_other.id

    assert store.complete(first.job.id, first.lease_token, "outputs/a.mp4", {})
    assert where(ann_other.id, "ann") == (0, False)
    assert where(ann[1].id, "ann") == (0, False)
    assert [where(j.id, "ben") for j in ben] == [(1, False), (2, False)]
    assert where(ann[2].id, "ann") == (1, True)
    order = [store.claim([POOL], "w", 30) for _ in range(3)]
    assert [j.job.id for j in order if j is not None] == [ann[1].id, ben[0].id, ben[1].id]


def test_postgres_long_queue_positions_come_from_a_fresh_snapshot(pg_head_url: str) -> None:
    """Long queues may answer from a snapshot up to MAX_STALE_S old (store/positions.py)."""
    from vidq.store.positions import LONG_QUEUE
    from vidq.store.postgres import PostgresStore

    store = open_store(pg_head_url)
    assert isinstance(store, PostgresStore)
    try:
        n = LONG_QUEUE + 500
        with psycopg.connect(pg_head_url) as conn:
            conn.execute(
                """INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state,
                    inputs, max_attempts, created_at)
                SELECT 'alice', 'wan22-fast-t2v', %s, 0, 0, %s, 'PENDING', '{}', 3, 0
                FROM generate_series(1, %s)""",
                (POOL, queue_rank(0, 0), n),
            )
        last = store.enqueue(new())
        first = store.claim([POOL], "w", 30)
        assert first is not None
        assert store.queue_position(last) == n - 1
        premium = store.enqueue(new(tier=2))
        assert store.queue_position(premium) == 0
        for _ in range(10):
            assert store.claim([POOL], "w", 30) is not None
        deadline = time.monotonic() + 10
        while store.queue_position(last) != n - 10:  # premium + 9 more were claimed
            assert time.monotonic() < deadline, store.queue_position(last)
            time.sleep(0.2)
    finally:
        store.close()


def test_postgres_claims_are_not_jit_compiled_behind_a_long_backoff(pg_head_url: str) -> None:
    """Jobs in retry back-off raise the claim's estimated cost past PostgreSQL's
    ``jit_above_cost``; compiling the claim then took 0.2-0.9 s a claim. The store's
    connections turn JIT off; a plain connection to the same server compiles the claim
    (where the server has JIT at all), so this sees the cost it guards against."""
    from vidq.store.postgres import PostgresStore
    from vidq.store.statements import PostgresStatements, Statement

    store = open_store(pg_head_url)
    assert isinstance(store, PostgresStore)
    try:
        with psycopg.connect(pg_head_url) as conn:
            conn.execute(
                """INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state,
                    inputs, max_attempts, created_at, retry_at)
                SELECT 'u' || (g %% 100), 'wan22-fast-t2v', %s, 0, 0, %s, 'RETRY', '{}', 3, 0,
                    extract(epoch from now()) + 3600
                FROM generate_series(1, 15000) AS g""",
                (POOL, queue_rank(0, 0)),
            )
            conn.execute("ANALYZE jobs")
        claim = PostgresStatements.with_pools(PostgresStatements.fair_claim, 1)
        explain = store.driver.prepare(Statement("EXPLAIN (ANALYZE, FORMAT JSON) " + claim.sql))
        params = {"pool0": POOL, "token": "t", "worker": "w", "lease_s": 30}
        with store.driver.transaction() as db:
            [[plan]] = db.values(explain, params)
            db.run(Statement("ROLLBACK AND CHAIN"), {})  # the EXPLAIN ANALYZE took nothing
        assert "JIT" not in plan[0], plan[0].get("JIT")
        assert store.claim([POOL], "w", 30) is None  # all in back-off
        with psycopg.connect(pg_head_url) as conn:
            if conn.execute("SELECT pg_jit_available()").fetchone() == (True,):
                conn.execute("BEGIN")
                [[plain]] = conn.execute(explain.sql, params).fetchall()
                conn.execute("ROLLBACK")
                assert plain[0]["JIT"]["Functions"] > 0  # what the store's setting avoids
    finally:
        store.close()


# ========================================================================================
# WorkerStore: the worker queue (claim, lease fencing, retries, reaper, wake-ups, max_running)
# What worker/runner.py and the /worker/v1 routes ask of the store.
# ========================================================================================


def test_queue_order_tier_priority_then_id(store: JobStore) -> None:
    a = store.enqueue(new(tier=0, priority=0))
    b = store.enqueue(new(tier=0, priority=5))
    c = store.enqueue(new(tier=2, priority=0))
    d = store.enqueue(new(tier=0, priority=5))
    store.enqueue(new(pool=OTHER, tier=2, priority=100))
    assert [store.queue_position(j) for j in (c, b, d, a)] == [0, 1, 2, 3]
    order = [store.claim([POOL], "w", 30) for _ in range(4)]
    assert [j.job.id for j in order if j] == [c.id, b.id, d.id, a.id]
    assert store.claim([POOL], "w", 30) is None
    assert store.queue_depths() == {OTHER: 1}


def test_claim_sets_lease_from_the_database_clock(store: JobStore) -> None:
    job = store.enqueue(new())
    claimed = store.claim([POOL, OTHER], "w1", 7.5)
    assert claimed is not None and claimed.job.id == job.id
    assert claimed.job.state is JobState.RUNNING and claimed.job.attempt == 1
    assert claimed.job.worker == "w1" and claimed.lease_token
    assert claimed.lease_until is not None
    assert abs(claimed.lease_until - (store.now() + 7.5)) < 2
    assert store.claim([POOL], "w2", 30) is None
    assert store.claim([], "w2", 30) is None


def test_only_the_attempt_that_won_learns_it_completed(store: JobStore) -> None:
    """A complete retried after its answer was lost is told it won; any other token, or
    another key, is not (no worker learns another's result key)."""
    job = store.enqueue(new())
    claim = store.claim([POOL], "w1", 30)
    assert claim is not None
    assert not store.completed_by(job.id, claim.lease_token, "outputs/free/k.mp4")
    assert store.complete(job.id, claim.lease_token, "outputs/free/k.mp4", {})
    assert store.completed_by(job.id, claim.lease_token, "outputs/free/k.mp4")
    assert not store.completed_by(job.id, "made-up", "outputs/free/k.mp4")
    assert not store.completed_by(job.id, claim.lease_token, "outputs/free/other.mp4")
    assert store.claimed(job.id) is None


def test_claimed_reads_the_lease_of_the_running_attempt_only(store: JobStore) -> None:
    """The lease lives on the claim, never on a Job: ``claimed`` reads it back (the API
    checks an attempt's token with it) while the attempt runs, and every end clears it."""
    job = store.enqueue(new())
    assert store.claimed(job.id) is None and store.claimed(2**40) is None  # queued, unknown
    claim = store.claim([POOL], "w1", 30)
    assert claim is not None and claim.job.id == job.id
    assert not hasattr(claim.job, "lease_token")
    held = store.claimed(job.id)
    assert held is not None and held.lease_token == claim.lease_token
    assert held.job.state is JobState.RUNNING and held.lease_until >= claim.lease_until - 1
    assert store.release(job.id, claim.lease_token)
    assert store.claimed(job.id) is None
    again = store.claim([POOL], "w1", 30)
    assert again is not None and again.lease_token != claim.lease_token
    assert store.fail(job.id, again.lease_token, "bad", "x", retry=False)
    assert store.claimed(job.id) is None


def test_concurrent_claimers_never_share_a_job(db_url: str) -> None:
    stores = [open_store(db_url, migrate=i == 0) for i in range(4)]
    try:
        ids = {stores[0].enqueue(new()).id for _ in range(40)}
        got: list[int] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def claimer(s: JobStore, name: str) -> None:
            try:
                while True:
                    claimed = s.claim([POOL], name, 30)
                    if claimed is None:
                        if not s.queue_depths():
                            return
                        continue
                    with lock:
                        got.append(claimed.job.id)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=claimer, args=(stores[i % 4], f"w{i}")) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(got) == sorted(ids)  # each job exactly once
    finally:
        for s in stores:
            s.close()


def test_lease_token_fences_every_update(store: JobStore) -> None:
    store.enqueue(new())
    claimed = store.claim([POOL], "w", 30)
    assert claimed is not None and claimed.lease_token
    job, token = claimed.job, claimed.lease_token
    assert not store.heartbeat(job.id, "stale", 30)
    assert not store.progress(job.id, "stale", 1, 4)
    assert not store.complete(job.id, "stale", "outputs/x.mp4", {})
    assert not store.fail(job.id, "stale", "boom", "x", retry=True)
    assert not store.release(job.id, "stale")
    assert store.heartbeat(job.id, token, 30)
    assert store.progress(job.id, token, 2, 4)
    got = store.get(job.id)
    assert got is not None and (got.progress_done, got.progress_total) == (2, 4)
    assert store.complete(job.id, token, "outputs/free/1.mp4", {"frames": 17})
    done = store.get(job.id)
    assert done is not None and done.state is JobState.COMPLETED
    assert done.result_meta == {"frames": 17} and store.claimed(job.id) is None
    assert done.finished_at is not None and done.started_at is not None
    found = store.find_by_result_key("outputs/free/1.mp4")
    assert found is not None and found.id == job.id
    # A finished job cannot be completed or failed again, even with the old token.
    assert not store.complete(job.id, token, "outputs/free/2.mp4", {})
    assert not store.fail(job.id, token, "late", "x", retry=False)
    assert not store.heartbeat(job.id, token, 30)


def test_a_live_preview_is_fenced_shown_while_running_and_cleared_by_the_next_claim(
    store: JobStore,
) -> None:
    job = store.enqueue(new(max_attempts=3))
    first = store.claim([POOL], "w", 30)
    assert first is not None
    assert store.job_status(job.id, "alice").preview is None  # type: ignore[union-attr]
    assert not store.preview(job.id, "stale", "previews/1_00001.webp", 2)
    assert store.preview(job.id, first.lease_token, "previews/1_00001.webp", 2)
    before = store.now()
    assert store.preview(job.id, first.lease_token, "previews/1_00001.webp", 3)
    shown = store.job_status(job.id, "alice")
    assert shown is not None and shown.preview is not None
    assert (shown.preview.key, shown.preview.step) == ("previews/1_00001.webp", 3)
    assert before - 1 <= shown.preview.at <= store.now() + 1  # the database clock
    assert store.job_status(job.id, "bob") is None  # another user's: not even the job
    # The attempt ends; the next attempt starts without the last one's preview.
    assert store.fail(job.id, first.lease_token, "flaky", "engine", retry=True, retry_after_s=0)
    assert not store.preview(job.id, first.lease_token, "previews/1_00001.webp", 4)
    second = store.claim([POOL], "w", 30)
    assert second is not None and second.job.id == job.id
    assert store.job_status(job.id, "alice").preview is None  # type: ignore[union-attr]


def test_fail_retries_while_attempts_remain(store: JobStore) -> None:
    job = store.enqueue(new(max_attempts=2))
    first = store.claim([POOL], "w", 30)
    assert first is not None and first.lease_token
    assert store.fail(job.id, first.lease_token, "flaky", "engine", retry=True)
    assert store.get(job.id).state is JobState.RETRY  # type: ignore[union-attr]
    second = store.claim([POOL], "w", 30)
    assert second is not None and second.job.attempt == 2
    assert second.lease_token != first.lease_token
    assert store.fail(job.id, second.lease_token, "flaky", "engine", retry=True)
    final = store.get(job.id)
    assert final is not None and final.state is JobState.FAILED and final.error == "flaky"
    job2 = store.enqueue(new())
    c = store.claim([POOL], "w", 30)
    assert c is not None and c.job.id == job2.id
    assert store.fail(c.job.id, c.lease_token, "bad input", "invalid", retry=False)
    assert store.get(c.job.id).state is JobState.FAILED  # type: ignore[union-attr]


def test_a_retry_waits_out_its_backoff_and_lets_later_jobs_go_first(store: JobStore) -> None:
    flaky = store.enqueue(new())
    later = store.enqueue(new())
    first = store.claim([POOL], "w", 30)
    assert first is not None and first.job.id == flaky.id
    assert store.fail(flaky.id, first.lease_token, "storage down", "unavailable",
                      retry=True, retry_after_s=60)  # fmt: skip
    assert store.get(flaky.id).state is JobState.RETRY  # type: ignore[union-attr]
    taken = store.claim([POOL], "w", 30)
    assert taken is not None and taken.job.id == later.id  # the backing-off retry is skipped
    assert store.claim([POOL], "w", 30) is None
    assert store.queue_depths() == {POOL: 1}  # ... but it is still queued, not lost
    again = store.enqueue(new())
    soon = store.claim([POOL], "w", 30)
    assert soon is not None and soon.job.id == again.id
    assert store.fail(again.id, soon.lease_token, "engine crash", "engine",
                      retry=True, retry_after_s=0.3)  # fmt: skip
    assert store.claim([POOL], "w", 30) is None
    time.sleep(0.4)
    retried = store.claim([POOL], "w", 30)
    assert retried is not None and retried.job.id == again.id and retried.job.attempt == 2


def test_every_end_of_an_attempt_adds_its_gpu_seconds(store: JobStore) -> None:
    """A job's cost sums its attempts (failed, released and cancelled ones included), its
    device is its last attempt's; a fenced-out end adds nothing; metrics read it."""
    job = store.enqueue(new(max_attempts=3))
    first = store.claim([POOL], "w", 30)
    assert first is not None
    assert store.fail(job.id, first.lease_token, "oom", "EngineError", retry=True,
                      ran=Ran(2.0, "cuda:0"))  # fmt: skip
    assert not store.fail(job.id, first.lease_token, "late", "x", retry=True, ran=Ran(50.0))
    second = store.claim([POOL], "w", 30)
    assert second is not None
    assert store.release(job.id, second.lease_token, Ran(1.25, "cuda:1"))
    third = store.claim([POOL], "w", 30)
    assert third is not None
    assert store.complete(job.id, third.lease_token, f"outputs/free/{job.id}.mp4", {},
                          Ran(3.5, "cuda:2"))  # fmt: skip
    done = store.get(job.id)
    assert done is not None and done.state is JobState.COMPLETED
    assert done.gpu_seconds == pytest.approx(6.75) and done.device == "cuda:2"
    assert done.attempt == 3 and done.first_started_at is not None
    assert done.started_at is not None and done.first_started_at < done.started_at
    status = store.job_status(job.id, "alice")
    assert status is not None and status.gpu_seconds == pytest.approx(6.75)
    assert (status.device, status.attempt) == ("cuda:2", 3)
    assert status.first_started_at == done.first_started_at
    # a cancelled running attempt counts too; an attempt that never ran adds nothing
    other = store.enqueue(new(pool=OTHER))
    c = store.claim([OTHER], "w", 30)
    assert c is not None
    assert store.cancel_job(other.id, "alice", running=True) is Cancel.REQUESTED
    assert store.finish_cancel(other.id, c.lease_token, Ran(0.5, "cpu"))
    stopped = store.get(other.id)
    assert stopped is not None and (stopped.gpu_seconds, stopped.device) == (0.5, "cpu")
    samples = store.job_samples()
    gpu = {k[1]: v for k, v in samples.items() if k[0] == "vidq_gpu_seconds"}
    assert gpu == {
        '{"model":"wan22-fast-t2v","pool":"wan22-t2v"}': pytest.approx(6.75),
        f'{{"model":"wan22-fast-t2v","pool":"{OTHER}"}}': pytest.approx(0.5),
    }


def test_daily_usage_per_day_and_model_and_per_user(store: JobStore) -> None:
    """GET /usage's figures: the sums of the jobs' own, per UTC day and model; a user sees
    only theirs, the operators' read has every user's."""
    ids = [_finish(store, "completed") for _ in range(2)]
    bob = _finish(store, "completed", pool=OTHER, user="bob")
    jobs = [store.get(i) for i in [*ids, bob]]
    today = time.strftime("%Y-%m-%d", time.gmtime(store.now()))
    mine = store.daily_usage("alice", 7)
    assert [(u.user, u.day, u.model_id, u.jobs) for u in mine] == [
        ("alice", today, "wan22-fast-t2v", 2)
    ]
    assert mine[0].gpu_seconds == pytest.approx(sum(j.gpu_seconds for j in jobs[:2] if j))
    assert [u.user for u in store.daily_usage("bob", 1)] == ["bob"]
    assert store.daily_usage("carol", 90) == []
    every = store.all_usage(7)
    assert [(u.user, u.jobs) for u in every] == [("alice", 2), ("bob", 1)]


def test_reap_expired_leases(store: JobStore) -> None:
    retried = store.enqueue(new(max_attempts=2))
    last = store.enqueue(new(max_attempts=1))
    alive = store.enqueue(new())
    a = store.claim([POOL], "w", 0.2)
    b = store.claim([POOL], "w", 0.2)
    c = store.claim([POOL], "w", 60)
    assert a and b and c
    assert store.reap().retried == []  # nothing expired yet
    time.sleep(0.5)
    result = store.reap()
    assert sorted(result.retried) == [retried.id]
    assert sorted(result.failed) == [last.id]
    r = store.get(retried.id)
    assert r is not None and r.state is JobState.RETRY and store.claimed(retried.id) is None
    f = store.get(last.id)
    assert f is not None and f.state is JobState.FAILED
    assert f.error_type == "lease_expired" and "1 attempts" in (f.error or "")
    assert "lease expired" in (f.error or "")
    assert store.get(alive.id).state is JobState.RUNNING  # type: ignore[union-attr]
    # The stale holder of the reaped job is fenced out.
    assert not store.complete(retried.id, a.lease_token, "outputs/x.mp4", {})
    assert store.reap().retried == []  # idempotent, safe to run from many processes
    again = store.claim([POOL], "w2", 30)
    assert again is not None and again.job.id == retried.id and again.job.attempt == 2


def test_release_gives_the_job_back_without_spending_an_attempt(store: JobStore) -> None:
    """The job gets one more attempt, so as many remain as before the released one; the
    next attempt has a number of its own, so it never reuses the released one's output
    key (the released attempt may have uploaded under it)."""
    job = store.enqueue(new())
    c = store.claim([POOL], "w", 30)
    assert c is not None and c.job.attempt == 1
    left = c.job.max_attempts - c.job.attempt + 1  # attempts left before this one
    assert store.release(job.id, c.lease_token)
    back = store.get(job.id)
    assert back is not None and back.state is JobState.RETRY
    assert back.max_attempts - back.attempt == left
    assert store.queue_position(back) == 0
    again = store.claim([POOL], "w", 30)
    assert again is not None and again.job.attempt == 2
    assert again.job.max_attempts - again.job.attempt + 1 == left


def test_wait_for_jobs_wakes_on_enqueue(db_url: str) -> None:
    worker_side = open_store(db_url)
    # PostgreSQL wakes waiters of every process (LISTEN/NOTIFY); SQLite only those of the
    # same store object, and other processes poll.
    shared = db_url.startswith("sqlite")
    api_side = worker_side if shared else open_store(db_url, migrate=False)
    try:
        assert worker_side.claim([POOL], "w", 30) is None
        worker_side.wait_for_jobs([POOL], 0.5)  # start listening (a spurious wake is fine)
        assert worker_side.claim([POOL], "w", 30) is None
        woke: list[float] = []

        def waiter() -> None:
            t0 = time.monotonic()
            worker_side.wait_for_jobs([POOL], 10)
            woke.append(time.monotonic() - t0)

        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)
        api_side.enqueue(new())
        t.join(15)
        assert woke and woke[0] < 2.0, woke
        assert worker_side.claim([POOL], "w", 30) is not None
    finally:
        worker_side.close()
        if not shared:
            api_side.close()


# How long a waiting worker sleeps when nothing wakes it (its poll interval, here).
POLL_S = 5.0


def seconds_until_woken(store: JobStore, transition: Callable[[], bool]) -> float:
    """How long after ``transition()`` a thread asleep in ``wait_for_jobs`` wakes up:
    about POLL_S if nothing wakes it."""
    assert store.claim([OTHER], "w", 30) is None
    store.wait_for_jobs([OTHER], 1.0)  # PostgreSQL: returns once its LISTEN is in place
    time.sleep(0.3)  # let wake-ups from the set-up arrive before anyone waits
    woke: list[float] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        store.wait_for_jobs([POOL], POLL_S)
        woke.append(time.monotonic())

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(5)
    time.sleep(0.3)
    assert not woke, "the waiter woke before the transition"
    started = time.monotonic()
    assert transition()
    thread.join(POLL_S + 5)
    assert woke
    return woke[0] - started


@pytest.mark.parametrize("transition", ["retry", "release", "reap"])
def test_every_return_to_the_queue_wakes_waiting_workers(store: JobStore, transition: str) -> None:
    store.enqueue(new())
    claimed = store.claim([POOL], "w", 0.2 if transition == "reap" else 30)
    assert claimed is not None and claimed.lease_token
    job, token = claimed.job, claimed.lease_token
    moves: dict[str, Callable[[], bool]] = {
        "retry": lambda: store.fail(job.id, token, "flaky", "engine", retry=True),
        "release": lambda: store.release(job.id, token),
        "reap": lambda: store.reap().retried == [job.id],
    }
    assert seconds_until_woken(store, moves[transition]) < 2.0
    assert store.get(job.id).state is JobState.RETRY  # type: ignore[union-attr]


def test_a_wake_up_between_claim_and_wait_is_not_lost(store: JobStore) -> None:
    """A job queued after a worker found the queue empty, but before it went to sleep,
    ends that sleep at once."""
    assert store.claim([OTHER], "w", 30) is None
    store.wait_for_jobs([OTHER], 1.0)  # PostgreSQL: returns once its LISTEN is in place
    assert store.claim([POOL], "w", 30) is None
    store.enqueue(new())
    started = time.monotonic()
    store.wait_for_jobs([POOL], POLL_S)
    assert time.monotonic() - started < 2.0
    assert store.claim([POOL], "w", 30) is not None


def test_max_running_holds_back_a_users_jobs_and_others_go_first(store: JobStore) -> None:
    held = [store.enqueue(dataclasses.replace(new("ann"), max_running=1)) for _ in range(3)]
    other = store.enqueue(new("ben"))
    first = store.claim([POOL], "w", 30)
    assert first is not None and first.job.id == held[0].id
    second = store.claim([POOL], "w", 30)
    assert second is not None and second.job.id == other.id  # ann's next one waits
    assert store.claim([POOL], "w", 30) is None
    assert store.queue_position(store.get(held[1].id)) == 0  # type: ignore[arg-type]
    assert store.complete(first.job.id, first.lease_token, "outputs/a.mp4", {})
    third = store.claim([POOL], "w", 30)
    assert third is not None and third.job.id == held[1].id


def test_cancel_running_is_read_by_the_heartbeat_and_recorded_once(store: JobStore) -> None:
    queued = store.enqueue(new())
    assert store.cancel_job(queued.id, "alice", running=True) is Cancel.CANCELLED
    job = store.enqueue(new())
    c = store.claim([POOL], "w", 30)
    assert c is not None and c.lease_token
    assert store.heartbeat(c.job.id, c.lease_token, 30) is Lease.HELD
    assert store.cancel_job(c.job.id, "alice", running=False) is None  # the spec's 409
    assert store.cancel_job(c.job.id, "bob", running=True) is None  # not bob's
    assert store.cancel_job(c.job.id, "alice", running=True) is Cancel.REQUESTED
    assert store.get(c.job.id).state is JobState.RUNNING  # type: ignore[union-attr]
    assert store.heartbeat(c.job.id, c.lease_token, 30) is Lease.CANCEL
    assert not store.complete(c.job.id, c.lease_token, "outputs/x.mp4", {})  # cancel wins
    assert not store.finish_cancel(c.job.id, "stale")
    assert store.finish_cancel(c.job.id, c.lease_token)
    assert not store.finish_cancel(c.job.id, c.lease_token)  # recorded once
    done = store.get(job.id)
    assert done is not None and done.state is JobState.CANCELLED and done.result_key is None
    assert store.cancel_job(c.job.id, "alice", running=True) is None  # finished: 409
    # A requested cancel of a job whose worker then fails, releases or dies: CANCELLED.
    for end in ("fail", "release", "reap"):
        j = store.enqueue(new())
        got = store.claim([POOL], "w", 0.05 if end == "reap" else 30)
        assert got is not None and got.job.id == j.id
        assert store.cancel_job(j.id, "alice", running=True) is Cancel.REQUESTED
        if end == "fail":
            assert store.fail(j.id, got.lease_token, "boom", "x", retry=True)
        elif end == "release":
            assert store.release(j.id, got.lease_token)
        else:
            time.sleep(0.2)
            assert j.id in store.reap().cancelled
        assert store.get(j.id).state is JobState.CANCELLED, end  # type: ignore[union-attr]


def test_cancel_racing_completion_has_exactly_one_winner(db_url: str) -> None:
    api, worker = open_store(db_url), open_store(db_url, migrate=False)
    try:
        for _ in range(50):
            _race_cancel_with_complete(api, worker)
    finally:
        api.close()
        worker.close()


def _race_cancel_with_complete(api: JobStore, worker: JobStore) -> None:
    job = api.enqueue(new())
    c = worker.claim([POOL], "w", 30)
    assert c is not None and c.job.id == job.id
    start = threading.Barrier(2)
    got: dict[str, Any] = {}

    def cancel() -> None:
        start.wait(5)
        got["cancel"] = api.cancel_job(job.id, "alice", running=True)

    def complete() -> None:
        start.wait(5)
        got["complete"] = worker.complete(c.job.id, c.lease_token, "o.mp4", {})
        if not got["complete"]:  # what the worker does then: record the cancel
            got["finish"] = worker.finish_cancel(c.job.id, c.lease_token)

    threads = [threading.Thread(target=cancel), threading.Thread(target=complete)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    final = api.get(job.id)
    assert final is not None
    if got["complete"]:
        assert got["cancel"] is None and final.state is JobState.COMPLETED
    else:
        assert got["cancel"] is Cancel.REQUESTED and got["finish"]
        assert final.state is JobState.CANCELLED and final.result_key is None


def test_deadlines_fail_queued_and_running_jobs(store: JobStore) -> None:
    late = store.enqueue(dataclasses.replace(new("dee"), deadline_s=0.2))
    slow = store.enqueue(dataclasses.replace(new("dee", pool=OTHER), deadline_s=0.2))
    unstarted = store.enqueue(
        dataclasses.replace(new("dee"), start_s=0.2, start_error="not started within 0.2 s")
    )
    fine = store.enqueue(dataclasses.replace(new("dee"), deadline_s=60, start_s=60))
    running = store.claim([OTHER], "w", 30)
    assert running is not None and running.job.id == slow.id
    assert store.reap().expired == []
    time.sleep(0.3)
    assert sorted(store.reap().expired) == sorted([late.id, slow.id, unstarted.id])
    for job_id, error in (
        (late.id, "deadline exceeded"), (slow.id, "deadline exceeded"),
        (unstarted.id, "not started within 0.2 s"),
    ):  # fmt: skip
        got = store.get(job_id)
        assert got is not None and got.state is JobState.FAILED and got.error == error
        assert got.error_type == "deadline_exceeded"
    assert not store.heartbeat(slow.id, running.lease_token, 30)  # the worker stops
    assert store.get(fine.id).state is JobState.PENDING  # type: ignore[union-attr]
    assert store.reap().expired == []  # each once


def _race(
    stores: list[JobStore],
    claimer: Callable[[JobStore, str, threading.Barrier], None],
    sampler: Callable[[], None],
    done: threading.Event,
) -> None:
    """Twelve claimer threads (``w0``..``w11``, alternating over the two stores) released
    at once by a barrier, and ``sampler`` watching until they have all ended."""
    start = threading.Barrier(12)
    threads = [
        threading.Thread(target=claimer, args=(stores[i % 2], f"w{i}", start)) for i in range(12)
    ]
    watch = threading.Thread(target=sampler)
    watch.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    watch.join(10)


def _claim_and_finish_all(
    s: JobStore, name: str, start: threading.Barrier, seen: Callable[[], None]
) -> None:
    """Claims until the queue is empty; after each claim ``seen()`` samples the running
    count, then the job completes a moment later."""
    start.wait(10)
    while True:
        claimed = s.claim([POOL], name, 30)
        if claimed is None:
            if not s.queue_depths():
                return
            continue
        seen()
        time.sleep(0.002)
        job_id = claimed.job.id
        assert s.complete(job_id, claimed.lease_token, f"o/{job_id}.mp4", {})


def test_simultaneous_claims_never_exceed_max_running(db_url: str) -> None:
    """Many claimers at once, a user with max_running 2 and only their jobs queued: the
    user's running count, sampled throughout by another connection and after every
    claim, never passes 2 (PostgreSQL's claims count under their snapshot, so the store
    re-checks under a per-user lock)."""
    stores = [open_store(db_url, migrate=i == 0) for i in range(3)]
    try:
        for _ in range(60):
            stores[0].enqueue(dataclasses.replace(new("dan"), max_running=2))
        peak: list[int] = [0]
        errors: list[BaseException] = []
        done = threading.Event()

        def seen() -> None:
            running = next(u.running for u in stores[2].user_stats(0.0) if u.user == "dan")
            peak[0] = max(peak[0], running)

        def sampler() -> None:
            while not done.is_set():
                seen()

        def claimer(s: JobStore, name: str, start: threading.Barrier) -> None:
            try:
                _claim_and_finish_all(s, name, start, seen)
            except BaseException as exc:
                errors.append(exc)

        _race(stores, claimer, sampler, done)
        assert not errors, errors
        assert peak[0] <= 2, peak[0]
        jobs = stores[0].list_jobs("dan", 100)
        assert len(jobs) == 60 and all(j.state is JobState.COMPLETED for j in jobs)
        assert all(j.attempt == 1 for j in jobs)  # a rolled-back claim spends no attempt
    finally:
        for s in stores:
            s.close()


@dataclasses.dataclass(frozen=True)
class _Queued:
    id: int
    user: str
    rank: int
    weight: int
    max_running: int | None


def _fair_order(jobs: list[_Queued]) -> list[int]:
    """The rule of fair share, written plainly (docs/architecture.md, "Queue order"):
    the best claimable rank first; within it the user served least recently (a user
    never served before every served one, by their first job); ``weight`` claims a turn;
    a user's jobs FIFO; users at ``max_running`` passed over. Nothing finishes."""
    queued = sorted(jobs, key=lambda j: (j.rank, j.id))
    served = {j.user: j.id - 2**62 for j in reversed(sorted(jobs, key=lambda j: j.id))}
    used = dict.fromkeys(served, 0)
    running = dict.fromkeys(served, 0)
    clock, order = 0, []
    while True:
        claimable = [j for j in queued if j.max_running is None or running[j.user] < j.max_running]
        if not claimable:
            return order
        rank = claimable[0].rank
        user = min({j.user for j in claimable if j.rank == rank}, key=served.__getitem__)
        job = next(j for j in claimable if j.rank == rank and j.user == user)
        order.append(job.id)
        queued.remove(job)
        running[user] += 1
        used[user] += 1
        if used[user] >= job.weight:
            clock += 1
            served[user], used[user] = clock, 0


def _fair_jobs(store: SubmitStore) -> list[_Queued]:
    """Five users' jobs, submitted interleaved: weights 1, 2 and 3, a few premium jobs,
    and one user held to one running job."""
    import random

    rnd = random.Random(24)
    weights = {"ann": 1, "ben": 2, "cat": 3, "dan": 1, "eve": 1}
    limits = {"eve": 1}
    jobs: list[_Queued] = []
    for _ in range(60):
        user = rnd.choice(sorted(weights))
        tier = 2 if rnd.random() < 0.1 else 0
        job = store.enqueue(
            dataclasses.replace(
                new(user, tier=tier), weight=weights[user], max_running=limits.get(user)
            )
        )
        jobs.append(_Queued(job.id, user, queue_rank(tier, 0), weights[user], limits.get(user)))
    return jobs


def _started(db_url: str) -> Callable[[], set[int]]:
    """Reads, on a connection of its own, the ids of the jobs that left the queue."""
    query = "SELECT id FROM jobs WHERE state <> 'PENDING'"
    if db_url.startswith("sqlite:///"):
        lite = sqlite3.connect(db_url.removeprefix("sqlite:///"), check_same_thread=False)
        return lambda: {r[0] for r in lite.execute(query).fetchall()}
    pg = psycopg.connect(db_url, autocommit=True)
    return lambda: {r[0] for r in pg.execute(query).fetchall()}


def test_racing_claimers_serve_users_in_turn(db_url: str) -> None:
    """Fair share, exact under concurrency: twelve claimers on two connections race over
    five users' jobs (weights 1-3, premium jobs, a user at max_running 1). Every sample of
    the started jobs, read throughout on another connection, is a prefix of the order the
    rule gives: claims commit one at a time in the rule's order; none is taken twice."""
    stores = [open_store(db_url, migrate=i == 0) for i in range(2)]
    try:
        jobs = _fair_jobs(stores[0])
        expected = _fair_order(jobs)
        assert len(expected) < len(jobs)  # eve's jobs after her first are held
        started = _started(db_url)
        samples: list[set[int]] = []
        got: list[int] = []
        errors: list[BaseException] = []
        done = threading.Event()

        def sampler() -> None:
            while not done.is_set():
                samples.append(started())

        def claimer(s: JobStore, name: str, start: threading.Barrier) -> None:
            try:
                start.wait(10)
                misses = 0
                while misses < 3:
                    claimed = s.claim([POOL], name, 30)
                    if claimed is None:
                        misses += 1
                        continue
                    got.append(claimed.job.id)
            except BaseException as exc:
                errors.append(exc)

        _race(stores, claimer, sampler, done)
        assert not errors, errors
        assert len(got) == len(set(got)) and set(got) == set(expected)
        assert len(samples) > 3
        for sample in [*samples, started()]:
            assert sample == set(expected[: len(sample)]), (sorted(sample), expected)
    finally:
        for s in stores:
            s.close()


def test_turns_follow_every_way_in_and_out_of_the_queue(store: JobStore, db_url: str) -> None:
    """The triggers of migration 0012 keep each user's queued count and best rank (what
    the fair claim walks) equal to their queued jobs: submits, claims, cancels, retries,
    releases and reaped leases."""
    jobs = [store.enqueue(new(u, tier=t)) for u in ("ann", "ben") for t in (0, 2, 0)]
    other = store.enqueue(new("ann", pool=OTHER))
    claims = [store.claim([POOL], "w", 30) for _ in range(3)]
    assert all(claims)
    assert store.cancel(jobs[5].id, "ben")
    a, b, c = (claim for claim in claims if claim is not None)
    assert store.fail(a.job.id, a.lease_token, "boom", "engine_error", retry=True)
    assert store.release(b.job.id, b.lease_token)
    assert store.complete(c.job.id, c.lease_token, "outputs/c.mp4", {})
    assert store.claim([OTHER], "w", 0.01) is not None
    time.sleep(0.05)
    store.reap()
    assert store.get(other.id) is not None

    def read(sql: str) -> set[tuple[Any, ...]]:
        engine = sa.create_engine(sqlalchemy_url(db_url))
        try:
            with engine.connect() as conn:
                return {tuple(r) for r in conn.execute(sa.text(sql))}
        finally:
            engine.dispose()

    turns = read("SELECT pool, owner, queued, best_rank FROM turns WHERE queued > 0")
    truth = read(
        "SELECT pool, owner, count(*), min(rank) FROM jobs"
        " WHERE state IN ('PENDING', 'RETRY') GROUP BY pool, owner"
    )
    assert turns == truth and len(truth) == 3
    assert read("SELECT count(*) FROM turns WHERE queued < 0") == {(0,)}


def test_fair_share_positions_are_the_claim_order(store: JobStore) -> None:
    """Under fair share a queued job's position is its place in the claims to come
    (store/positions.py, ``turn_order``): exact without held jobs and new submits, at
    every rank and weight, from a turn order part-way through."""
    import random

    rnd = random.Random(7)
    weights = {"ann": 1, "ben": 2, "cat": 3, "dan": 1}
    for _ in range(40):
        user = rnd.choice(sorted(weights))
        tier = rnd.choice([0, 0, 0, 1, 2])
        store.enqueue(dataclasses.replace(new(user, tier=tier), weight=weights[user]))
        if rnd.random() < 0.2:
            assert store.claim([POOL], "w", 30) is not None
    queued = [j for u in weights for j in store.list_jobs(u, 100) if j.state.queued]
    said = {j.id: store.queue_position(j) for j in queued}
    for j in queued:
        status = store.job_status(j.id, j.user)
        assert status is not None and status.queue_position == said[j.id]
        assert not status.held
    order = []
    while (claimed := store.claim([POOL], "w", 30)) is not None:
        order.append(claimed.job.id)
    assert said == {job_id: at for at, job_id in enumerate(order)}


def test_fair_share_a_late_users_job_goes_next(store: JobStore, fifo: JobStore) -> None:
    """A user who was never served goes before every served user; with fair share off
    (the same database, a FIFO store) the queue is first in, first out."""
    backlog = [store.enqueue(new(u)) for u in ("ann", "ben", "cat") for _ in range(4)]
    first = store.claim([POOL], "w", 30)
    assert first is not None and first.job.id == backlog[0].id
    late = store.enqueue(new("dan"))
    assert store.queue_position(late) == 2  # ben's and cat's first jobs, never served either
    assert fifo.queue_position(late) == 11  # behind every job queued before it
    order = [store.claim([POOL], "w", 30) for _ in range(3)]
    assert [c.job.user for c in order if c] == ["ben", "cat", "dan"]
    nxt = fifo.claim([POOL], "w", 30)
    assert nxt is not None and nxt.job.id == backlog[1].id  # FIFO: ann's second job


def test_fair_share_passes_over_held_and_paused(store: JobStore) -> None:
    """A user at max_running is passed over without losing their turn; a paused pool is
    claimed from by nobody; a held job says so."""
    ann = [store.enqueue(dataclasses.replace(new("ann"), max_running=1)) for _ in range(3)]
    ben = [store.enqueue(new("ben")) for _ in range(3)]
    a0 = store.claim([POOL], "w", 30)
    assert a0 is not None and a0.job.id == ann[0].id
    status = store.job_status(ann[1].id, "ann")
    assert status is not None and status.held
    taken = [store.claim([POOL], "w", 30) for _ in range(2)]
    assert [c.job.id for c in taken if c] == [ben[0].id, ben[1].id]  # ann is held
    assert store.complete(a0.job.id, a0.lease_token, "outputs/a.mp4", {})
    # ann was served before ben's last claim: her turn comes first
    assert store.queue_position(ann[1]) == 0
    store.pause_pool(POOL)
    assert store.claim([POOL], "w", 30) is None
    store.resume_pool(POOL)
    nxt = store.claim([POOL], "w", 30)
    assert nxt is not None and nxt.job.id == ann[1].id


# ========================================================================================
# TokenStore: API tokens
# What api/auth.py and the `vidq token` commands ask of the store.
# ========================================================================================


def test_tokens(store: TokenStore) -> None:
    t = store.create_token("alice", "h" * 64, 50, admin=False)
    a = store.create_token("root", "a" * 64, 1000, admin=True)
    found = store.token_by_hash("h" * 64)
    assert found is not None and found[0].user == "alice" and found[0].max_priority == 50
    assert found[1] == "h" * 64 and not found[0].admin
    assert store.token_by_hash("x" * 64) is None
    assert store.revoke_token(t.id)
    assert not store.revoke_token(t.id)
    assert store.token_by_hash("h" * 64) is None
    listed = {x.id: x for x in store.list_tokens()}
    assert listed[t.id].revoked and not listed[a.id].revoked and listed[a.id].admin


def test_worker_tokens(store: TokenStore) -> None:
    """A worker token keeps its role and its pools (migration 0008); user tokens have none."""
    w = store.create_token("gpu-box", "w" * 64, 0, admin=False, worker=True, pools=["p1", "p2"])
    any_pool = store.create_token("gpu-2", "v" * 64, 0, admin=False, worker=True)
    user = store.create_token("alice", "u" * 64, 50, admin=False)
    assert w.worker and w.pools == ("p1", "p2") and not w.admin
    found = store.token_by_hash("w" * 64)
    assert found is not None and found[0].worker and found[0].pools == ("p1", "p2")
    assert any_pool.worker and any_pool.pools is None
    assert not user.worker and user.pools is None
    listed = {x.id: x for x in store.list_tokens()}
    assert listed[w.id].worker and listed[w.id].pools == ("p1", "p2")
    assert not listed[user.id].worker


def test_token_limits_round_trip(store: TokenStore) -> None:
    quota = Quota(
        max_queued=5, max_running=1, rate_per_minute=60, daily_video_seconds=600,
        daily_gpu_seconds=3600, weight=3,
    )  # fmt: skip
    t = store.create_token("erin", "e" * 64, 10, admin=False, quota=quota)
    assert t.quota == quota
    found = store.token_by_hash("e" * 64)
    assert found is not None and found[0].quota == quota
    lifted = dataclasses.replace(quota, max_queued=None, weight=1)
    updated = store.update_token(t.id, 20, lifted)
    assert updated is not None and updated.quota == lifted and updated.max_priority == 20
    assert not updated.revoked
    assert [x.quota for x in store.list_tokens() if x.id == t.id] == [lifted]
    assert store.revoke_token(t.id)
    assert store.update_token(t.id, 20, quota) is None


def test_user_tokens_names_expiry_cap_and_owner(store: JobStore) -> None:
    """A user's own tokens (migration 0014): a name and an expiry, refused past the cap of
    live ones (an expired or revoked one frees its place), listed and revoked per user."""
    quota = Quota(max_queued=2, weight=3)
    now = store.now()
    made = store.create_user_token(
        "ann", "n" * 64, 7, quota, name="laptop", expires_at=now + 3600, max_live=2
    )
    assert made is not None and (made.name, made.max_priority, made.quota) == ("laptop", 7, quota)
    assert not made.admin and not made.worker and not made.revoked and not made.expired
    assert made.expires_at is not None and abs(made.expires_at - (now + 3600)) < 1
    found = store.token_by_hash("n" * 64)
    assert found is not None and found[0] == made
    gone = store.create_user_token(
        "ann", "o" * 64, 7, quota, name="old", expires_at=now - 1, max_live=2
    )
    assert gone is not None and gone.expired  # an expired token is still found, marked
    found = store.token_by_hash("o" * 64)
    assert found is not None and found[0].expired
    cli = store.create_token("ann", "p" * 64, 7, admin=False)  # counts, and is unnamed
    assert cli.name is None and cli.expires_at is None and not cli.expired
    named = store.create_token("cat", "s" * 64, 1, admin=False, name="ci", expires_at=now - 5)
    assert (named.name, named.expires_at, named.expired) == ("ci", now - 5, True)
    full = store.create_user_token(
        "ann", "q" * 64, 7, quota, name="3rd", expires_at=None, max_live=2
    )
    assert full is None and store.token_by_hash("q" * 64) is None  # nothing stored
    bob = store.create_user_token(
        "bob", "r" * 64, 1, Quota(), name="b", expires_at=None, max_live=2
    )
    assert bob is not None  # the cap is per user

    assert [t.id for t in store.list_tokens("ann")] == [made.id, gone.id, cli.id]
    assert [t.id for t in store.list_tokens("bob")] == [bob.id]
    assert not store.revoke_token(made.id, "bob")  # not bob's: untouched
    assert store.token_by_hash("n" * 64) is not None
    assert store.revoke_token(made.id, "ann") and not store.revoke_token(made.id, "ann")
    assert store.token_by_hash("n" * 64) is None
    again = store.create_user_token(
        "ann", "q" * 64, 7, quota, name="3rd", expires_at=None, max_live=2
    )
    assert again is not None and again.name == "3rd"
    listed = {t.id: t for t in store.list_tokens()}
    assert listed[made.id].revoked and listed[gone.id].expired and listed[again.id].name == "3rd"


# ========================================================================================
# UploadStore: uploaded files
# What the fal upload routes ask of the store (expiry: the collector's).
# ========================================================================================


def test_uploads_owner_size_and_expiry(store: JobStore) -> None:
    now = store.now()
    a = store.create_upload("a" * 32, "alice", "uploads/alice/a/x.png", "image/png", "x.png", None)
    assert a.size is None and a.expires_at is None and abs(a.created_at - now) < 5
    assert store.get_upload("a" * 32, "bob") is None  # another user's id: None, as unknown
    assert store.get_upload("f" * 32, "alice") is None
    assert store.upload_stored("a" * 32, 123) and not store.upload_stored("a" * 32, 5)
    got = store.get_upload("a" * 32, "alice")
    assert got is not None and got.size == 123 and got.key == "uploads/alice/a/x.png"
    assert store.get_upload("a" * 32) == got  # no owner given: signed upload URLs
    b = store.create_upload("b" * 32, "bob", "k", "image/png", "y.png", 0.5)
    assert b.expires_at is not None and 0.4 < b.expires_at - b.created_at < 0.6
    assert store.expired_uploads(3600, 10) == []
    time.sleep(0.6)
    assert [u.id for u in store.expired_uploads(3600, 10)] == ["b" * 32]  # its own expiry
    assert {u.id for u in store.expired_uploads(0, 10)} == {"a" * 32, "b" * 32}  # by age
    assert store.delete_upload("b" * 32) and not store.delete_upload("b" * 32)


# ========================================================================================
# WebhookStore: the webhook outbox
# What the dispatcher of api/webhooks.py asks of the store.
# ========================================================================================


HOOK = "https://hooks.example/done"


def test_the_jobs_insert_registers_its_webhook(store: JobStore) -> None:
    """Issue 12, row 8: the webhook is part of the job's INSERT: no job without its webhook,
    due once the job is finished, never for a job without one."""
    hooked = store.enqueue(new(webhook=HOOK, key="k"))
    assert store.enqueue(new(webhook=HOOK, key="k")).id == hooked.id  # a replay adds nothing
    plain = store.enqueue(new())
    assert hooked.webhook_url == HOOK and hooked.webhook_dialect == "fal"
    assert hooked.webhook_base == "https://vidq.example"
    assert store.due_webhooks(10) == []  # queued: nothing to tell yet
    assert store.take_webhook(hooked.id, 30) is None
    claimed = store.claim([POOL], "w", 30)
    assert claimed is not None and claimed.job.id == hooked.id
    assert store.due_webhooks(10) == []  # running
    assert store.complete(hooked.id, claimed.lease_token, "outputs/1.mp4", {"frames": 17})
    assert store.cancel(plain.id, "alice")  # finished too, but asked for no webhook
    assert store.due_webhooks(10) == [DueWebhook(hooked.id, "alice", HOOK)]
    taken = store.take_webhook(hooked.id, 30)
    assert taken is not None and taken.attempts == 0
    assert taken.job.state is JobState.COMPLETED and taken.job.result_meta == {"frames": 17}
    assert taken.job.webhook_url == HOOK and taken.job.webhook_base == "https://vidq.example"
    assert store.take_webhook(plain.id, 30) is None


def test_a_webhook_has_one_taker_and_fenced_results(store: JobStore) -> None:
    job = store.enqueue(new(webhook=HOOK))
    assert store.cancel(job.id, "alice")  # CANCELLED is finished: its webhook is due
    first = store.take_webhook(job.id, 30)
    assert first is not None and first.attempts == 0
    assert store.take_webhook(job.id, 30) is None  # leased: another API process gets nothing
    assert store.due_webhooks(10) == []
    # A failed attempt: due again after its backoff, on the database clock.
    assert store.webhook_result(job.id, 0, WebhookState.PENDING, retry_after_s=0.4)
    assert not store.webhook_result(job.id, 0, WebhookState.DELIVERED)  # recorded already
    assert store.due_webhooks(10) == [] and store.take_webhook(job.id, 30) is None
    time.sleep(0.5)
    assert [d.job_id for d in store.due_webhooks(10)] == [job.id]
    second = store.take_webhook(job.id, 30)
    assert second is not None and second.attempts == 1
    assert store.webhook_result(job.id, 1, WebhookState.DELIVERED)
    assert store.due_webhooks(10) == [] and store.take_webhook(job.id, 0) is None
    # Given up is final too.
    other = store.enqueue(new(webhook=HOOK))
    assert store.cancel(other.id, "alice")
    assert store.take_webhook(other.id, 30) is not None
    assert store.webhook_result(other.id, 0, WebhookState.GIVEN_UP)
    assert store.due_webhooks(10) == [] and store.take_webhook(other.id, 0) is None


def test_a_lost_webhook_lease_is_taken_again_and_fences_the_late_holder(
    store: JobStore,
) -> None:
    """A replica that dies mid-delivery delays the webhook by its lease, not forever."""
    job = store.enqueue(new(webhook=HOOK))
    assert store.cancel(job.id, "alice")
    late = store.take_webhook(job.id, 0.2)
    assert late is not None
    time.sleep(0.3)
    again = store.take_webhook(job.id, 30)
    assert again is not None and again.attempts == late.attempts == 0
    assert store.webhook_result(job.id, again.attempts, WebhookState.DELIVERED)
    assert not store.webhook_result(job.id, late.attempts, WebhookState.PENDING, 1.0)
    assert store.due_webhooks(10) == []


def test_due_webhooks_page_by_job_id(store: JobStore) -> None:
    ids = [store.enqueue(new(webhook=HOOK)).id for _ in range(3)]
    for job_id in ids:
        assert store.cancel(job_id, "alice")
    assert [d.job_id for d in store.due_webhooks(2)] == ids[:2]
    assert [d.job_id for d in store.due_webhooks(2, after_id=ids[1])] == ids[2:]
    assert store.due_webhooks(2, after_id=ids[2]) == []


def test_concurrent_takers_deliver_a_webhook_once(db_url: str) -> None:
    """Two API replicas' dispatchers racing for the same deliveries: each taken once."""
    stores = [open_store(db_url, migrate=i == 0) for i in range(4)]
    try:
        ids = [stores[0].enqueue(new(webhook=HOOK)).id for _ in range(20)]
        for job_id in ids:
            assert stores[0].cancel(job_id, "alice")
        start = threading.Barrier(8)
        got: list[int] = []
        errors: list[BaseException] = []

        def taker(s: JobStore) -> None:
            start.wait(10)
            try:
                for job_id in ids:
                    if s.take_webhook(job_id, 30) is not None:
                        got.append(job_id)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=taker, args=(stores[i % 4],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert sorted(got) == ids  # each delivery leased exactly once
    finally:
        for s in stores:
            s.close()


# ========================================================================================
# OperatorStore: the admin routes (every user's jobs, retries, pools, users, workers)
# What api/admin.py asks of the store (migration 0005).
# ========================================================================================


def _finish(store: JobStore, outcome: str, *, pool: str = POOL, user: str = "alice") -> int:
    """A job taken through one claim to ``outcome`` (completed, failed, retried, running)."""
    job = store.enqueue(new(user, pool=pool, max_attempts=1 if outcome == "failed" else 3))
    claimed = store.claim([pool], "w1", 30)
    assert claimed is not None and claimed.job.id == job.id and claimed.lease_token
    token = claimed.lease_token
    if outcome == "completed":
        meta = {"frames": 32, "fps": [16, 1]}
        assert store.complete(job.id, token, f"outputs/free/{job.id}.mp4", meta)
    elif outcome in ("failed", "retried"):
        assert store.fail(job.id, token, "boom", "EngineError", retry=outcome == "retried")
    return job.id


def test_list_filters_and_prompt_search(store: JobStore) -> None:
    def enqueue(prompt: str, user: str = "alice", model: str = "wan22-fast-t2v") -> int:
        job = dataclasses.replace(new(user), model_id=model, inputs={"prompt": prompt})
        return store.enqueue(job).id

    fox = enqueue("A Red Fox")
    joy = enqueue("100% pure_joy \\ back")
    sea = enqueue("a calm sea", model="wan22-fast-t2v-pro")
    bob = enqueue("a red fox", user="bob")
    nothing = store.enqueue(dataclasses.replace(new(), inputs={"width": 128})).id  # no prompt
    claimed = store.claim([POOL], "w1", 30)  # the oldest: fox
    assert claimed is not None and claimed.job.id == fox
    assert store.complete(fox, claimed.lease_token, f"outputs/free/{fox}.mp4", {})

    def ids(**where: Any) -> list[int]:
        return [j.id for j in store.list_jobs("alice", 10, None, JobFilter(**where))]

    assert ids() == [nothing, sea, joy, fox]
    assert ids(model_id="wan22-fast-t2v-pro") == [sea]
    assert ids(states=(JobState.COMPLETED,)) == [fox]
    assert ids(states=(JobState.PENDING, JobState.RETRY)) == [nothing, sea, joy]
    assert ids(states=(JobState.PENDING,), model_id="wan22-fast-t2v") == [nothing, joy]
    assert ids(prompt="red fOX") == [fox]  # any case; never bob's
    assert [j.id for j in store.list_jobs("bob", 10, None, JobFilter(prompt="FOX"))] == [bob]
    assert ids(prompt="%") == ids(prompt="_") == ids(prompt="\\") == [joy]  # literally
    assert ids(prompt="e_j") == [joy] and ids(prompt="a_c") == [] and ids(prompt="1%0") == []
    assert ids(prompt="a") == [sea, joy, fox]  # a job without a prompt never matches
    page = store.list_jobs("alice", 1, sea, JobFilter(prompt="a"))
    assert [j.id for j in page] == [joy]  # paged with ``before``


def test_delete_job_marks_a_finished_job_and_its_blobs(store: JobStore) -> None:
    done = _finish(store, "completed")
    failed = _finish(store, "failed")
    queued = store.enqueue(new()).id
    assert store.delete_job(done, "bob") is None  # not bob's
    assert store.delete_job(queued, "alice") is None  # not finished
    job = store.delete_job(done, "alice")
    assert job is not None and job.deleted_at is not None
    assert job.expired_at is not None and job.inputs_expired_at is not None
    assert job.state is JobState.COMPLETED and job.result_key == f"outputs/free/{done}.mp4"
    assert store.delete_job(done, "alice") is None  # once
    gone = store.delete_job(failed, "alice")
    assert gone is not None and gone.expired_at is None and gone.inputs_expired_at is not None
    assert [j.id for j in store.list_jobs("alice", 10)] == [queued]  # out of the list
    # Marked: the collector takes both whatever the TTLs, if the caller did not finish.
    assert {d.job_id for d in store.outputs_due(10**9, 10) if d.marked} == {done}
    assert {d.job_id for d in store.inputs_due(10**9, 10) if d.marked} == {done, failed}
    store.output_deleted(done)
    store.inputs_deleted(done)
    assert store.outputs_due(10**9, 10) == []
    kept = store.get(done, "alice")
    assert kept is not None and kept.deleted_at == job.deleted_at  # the row stays
    assert [u.jobs for u in store.daily_usage("alice", 1)] == [3]  # usage counts it


def test_admin_jobs_cancel_retry(store: JobStore) -> None:
    failed = _finish(store, "failed", pool=OTHER, user="carol")
    a = store.enqueue(new("alice"))
    b = store.enqueue(new("bob", pool=OTHER))
    every = store.admin_jobs(user=None, states=(), pool=None, since=0, limit=10)
    assert [j.id for j in every] == [b.id, a.id, failed]
    queued = (JobState.PENDING, JobState.RETRY)
    assert [j.id for j in store.admin_jobs(user=None, states=queued, pool=OTHER, since=0,
                                          limit=10)] == [b.id]  # fmt: skip
    assert [j.id for j in store.admin_jobs(user="alice", states=(), pool=None, since=0,
                                          limit=10)] == [a.id]  # fmt: skip
    page = store.admin_jobs(user=None, states=(), pool=None, since=0, limit=1, before_id=b.id)
    assert [j.id for j in page] == [a.id]
    failures = store.admin_jobs(user=None, states=(JobState.FAILED,), pool=None, since=0,
                                limit=10)  # fmt: skip
    assert [j.id for j in failures] == [failed]
    late = store.admin_jobs(user=None, states=(), pool=None, since=store.now() + 60, limit=10)
    assert late == []
    assert store.cancel_job(b.id, "bob", running=True) is Cancel.CANCELLED
    assert not store.admin_retry(a.id)  # not FAILED
    assert store.admin_retry(failed)
    job = store.get(failed)
    assert job is not None and job.state is JobState.PENDING and job.attempt == 0
    assert job.error is None and job.finished_at is None
    assert not store.admin_retry(failed)


def test_paused_pool_is_not_claimed_and_resume_wakes(store: JobStore) -> None:
    job = store.enqueue(new())
    store.pause_pool(POOL)
    store.pause_pool(POOL)  # idempotent
    assert store.paused_pools() == [POOL]
    assert store.claim([POOL], "w", 30) is None
    status = store.job_status(job.id, "alice")
    assert status is not None and status.pool_paused
    store.claim([POOL], "w", 30)  # marks the generation this thread saw
    assert store.resume_pool(POOL) and not store.resume_pool(POOL)
    started = time.monotonic()
    store.wait_for_jobs([POOL], 5.0)  # the resume woke it
    assert time.monotonic() - started < 4.0
    claimed = store.claim([POOL], "w", 30)
    assert claimed is not None and claimed.job.id == job.id


def test_user_stats_and_workers(store: JobStore) -> None:
    _finish(store, "completed", user="alice")
    _finish(store, "failed", user="alice")
    store.enqueue(dataclasses.replace(new("alice", pool=OTHER), video_seconds=2.5))
    store.enqueue(dataclasses.replace(new("bob", pool=OTHER), video_seconds=5.0))
    store.register_worker("w1", [POOL, OTHER], {POOL: "preview", OTHER: "wan"})
    stats = {s.user: s for s in store.user_stats(store.now() - 3600)}
    assert stats["alice"].completed_today == 1 and stats["alice"].failed_today == 1
    assert stats["alice"].video_seconds_today == 2.5  # accepted today: what the limit counts
    assert stats["bob"].video_seconds_today == 5.0
    assert stats["bob"].queued == 1 and stats["bob"].running == 0
    running = store.enqueue(new("carol"))
    store.claim([POOL], "w1", 30)
    (info,) = store.workers()
    assert info.name == "w1" and info.pools == (POOL, OTHER)
    assert info.engines == {POOL: "preview", OTHER: "wan"}
    assert info.current_job == running.id and info.jobs_done == 1 and info.seen_s_ago < 60


def test_a_worker_says_what_it_is_doing(store: JobStore) -> None:
    """A worker that is not claiming registers its state (warming, engine down with the
    reason, stopped); a claim's registration says ready and clears the reason; a worker
    token's names stay bounded whatever the state."""
    assert store.register_worker("w1", [POOL], {POOL: "comfyui"}, state=WorkerState.WARMING)
    (info,) = store.workers()
    assert (info.state, info.state_reason) == (WorkerState.WARMING, None)
    down = "no ComfyUI server answered: http://127.0.0.1:1: connection refused"
    store.register_worker("w1", [POOL], {POOL: "comfyui"}, state=WorkerState.ENGINE_DOWN,
                          reason=down)  # fmt: skip
    (info,) = store.workers()
    assert (info.state, info.state_reason) == (WorkerState.ENGINE_DOWN, down)
    assert info.engines == {POOL: "comfyui"} and info.seen_s_ago < 60
    store.register_worker("w1", [POOL], {POOL: "comfyui"})  # a claim's
    (info,) = store.workers()
    assert (info.state, info.state_reason) == (WorkerState.READY, None)
    store.register_worker("w1", [POOL], state=WorkerState.STOPPED)
    assert store.workers()[0].state is WorkerState.STOPPED
    # A worker token's second name is refused past its limit, in any state.
    assert store.register_worker("r1", [POOL], owner="ops", max_names=1,
                                 state=WorkerState.WARMING)  # fmt: skip
    assert not store.register_worker("r2", [POOL], owner="ops", max_names=1,
                                     state=WorkerState.ENGINE_DOWN, reason="x")  # fmt: skip
    assert store.register_worker("r1", [POOL], owner="ops", max_names=1,
                                 state=WorkerState.ENGINE_DOWN, reason="x")  # fmt: skip
    states = {w.name: (w.state, w.state_reason) for w in store.workers()}
    assert states == {
        "w1": (WorkerState.STOPPED, None), "r1": (WorkerState.ENGINE_DOWN, "x"),
    }  # fmt: skip


def test_pool_stats_and_recent_failures(store: JobStore) -> None:
    """The dashboard's figures: running now, completed/failed and the medians of the
    window, and the latest failures of every user (``/admin/queues``)."""
    assert store.pool_stats(3600) == {} and store.recent_failures(5) == []
    done, bad, running, _queued = (store.enqueue(new(u)) for u in ("a", "b", "c", "d"))
    other = store.enqueue(new("e", pool=OTHER))
    for job in (done, bad, running):
        claimed = store.claim([POOL], "w", 30)
        assert claimed is not None and claimed.job.id == job.id
        time.sleep(0.05)
        if job is done:
            assert store.complete(job.id, claimed.lease_token, "outputs/d.mp4", {})
        elif job is bad:
            token = claimed.lease_token
            assert store.fail(job.id, token, "engine <b>crash</b>", "engine", retry=False)
    stats = store.pool_stats(3600)
    assert set(stats) == {POOL}  # OTHER has only a queued job: nothing to say yet
    s = stats[POOL]
    assert (s.running, s.completed, s.failed) == (1, 1, 1)
    assert s.median_wait_s is not None and 0 <= s.median_wait_s < 30
    assert s.median_run_s is not None and 0.03 < s.median_run_s < 30
    assert store.pool_stats(0.001)[POOL].completed == 0  # outside a tiny window
    failures = store.recent_failures(5)
    assert [(f.job_id, f.user, f.pool, f.error, f.error_type) for f in failures] == [
        (bad.id, "b", POOL, "engine <b>crash</b>", "engine")
    ]
    assert store.get(other.id) is not None


def _set_times(
    db_url: str, times: dict[int, tuple[str, float, float | None, float | None]]
) -> None:
    """Give jobs a state and known times (created, first started, finished), as if they
    had run then: the store's clock cannot be moved, the rows can."""
    engine = sa.create_engine(sqlalchemy_url(db_url))
    try:
        with engine.begin() as conn:
            for job_id, (state, created, started, finished) in times.items():
                conn.execute(
                    sa.text(
                        "UPDATE jobs SET state = :state, created_at = :created, "
                        "first_started_at = :started, started_at = :started, "
                        "finished_at = :finished WHERE id = :id"
                    ),
                    {"state": state, "created": created, "started": started,
                     "finished": finished, "id": job_id},
                )  # fmt: skip
    finally:
        engine.dispose()


def test_pool_history_from_known_times(store: JobStore, db_url: str) -> None:
    """The dashboard's charts (``/admin/history``): per minute, the queue depth at the
    minute's end, first starts with their wait p50/p95, completed and failed jobs; jobs that
    touched no minute of the window count nowhere."""
    empty = store.pool_history(3600, 60)
    assert empty.pools == {} and len(empty.times) == 60
    assert all(t % 60 == 0 for t in empty.times)
    assert empty.times[-1] <= empty.now < empty.times[-1] + 60
    a, b, c, d, e, f = (store.enqueue(new(u)) for u in "abcdef")
    g = store.enqueue(new("g", pool=OTHER))
    m0 = math.floor(store.now() / 60) * 60 - 300  # a whole minute, 5 minutes ago
    m1, m2, old = m0 + 60, m0 + 120, store.now() - 7200
    _set_times(db_url, {
        a.id: ("COMPLETED", m0 + 10, m0 + 40, m1 + 5),  # waited 30 s
        b.id: ("FAILED", m0 + 20, m1 + 20, m1 + 50),  # waited 60 s
        c.id: ("COMPLETED", m0 + 50, m1 + 30, m2 + 10),  # waited 40 s
        d.id: ("CANCELLED", m0 + 15, None, m2 + 30),  # cancelled while queued
        e.id: ("PENDING", old, None, None),  # queued for two hours: queued in every minute
        f.id: ("COMPLETED", old, old + 100, old + 200),  # before the window: nowhere
        g.id: ("COMPLETED", m2 + 1, m2 + 6, m2 + 20),
    })  # fmt: skip
    past = store.pool_history(3600, 60)
    assert set(past.pools) == {POOL, OTHER}
    i = past.times.index(m0)
    h = past.pools[POOL]
    assert h.queued[i - 1 : i + 3] == (1, 4, 2, 1)  # at each minute's end
    assert h.queued[0] == 1 and h.queued[-1] == 1  # e, all along
    assert h.started[i : i + 3] == (1, 2, 0) and sum(h.started) == 3
    assert (h.wait_p50_s[i], h.wait_p95_s[i]) == (30, 30)
    assert (h.wait_p50_s[i + 1], h.wait_p95_s[i + 1]) == (40, 60)  # nearest rank of 40, 60
    assert h.wait_p50_s[i + 2] is None
    assert h.completed[i : i + 3] == (0, 1, 1) and sum(h.completed) == 2
    assert h.failed[i : i + 3] == (0, 1, 0) and sum(h.failed) == 1
    o = past.pools[OTHER]
    assert o.completed[i + 2] == 1 and o.wait_p50_s[i + 2] == 5 and set(o.queued) == {0}
    five = store.pool_history(3600, 300)  # 5-minute buckets: the same jobs, summed
    assert len(five.times) == 12 and sum(five.pools[POOL].completed) == 2


# ========================================================================================
# RetentionStore: the retention collector
# What ops/retention.py asks of the store.
# ========================================================================================


def test_lease_has_one_holder(store: RetentionStore) -> None:
    assert store.take_lease("gc", "a", 30)
    assert not store.take_lease("gc", "b", 30)
    assert store.take_lease("gc", "a", 30)  # renewal
    store.release_lease("gc", "b")  # not the holder: no-op
    assert not store.take_lease("gc", "b", 30)
    store.release_lease("gc", "a")
    assert store.take_lease("gc", "b", 0.2)
    time.sleep(0.5)
    assert store.take_lease("gc", "a", 30)  # b's lease expired


def test_retention_marks_before_deleting_and_purges_into_the_rollup(store: JobStore) -> None:
    done = _finish(store, "completed")
    store.enqueue(new())  # live: never due
    running = store.enqueue(new())
    store.claim([POOL], "w", 30)
    before = store.job_samples()
    assert [d.job_id for d in store.inputs_due(3600, 10)] == []  # not old enough
    (due,) = store.outputs_due(0, 10)
    output = f"outputs/free/{done}.mp4"
    assert (due.job_id, due.keys, due.marked) == (done, (output, poster_key(output)), False)
    assert [d.job_id for d in store.inputs_due(0, 10)] == [done]
    store.expire_output(done)
    job = store.get(done)
    assert job is not None and job.expired_at is not None
    status = store.job_status(done, "alice")
    assert status is not None and status.expired_at == job.expired_at
    (again,) = store.outputs_due(10**9, 10)  # marked: due again whatever the TTL
    assert again.marked
    assert store.purge_jobs(0, 10) == 0  # blobs not deleted yet: the row stays
    store.output_deleted(done)
    assert store.outputs_due(0, 10) == []
    store.expire_inputs(done)
    assert not store.admin_retry(done)
    store.inputs_deleted(done)
    assert store.inputs_due(0, 10) == []
    assert store.purge_jobs(0, 10) == 1
    assert store.get(done) is None and store.get(running.id) is not None
    assert store.job_samples() == before  # the purged row's counters moved to the rollup


def test_retried_finished_lists_the_retried_jobs_that_ended_lately(store: JobStore) -> None:
    """What the collector sweeps for late uploads: finished jobs of more than one attempt,
    newest first; a job of one attempt, or one still running, is not listed."""
    _finish(store, "completed")  # one attempt

    def retried(end: str) -> int:
        job = store.enqueue(new())
        first = store.claim([POOL], "w", 30)
        assert first is not None and first.job.id == job.id
        assert store.fail(job.id, first.lease_token, "lost", "engine", True, 0.0)
        second = store.claim([POOL], "w", 30)
        assert second is not None and second.job.attempt == 2
        if end == "completed":
            key = f"outputs/free/{job.id}_0_Preview_T2V_00002.mp4"
            assert store.complete(job.id, second.lease_token, key, {})
        elif end == "failed":
            assert store.fail(job.id, second.lease_token, "bad", "engine", False, 0.0)
        return job.id

    won, lost, running = retried("completed"), retried("failed"), retried("running")
    listed = store.retried_finished(600, 10)
    assert [j.id for j in listed] == [lost, won]  # newest first; the running one is not
    assert [j.state for j in listed] == [JobState.FAILED, JobState.COMPLETED]
    assert listed[1].attempt == 2 and listed[1].result_key is not None
    assert [j.id for j in store.retried_finished(600, 1)] == [lost]
    assert running not in {j.id for j in store.retried_finished(10**6, 10)}


# ========================================================================================
# MetricStore and RunTimeStore: metric samples and gauges, recent run times
# What ops/metrics.py's JobFamilies and api/eta.py ask of the store.
# ========================================================================================


def test_job_samples_count_what_happened(store: JobStore) -> None:
    done = [_finish(store, "completed") for _ in range(3)]
    failed = _finish(store, "failed")
    _finish(store, "retried")  # back in the queue: one attempt retried
    store.enqueue(new())
    cancelled = store.enqueue(new())
    assert store.cancel(cancelled.id, "alice")
    samples = store.job_samples()
    sub = ("vidq_jobs_submitted", '{"model":"wan22-fast-t2v","pool":"wan22-t2v","tier":"base"}')
    assert samples[sub] == 7
    assert samples[("vidq_jobs_finished", '{"pool":"wan22-t2v","state":"completed"}')] == 3
    assert samples[("vidq_jobs_finished", '{"pool":"wan22-t2v","state":"failed"}')] == 1
    assert samples[("vidq_jobs_finished", '{"pool":"wan22-t2v","state":"cancelled"}')] == 1
    attempts = {k[1]: v for k, v in samples.items() if k[0] == "vidq_job_attempts"}
    assert attempts == {
        '{"outcome":"completed","pool":"wan22-t2v"}': 3,
        '{"outcome":"failed","pool":"wan22-t2v"}': 1,
        '{"outcome":"retried","pool":"wan22-t2v"}': 1,
    }
    # five jobs were claimed (3 completed, 1 failed, 1 retried); four ran to an end
    assert samples[("vidq_job_queue_wait_seconds_count", '{"pool":"wan22-t2v"}')] == 5
    assert samples[("vidq_job_run_seconds_count", '{"pool":"wan22-t2v"}')] == 4
    le = ("vidq_job_run_seconds_bucket", '{"le":"3600.0","pool":"wan22-t2v"}')
    assert samples[le] == 4
    states = store.pool_states()[POOL]
    assert states == {JobState.PENDING: 1, JobState.RETRY: 1}
    # a running attempt stopped by a cancel is "cancelled", not retried; a job that
    # expired in the queue finished failed without spending an attempt
    stopped = store.enqueue(new(pool="third"))
    claimed = store.claim(["third"], "w1", 30)
    assert claimed is not None and claimed.job.id == stopped.id and claimed.lease_token
    assert store.cancel_job(stopped.id, "alice", running=True) is Cancel.REQUESTED
    assert store.finish_cancel(stopped.id, claimed.lease_token)
    late = store.enqueue(dataclasses.replace(new(pool=OTHER), deadline_s=0.05))
    time.sleep(0.2)
    assert late.id in store.reap().expired
    samples = store.job_samples()
    attempts = {k[1]: v for k, v in samples.items() if k[0] == "vidq_job_attempts"}
    assert attempts == {
        '{"outcome":"completed","pool":"wan22-t2v"}': 3,
        '{"outcome":"failed","pool":"wan22-t2v"}': 1,
        '{"outcome":"retried","pool":"wan22-t2v"}': 1,
        '{"outcome":"cancelled","pool":"third"}': 1,
    }
    assert samples[("vidq_jobs_finished", f'{{"pool":"{OTHER}","state":"failed"}}')] == 1
    assert ("vidq_job_attempts", f'{{"outcome":"failed","pool":"{OTHER}"}}') not in samples
    # an admin retry keeps what the failed run spent: counters never go back
    assert store.admin_retry(failed)
    again = store.job_samples()
    assert again[("vidq_jobs_finished", '{"pool":"wan22-t2v","state":"failed"}')] == 1
    assert again[("vidq_job_attempts", '{"outcome":"failed","pool":"wan22-t2v"}')] == 1
    assert len(done) == 3


def test_recent_durations_and_live_workers(store: JobStore) -> None:
    for _ in range(3):
        store.enqueue(new())
        c = store.claim([POOL], "w", 30)
        assert c is not None
        time.sleep(0.05)
        assert store.complete(c.job.id, c.lease_token, f"outputs/{c.job.id}.mp4", {})
    durations = store.recent_durations(POOL, 1.0)
    assert len(durations) == 3 and all(0.03 < d < 5 for d in durations)
    assert store.recent_durations(POOL, 100.0) == []  # dissimilar work units
    assert store.recent_durations(OTHER, 1.0) == []
    store.register_worker("w1", [POOL, OTHER])
    store.register_worker("w2", [POOL])
    store.register_worker("w2", [POOL])
    assert store.live_workers() == {POOL: 2, OTHER: 1}


# ========================================================================================
# Every role: the drivers and the schema under them
# Error translation and migrations, whichever role's statement meets them.
# ========================================================================================


def driver_error(exc: BaseException) -> BaseException:
    """The driver exception a vidq error was raised from."""
    cause = exc.__cause__
    assert cause is not None and type(cause).__module__.split(".")[0] in {"sqlite3", "psycopg"}
    return cause


def test_a_write_the_schema_refuses_is_a_conflict(store: TokenStore) -> None:
    store.create_token("alice", "h" * 64, 50, admin=False)
    with pytest.raises(Conflict) as refused:
        store.create_token("bob", "h" * 64, 50, admin=False)  # token_hash is unique
    driver_error(refused.value)
    assert refused.value.http_status == 409
    assert store.token_by_hash("h" * 64) is not None  # the store still works


def test_a_broken_database_is_store_unavailable(db_url: str, store: JobStore) -> None:
    engine = sa.create_engine(sqlalchemy_url(db_url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE workers"))
    finally:
        engine.dispose()
    with pytest.raises(StoreUnavailable) as register:
        store.register_worker("w1", [POOL])
    driver_error(register.value)
    with pytest.raises(StoreUnavailable) as read:
        store.live_workers()
    driver_error(read.value)
    assert store.enqueue(new()).id > 0  # the rest of the store still works


def test_sqlite_busy_database_is_store_unavailable(tmp_path: Path) -> None:
    from vidq.store.sqlite import SQLiteStore

    open_store(f"sqlite:///{tmp_path / 'vidq.db'}").close()
    impatient = SQLiteStore(tmp_path / "vidq.db", busy_timeout_s=0.05)
    other = sqlite3.connect(tmp_path / "vidq.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        with pytest.raises(StoreUnavailable) as busy:
            impatient.enqueue(new())
        assert isinstance(driver_error(busy.value), sqlite3.OperationalError)
        other.execute("COMMIT")
        assert impatient.enqueue(new()).id > 0
    finally:
        other.close()
        impatient.close()


def test_migrations_build_the_schema_the_code_uses(fresh_url: str) -> None:
    open_store(fresh_url).close()
    engine = sa.create_engine(sqlalchemy_url(fresh_url))
    try:
        with engine.connect() as conn:
            version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            assert version == head_revision() == HEAD
            inspector = sa.inspect(conn)
            columns = {c["name"] for c in inspector.get_columns("jobs")}
            # a column, or an expression named for the column it reads (``... AS name``)
            assert {c.split()[-1] for c in JOB_COLUMNS.split(",")} <= columns
            assert {"higher_quality", "retry_at", "gpu_seconds", "device"} <= columns
            tokens = {c["name"] for c in inspector.get_columns("tokens")}
            assert {"daily_gpu_seconds", "name", "expires_at"} <= tokens
            assert {"webhook_state", "webhook_attempts", "webhook_next_at"} <= columns
            assert {"name", "pools", "seen_at", "state", "state_reason"} <= {
                c["name"] for c in inspector.get_columns("workers")
            }
            indexes = {i["name"]: i for i in inspector.get_indexes("jobs")}
            assert indexes["ux_jobs_idempotency"]["unique"]
            assert {"ix_jobs_queue", "ix_jobs_lease", "ix_jobs_owner"} <= set(indexes)
            assert "ix_jobs_webhooks" in indexes
            assert "ix_jobs_turn" in indexes and "weight" in columns
            assert {"pool", "owner", "served", "used", "queued", "best_rank"} == {
                c["name"] for c in inspector.get_columns("turns")
            }
            assert {"ix_turns_next", "ix_turns_served"} <= {
                i["name"] for i in inspector.get_indexes("turns")
            }
            if conn.dialect.name == "postgresql":
                where = conn.execute(
                    sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_jobs_queue'")
                ).scalar()
                assert "WHERE" in str(where) and "PENDING" in str(where)
    finally:
        engine.dispose()


def test_a_job_queued_before_the_seed_column_reports_its_seed(fresh_url: str) -> None:
    """Migration 0009 fills the ``seed`` column from the inputs of the jobs already there,
    so their status polls report the seed they run with; a job without one has none."""
    upgrade(fresh_url, "0008")
    engine = sa.create_engine(sqlalchemy_url(fresh_url))
    try:
        with engine.begin() as conn:
            for inputs in ('{"prompt": "a fox", "seed": 4294967295}', '{"prompt": "a fox"}'):
                conn.execute(
                    sa.text(
                        "INSERT INTO jobs (owner, model_id, pool, tier, priority, rank, state, "
                        "inputs, max_attempts, created_at) VALUES ('alice', 'wan22-fast-t2v', "
                        ":pool, 0, 0, :rank, 'PENDING', :inputs, 3, 0)"
                    ),
                    {"pool": POOL, "rank": queue_rank(0, 0), "inputs": inputs},
                )
    finally:
        engine.dispose()
    store = open_store(fresh_url)  # migrates to the head
    try:
        seeded, unseeded = (store.job_status(i, "alice") for i in (1, 2))
        assert seeded is not None and seeded.seed == 2**32 - 1
        assert unseeded is not None and unseeded.seed is None
        later = store.enqueue(dataclasses.replace(new(), inputs={"prompt": "x", "seed": 5}))
        status = store.job_status(later.id, "alice")
        assert status is not None and status.seed == 5  # copied by the INSERT
    finally:
        store.close()


def test_an_up_to_date_database_opens_without_alembic(fresh_url: str) -> None:
    """Every vidq process opens its store at start. When the database already stands at the
    newest revision that costs one query: Alembic, its scripts and SQLAlchemy stay
    unloaded (they cost a `vidq worker` or `vidq token` start about 0.3 CPU-seconds)."""
    open_store(fresh_url).close()  # a fresh database: Alembic builds it
    code = (
        "import sys, json; from vidq.store import open_store; "
        "s = open_store(sys.argv[1]); s.close(); "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} "
        "& {'alembic', 'sqlalchemy'})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, fresh_url], capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_concurrent_migrations_on_a_fresh_database(fresh_url: str, tmp_path: Path) -> None:
    """API replicas and workers all migrate at start: four at once must all succeed."""
    env = vidq_env(tmp_path, database_url=fresh_url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "vidq", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [o[1].decode()[-500:] for o in outs]
    store = open_store(fresh_url, migrate=False)
    try:
        assert store.enqueue(new()).id > 0
    finally:
        store.close()
