"""The retention collector against a real SQLite store and local blobs: it deletes only
what it marked expired, so an admin retry landing between its selection and its marking
keeps the job's inputs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vidq.blobs.local import LocalBlobStore
from vidq.jobs import JobState, NewJob, output_key, poster_key, preview_key
from vidq.ops.retention import Collector, RetentionPolicy
from vidq.store import JobStore, open_store
from vidq.store.base import DueBlobs

POOL = "wan22-t2v"
NEW = NewJob(user="alice", model_id="wan22-fast-t2v", pool=POOL, tier=0, priority=0,
             inputs={"prompt": "p"}, max_attempts=3)  # fmt: skip


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[JobStore, LocalBlobStore]]:
    """A SQLite job store and local blobs."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    try:
        yield store, LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    finally:
        store.close()


class RetryWhileCollecting:
    """The store, with an admin retry of ``job_id`` right after the collector selected the
    batch that holds it (the race an operator can win)."""

    def __init__(self, store: JobStore, job_id: int) -> None:
        self.store, self.job_id = store, job_id

    def inputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        due = self.store.inputs_due(ttl_s, limit)
        if any(d.job_id == self.job_id for d in due):
            assert self.store.admin_retry(self.job_id)
        return due

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_the_collector_deletes_only_what_it_marked(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    blobs = LocalBlobStore(tmp_path / "blobs", b"k" * 32)
    try:
        key = "inputs/alice/1/data_uri"
        blobs.put_bytes(key, b"an image", "image/png")
        new = NewJob(user="alice", model_id="wan22-fast-i2v", pool=POOL, tier=0, priority=0,
                     inputs={"prompt": "p", "_blobs": {"data_uri": key}})  # fmt: skip
        job = store.enqueue(new)
        claim = store.claim([POOL], "w", 30)
        assert claim is not None
        assert store.fail(job.id, claim.lease_token, "bad", "engine", retry=False)
        policy = RetentionPolicy(input_ttl=0.0)
        racing: Any = RetryWhileCollecting(store, job.id)
        Collector(racing, blobs, policy, "gc").collect()
        again = store.get(job.id)
        assert again is not None and again.state is JobState.PENDING
        assert again.inputs_expired_at is None
        assert blobs.get_bytes(key) == b"an image"  # the retried job still has its input
    finally:
        store.close()


def test_the_collector_deletes_the_previews_of_attempts_no_longer_running(
    local: tuple[JobStore, LocalBlobStore],
) -> None:
    """A worker killed mid-job leaves its live preview: the collector deletes it once its
    attempt is not running (the next attempt's is kept)."""
    store, blobs = local
    job = store.enqueue(NEW)
    first = store.claim([POOL], "w", 30)
    assert first is not None
    old = preview_key(first.job)
    blobs.put_bytes(old, b"RIFF....WEBP", "image/webp")
    assert store.preview(job.id, first.lease_token, old, 1)
    collector = Collector(store, blobs, RetentionPolicy(), "gc")
    assert collector.collect().previews_deleted == 0  # its attempt is running: kept
    assert blobs.keys("previews/") == [old]
    # the worker dies; its lease is given up and the job runs again
    assert store.fail(job.id, first.lease_token, "lost", "engine", retry=True)
    second = store.claim([POOL], "w", 30)
    assert second is not None and second.job.attempt == 2
    new_key = preview_key(second.job)
    blobs.put_bytes(new_key, b"RIFF....WEBP", "image/webp")
    blobs.put_bytes("previews/junk.webp", b"x", "image/webp")
    assert collector.dry_run().would_delete == sorted([old, "previews/junk.webp"])
    report = collector.collect()
    assert report.previews_deleted == 2
    assert blobs.keys("previews/") == [new_key]


def test_the_collector_deletes_late_uploads_of_attempts_that_lost_a_retried_job(
    local: tuple[JobStore, LocalBlobStore],
) -> None:
    """An attempt that lost its job (its worker paused past its lease) stores its video and
    poster after the winner swept the other attempts' uploads, then its worker is killed
    before it deletes them: the collector does. The result, its poster, and the uploads of
    a job that ran once are kept."""
    store, blobs = local
    once = store.enqueue(NEW)
    job = store.enqueue(NEW)
    first_once = store.claim([POOL], "w", 30)
    first = store.claim([POOL], "w", 30)
    assert first_once is not None and first is not None and first.job.id == job.id
    kept = output_key(first_once.job, "Preview_T2V")
    assert store.complete(once.id, first_once.lease_token, kept, {})
    assert store.fail(job.id, first.lease_token, "lost", "engine", retry=True)
    second = store.claim([POOL], "w", 30)
    assert second is not None and second.job.attempt == 2
    result = output_key(second.job, "Preview_T2V")
    assert store.complete(job.id, second.lease_token, result, {})
    late = output_key(first.job, "Preview_T2V")  # stored after the winner's sweep
    for key in (kept, result, late):
        blobs.put_bytes(key, b"mp4", "video/mp4")
        blobs.put_bytes(poster_key(key), b"jpg", "image/jpeg")
    collector = Collector(store, blobs, RetentionPolicy(), "gc")
    assert collector.dry_run().would_delete == [late, poster_key(late)]
    report = collector.collect()
    assert report.late_uploads_deleted == 2
    assert blobs.keys("outputs/") == sorted([kept, poster_key(kept), result, poster_key(result)])
