"""An attempt's output on its way in over the worker protocol: which keys are the
attempt's own, where it uploads (a signed ``PUT /worker/v1/uploads/...`` of this server on
local storage, signed by the storage over the attempt's lease; presigned PUTs of the S3
store, in parts of ``PART_BYTES`` above that), the multipart assembly, the check of the
object that a complete reports, and the uploads of attempts that are over.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from vidq.blobs.base import BlobStore
from vidq.blobs.local import LocalBlobStore
from vidq.blobs.outputs import size_and_sha256
from vidq.errors import InvalidInput, NotFound, VidqError
from vidq.jobs import Job, JobState, output_attempt, output_prefix, poster_key
from vidq.worker_protocol import (
    MAX_PARTS,
    PREFIX,
    CompleteBody,
    PartTarget,
    UploadBody,
    UploadTarget,
)

log = logging.getLogger(__name__)

URL_TTL_S = 900  # input download and output upload URLs
OUTPUT_TYPE = "video/mp4"
PART_BYTES = 64 * 1024 * 1024  # S3: larger outputs are uploaded in parts of this size


def own_key(job: Job, key: str) -> int:
    """The attempt number of ``key``, which must be the output key of ``job``'s attempt."""
    attempt = output_attempt(job, key)
    if attempt is None or attempt != job.attempt:
        raise InvalidInput(
            "key",
            f"not an output key of this attempt (expected {output_prefix(job)}<name>_"
            f"{job.attempt:05d}.mp4)",
        )
    return attempt


def upload_target(storage: BlobStore, job: Job, body: UploadBody, base: str) -> UploadTarget:
    """Where the attempt uploads its output: a signed PUT of this server (local storage),
    a presigned PUT of the S3 store, or presigned part URLs above ``PART_BYTES``."""
    if isinstance(storage, LocalBlobStore):
        expires = int(time.time()) + URL_TTL_S
        query = urlencode({
            "size": body.size, "sha256": body.sha256, "expires": expires,
            "signature": signature(storage, body.lease_token, job.id, body.key,
                                   body.size, body.sha256, expires),
        })  # fmt: skip
        url = f"{base}{PREFIX}/uploads/{job.id}/{quote(body.key)}?{query}"
        return UploadTarget(method="PUT", url=url, headers={"Content-Type": OUTPUT_TYPE})
    from vidq.blobs.s3 import S3BlobStore, checksum_header

    if not isinstance(storage, S3BlobStore):
        raise VidqError("this storage offers no upload URLs")
    if body.size <= PART_BYTES:
        return UploadTarget(
            method="PUT",
            url=storage.upload_url(body.key, URL_TTL_S, OUTPUT_TYPE, body.sha256),
            headers={
                "Content-Type": OUTPUT_TYPE,
                "x-amz-checksum-sha256": checksum_header(body.sha256),
            },
        )
    count = -(-body.size // PART_BYTES)
    if count > MAX_PARTS:
        raise InvalidInput("size", f"over {MAX_PARTS} parts of {PART_BYTES} bytes")
    upload_id = storage.start_multipart(body.key, OUTPUT_TYPE)
    parts = [
        PartTarget(
            number=n,
            url=storage.part_url(body.key, upload_id, n, URL_TTL_S),
            size=min(PART_BYTES, body.size - (n - 1) * PART_BYTES),
        )
        for n in range(1, count + 1)
    ]
    return UploadTarget(method="PUT", upload_id=upload_id, parts=parts)


def signature(
    storage: LocalBlobStore,
    lease_token: str,
    job_id: int,
    key: str,
    size: int,
    sha: str,
    exp: int,
) -> str:
    """The storage's signature over the attempt's lease and what the URL allows: once the
    attempt has lost the job (a new lease token, or none), its URLs no longer verify, and
    a worker, which holds no storage secret, cannot make one."""
    parts = ("worker-upload", lease_token, str(job_id), key, str(size), sha, str(exp))
    return storage.sign(*parts)


def assemble(storage: BlobStore, body: CompleteBody, upload_id: str) -> None:
    """Finish a multipart upload (S3), unless an earlier try of this complete did."""
    from vidq.blobs.s3 import S3BlobStore

    if not isinstance(storage, S3BlobStore) or not body.parts:
        raise InvalidInput("upload_id", "no multipart upload to finish here")
    if storage.exists(body.key):
        return
    try:
        storage.finish_multipart(body.key, upload_id, [(p.number, p.etag) for p in body.parts])
    except NotFound as exc:
        raise InvalidInput("upload_id", exc.message) from None


def check_object(storage: BlobStore, body: CompleteBody) -> None:
    """422 unless the object exists with the size and sha256 the worker reports. On S3 the
    checksum S3 verified at the upload answers without reading the object; an object
    that has none (the parts of a multipart upload) is read back once and hashed."""
    from vidq.blobs.s3 import S3BlobStore

    if isinstance(storage, S3BlobStore):
        try:
            size, stored = storage.sha256_of(body.key)
        except NotFound:
            raise InvalidInput("key", "no object under this key") from None
        if size != body.size:
            raise InvalidInput("size", f"the object has {size} bytes")
        if stored is not None:
            if stored != body.sha256:
                raise InvalidInput("sha256", "the object has another sha256")
            return
    fd, name = tempfile.mkstemp(prefix="vidq-check-")
    os.close(fd)
    try:
        try:
            storage.download(body.key, Path(name))
        except NotFound:
            raise InvalidInput("key", "no object under this key") from None
        size, sha256 = size_and_sha256(Path(name))
    finally:
        os.unlink(name)
    if size != body.size:
        raise InvalidInput("size", f"the object has {size} bytes")
    if sha256 != body.sha256:
        raise InvalidInput("sha256", "the object has another sha256")


def drop_stale_upload(storage: BlobStore, job: Job, key: str) -> None:
    """Delete what a complete that lost its lease names, when it is the upload of an
    attempt that is over: an earlier attempt's output key, and not the job's result. The
    running attempt's upload and the result are never touched, whoever names them."""
    attempt = output_attempt(job, key)
    current = job.attempt if job.state is JobState.RUNNING else job.attempt + 1
    if attempt is not None and attempt < current and key != job.result_key:
        delete_quietly(storage, key)
        delete_quietly(storage, poster_key(key))


def delete_quietly(storage: BlobStore, key: str) -> None:
    """Delete a refused upload; a failure is logged."""
    try:
        storage.delete(key)
    except VidqError:
        log.warning("could not delete a refused upload", extra={"key": key})
