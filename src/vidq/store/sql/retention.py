"""The retention collector's queries (``RetentionStore``): its lease, the blobs due,
the marks around their deletion, the purge into the metric rollup, expired uploads."""

from __future__ import annotations

import json

from vidq.jobs import Job, input_blobs, output_blobs
from vidq.store.base import DueBlobs, Upload
from vidq.store.counters import job_samples
from vidq.store.rows import job_from_row, upload_from_row
from vidq.store.sql.core import Queries


class RetentionQueries(Queries):
    """``RetentionStore`` (see ``base.RetentionStore``)."""

    def take_lease(self, name: str, holder: str, lease_s: float) -> bool:
        return (
            self._row(self._sql.take_lease, name=name, holder=holder, lease_s=lease_s) is not None
        )

    def release_lease(self, name: str, holder: str) -> None:
        self._count(self._sql.release_lease, name=name, holder=holder)

    def inputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        due = []
        for row in self._rows(self._sql.inputs_due, ttl=ttl_s, limit=limit):
            keys = input_blobs(json.loads(row["inputs"]))
            due.append(DueBlobs(int(row["id"]), keys, row["inputs_expired_at"] is not None))
        return due

    def expire_inputs(self, job_id: int) -> bool:
        return self._count(self._sql.expire_inputs, id=job_id) == 1

    def inputs_deleted(self, job_id: int) -> None:
        self._count(self._sql.inputs_deleted, id=job_id)

    def outputs_due(self, ttl_s: float, limit: int) -> list[DueBlobs]:
        return [
            DueBlobs(
                int(r["id"]),
                output_blobs(r["result_key"]),
                r["expired_at"] is not None,
            )
            for r in self._rows(self._sql.outputs_due, ttl=ttl_s, limit=limit)
        ]

    def expire_output(self, job_id: int) -> bool:
        return self._count(self._sql.expire_output, id=job_id) == 1

    def output_deleted(self, job_id: int) -> None:
        self._count(self._sql.output_deleted, id=job_id)

    def purge_jobs(self, ttl_s: float, limit: int) -> int:
        bounds = self._rows(self._sql.purge_bound, ttl=ttl_s, limit=limit)
        if not bounds:
            return 0
        upto = float(bounds[-1]["finished_at"])
        with self.driver.transaction() as db:
            counts = db.values(self._sql.purge_counts, {"upto": upto})
            durations = db.values(self._sql.purge_durations, {"upto": upto})
            for (family, label), value in job_samples(counts, durations).items():
                db.count(self._sql.add_rollup, {"family": family, "labels": label, "value": value})
            return db.count(self._sql.purge_jobs, {"upto": upto})

    def running_attempts(self) -> set[tuple[int, int]]:
        return {(int(r["id"]), int(r["attempt"])) for r in self._rows(self._sql.running_attempts)}

    def retried_finished(self, window_s: float, limit: int) -> list[Job]:
        rows = self._rows(self._sql.retried_finished, window_s=window_s, limit=limit)
        return [job_from_row(r) for r in rows]

    def expired_uploads(self, max_age_s: float, limit: int) -> list[Upload]:
        rows = self._rows(self._sql.expired_uploads, max_age_s=max_age_s, limit=limit)
        return [upload_from_row(r) for r in rows]
