"""The ports of the worker loop (``runner.py``): a ``Source`` of claimed attempts, the
``Attempt`` itself, and an optional ``Reaper``.

An ``Attempt`` is one claimed job with its lease: every operation after the claim goes
through it, fenced by the lease token it holds (never optional, never in a side table).
Two implementations run one loop: ``local.py`` over the job store and the blob store, and
``remote.py`` over the API's worker protocol (``/worker/v1``). What only one side can do
stays inside that side: the local attempt sweeps other attempts' uploads, decides a
retried complete by reading the job and deletes an upload that did not win; for a remote
attempt the API does all three (``api/worker/``), so they are not its work at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from vidq.jobs import Ran, WorkerState
from vidq.store.base import Lease, ReapResult


@dataclasses.dataclass(frozen=True, slots=True)
class Assignment:
    """The job as its attempt runs it: no user, no state (a claimed job is RUNNING and
    this attempt's until the attempt ends)."""

    id: int
    model_id: str
    pool: str
    tier: int
    attempt: int  # this attempt's number (1 for the first)
    inputs: Mapping[str, Any]  # the request's options, without the media's blob keys


class Attempt(Protocol):
    """One claimed attempt at a job. Every call is fenced by the attempt's lease: once
    another attempt holds the job (or it ended), the calls answer ``False`` /
    ``Lease.LOST`` and change nothing. ``ServiceUnavailable``: try again (the lease
    decides whether the job is still this attempt's). Each end (complete, fail, release,
    finish_cancel) carries what the attempt ``ran``: the job's cost is recorded with it."""

    @property
    def job(self) -> Assignment:
        """What to run."""

    def download_inputs(self, folder: Path) -> dict[str, str]:
        """Download the job's media inputs into ``folder``: input field -> local path."""

    def heartbeat(self) -> Lease:
        """Extend the lease; ``Lease.CANCEL`` when a cancel was requested (one round trip:
        the loop polls nothing else), ``Lease.LOST`` (falsy) once the lease is lost."""

    def progress(self, done: int, total: int) -> bool:
        """Record progress (advisory); False if the lease is lost."""

    def preview(self, path: Path, step: int) -> bool:
        """Publish the file at ``path`` (an animated WebP, ``engines/previews.py``) as the
        job's live preview at ``step``, over the last one; False if the lease is lost. The
        attempt deletes its preview when it ends."""

    def upload(self, path: Path, name: str) -> None:
        """Store the file at ``path`` as this attempt's output (``name``: the engine's, e.g.
        ``WanVideo2_2_T2V``), under a key unique to the attempt; may be called again after
        it raised."""

    def poster(self, path: Path) -> bool:
        """Store the JPEG at ``path`` as the poster frame of this attempt's upload (under
        ``jobs.poster_key`` of its key, so it goes wherever the upload goes); False if the
        lease is lost. Called after ``upload``; advisory: a job completes without one."""

    def complete(self, meta: dict[str, Any], ran: Ran = Ran()) -> bool:
        """RUNNING -> COMPLETED with the uploaded output and ``meta``. May be called again
        after it raised ``ServiceUnavailable``: a try that committed with its answer lost
        makes the retry a success. False: the lease is lost, or a cancel was requested
        (then ``finish_cancel``); the upload is not kept."""

    def fail(
        self, error: str, error_type: str, *, retry: bool, retry_after_s: float, ran: Ran = Ran()
    ) -> bool:
        """RUNNING -> RETRY (if ``retry`` and attempts remain; not claimed again for
        ``retry_after_s``) or FAILED."""

    def release(self, ran: Ran = Ran()) -> bool:
        """Give the job back without spending an attempt (a shutdown that does not drain)."""

    def finish_cancel(self, ran: Ran = Ran()) -> bool:
        """RUNNING with a cancel request -> CANCELLED; of a cancel and a completion racing
        for one job, exactly one is recorded."""


class Source(Protocol):
    """Where a worker's attempts come from: what comes before a claim."""

    def claim(
        self, worker: str, pools: Sequence[str], engines: Mapping[str, str], lease_s: float
    ) -> Attempt | None:
        """Say that ``worker`` is alive with its pools and their engines (for operators),
        and take the first queued job of these pools, if any, leased for ``lease_s``
        seconds (a remote source's lease is the server's)."""

    def announce(
        self,
        worker: str,
        pools: Sequence[str],
        engines: Mapping[str, str],
        state: WorkerState,
        reason: str | None = None,
    ) -> None:
        """Say that ``worker`` is alive but not claiming, and what it is doing (warming,
        its engine down with ``reason``, draining, stopped), for operators; a claim says ``ready``
        by itself. ``ServiceUnavailable``: the loop goes on (it is advisory)."""

    def wait_for_jobs(self, pools: Sequence[str], timeout: float) -> None:
        """Block until a job may have been queued in these pools, or ``timeout`` passes
        (spurious wake-ups allowed: the loop claims and waits again)."""

    def queue_depths(self) -> dict[str, int]:
        """Queued jobs per pool (a burst worker waits for retries backing off)."""


class Reaper(Protocol):
    """Turns expired leases over (and fails jobs past their deadlines): ``JobStore.reap``.
    A local worker runs it between claims; a remote worker has none (the API runs it)."""

    def reap(self) -> ReapResult:
        """One pass; what it did."""
