"""S3-compatible BlobStore (AWS S3, Cloudflare R2, MinIO, SeaweedFS) with presigned URLs.

Configured by the standard variables botocore reads itself: ``AWS_ENDPOINT_URL`` (unset
for AWS), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``. With a custom
endpoint the client uses path-style addressing (``endpoint/bucket/key``), which every
S3-compatible server accepts; on AWS botocore picks the addressing itself. Checksums are
only sent where S3 requires them, since several compatible servers reject the newer
default CRC headers. The bucket is created on first use if it is missing.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import botocore.exceptions
from boto3.s3.transfer import TransferConfig

from vidq.errors import NotFound, PayloadTooLarge, StorageFull, StorageUnavailable

log = logging.getLogger(__name__)

_MISSING = {"NoSuchKey", "404", "NotFound"}
# Codes (or HTTP statuses) of a store that has no room: quotas and full disks.
_FULL = {"InsufficientStorage", "507", "QuotaExceeded", "XMinioStorageFull", "StorageFull"}
_NO_BUCKET = {"NoSuchBucket"}
_OURS_ALREADY = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
# a multipart completion S3 refuses for its parts (the upload is then dropped)
_PARTS_REFUSED = {"NoSuchUpload", "InvalidPart", "InvalidPartOrder", "EntityTooSmall"}
MAX_PRESIGN_S = 7 * 24 * 3600  # SigV4's limit


class S3BlobStore:
    """Objects are ``s3://<bucket>/<key>``; downloads are presigned GET URLs."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        multipart_threshold: int | None = None,
    ) -> None:
        if not bucket or "/" in bucket:
            raise ValueError(f"invalid bucket name: {bucket!r}")
        self.bucket = bucket
        self.region = region or "us-east-1"
        config = botocore.config.Config(
            region_name=self.region,
            signature_version="s3v4",
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        self._bucket_ready = False
        self._lock = threading.Lock()
        # put_file's files from this size on go up in parts (boto3's default: 8 MiB)
        self._transfer = (
            TransferConfig() if multipart_threshold is None
            else TransferConfig(multipart_threshold=multipart_threshold)
        )  # fmt: skip

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        """``s3://BUCKET``; the endpoint and credentials come from the AWS_* variables."""
        bucket = url.removeprefix("s3://").strip("/")
        return cls(
            bucket,
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL"),
            region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        )

    # -- bucket ----------------------------------------------------------------------
    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        with self._lock:
            if self._bucket_ready:
                return
            try:
                with _translated("cannot access bucket", missing=True):
                    self._client.head_bucket(Bucket=self.bucket)
            except NotFound:
                self._create_bucket()
            self._bucket_ready = True

    def _create_bucket(self) -> None:
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with _translated("cannot create bucket", allowed=_OURS_ALREADY):
            self._client.create_bucket(**kwargs)
            log.info("created bucket %s", self.bucket)

    # -- objects ---------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._ensure_bucket()
        with _translated("cannot write object"):
            self._client.put_object(
                Bucket=self.bucket, Key=key, Body=data, ContentType=content_type
            )

    def put_file(self, key: str, path: Path, content_type: str) -> None:
        """A file below the multipart threshold goes up in one PUT from this thread (a
        typical output: about half the CPU of boto3's transfer manager, which starts its
        threads for every file); a larger one in parallel parts."""
        self._ensure_bucket()
        with _translated("cannot write object"):
            if path.stat().st_size < self._transfer.multipart_threshold:
                with path.open("rb") as body:
                    self._client.put_object(
                        Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
                    )
                return
            self._client.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": content_type},
                Config=self._transfer,
            )  # fmt: skip

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        with _translated("cannot read object", missing=True):
            obj = self._client.get_object(Bucket=self.bucket, Key=key)
            body = obj["Body"]
            try:
                size = int(obj.get("ContentLength") or 0)
                if max_bytes is not None and size > max_bytes:
                    raise PayloadTooLarge(f"object is {size} bytes, over the limit of {max_bytes}")
                data: bytes = body.read()
            finally:
                body.close()
            return data

    def download(self, key: str, path: Path) -> None:
        try:
            with _translated("cannot read object", missing=True):
                obj = self._client.get_object(Bucket=self.bucket, Key=key)
                body = obj["Body"]
                try:
                    with path.open("wb") as fh:
                        for chunk in body.iter_chunks(1 << 20):
                            fh.write(chunk)
                finally:
                    body.close()
        except OSError as exc:  # the local file (a store's error is a VidqError by now)
            raise StorageUnavailable(f"cannot write local file: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        with _translated("cannot delete object", allowed=_MISSING | _NO_BUCKET):
            self._client.delete_object(Bucket=self.bucket, Key=key)

    def exists(self, key: str) -> bool:
        try:
            with _translated("cannot read object", missing=True):
                self._client.head_object(Bucket=self.bucket, Key=key)
        except NotFound:
            return False
        return True

    def signed_url(self, key: str, ttl_s: int, base_url: str) -> str:
        """A presigned GET URL (``base_url`` is unused: the S3 server serves it)."""
        with _translated("cannot sign URL"):
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": key},
                ExpiresIn=max(1, min(int(ttl_s), MAX_PRESIGN_S)),
            )
        return url

    def upload_url(self, key: str, ttl_s: int, content_type: str, sha256: str) -> str:
        """A presigned PUT URL for ``key`` (remote workers upload without credentials);
        the upload must send this ``Content-Type`` and ``x-amz-checksum-sha256`` (the
        base64 of ``sha256``, a hex digest): S3 refuses other bytes, and keeps the
        checksum for ``sha256_of``."""
        self._ensure_bucket()
        params = {
            "Bucket": self.bucket, "Key": key, "ContentType": content_type,
            "ChecksumSHA256": checksum_header(sha256),
        }  # fmt: skip
        with _translated("cannot sign URL"):
            url: str = self._client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=max(1, min(int(ttl_s), MAX_PRESIGN_S))
            )
        return url

    def sha256_of(self, key: str) -> tuple[int, str | None]:
        """The size of ``key`` and the sha256 S3 checked at its upload (hex; None when it
        was uploaded without one, as the parts of a multipart upload are), without
        reading it; NotFound if there is no such object."""
        with _translated("cannot read object", missing=True):
            head = self._client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        checksum = head.get("ChecksumSHA256")
        if not checksum or "-" in str(checksum):  # a multipart composite is not the file's
            return int(head["ContentLength"]), None
        return int(head["ContentLength"]), base64.b64decode(str(checksum)).hex()

    # -- multipart uploads by presigned URLs (remote workers' large outputs) ---------------
    def start_multipart(self, key: str, content_type: str) -> str:
        """Start a multipart upload of ``key``; its upload id."""
        self._ensure_bucket()
        with _translated("cannot start a multipart upload"):
            answer = self._client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType=content_type
            )
        return str(answer["UploadId"])

    def part_url(self, key: str, upload_id: str, number: int, ttl_s: int) -> str:
        """A presigned PUT URL for part ``number`` (1-based); its answer's ETag names it."""
        with _translated("cannot sign URL"):
            url: str = self._client.generate_presigned_url(
                "upload_part",
                Params={
                    "Bucket": self.bucket, "Key": key, "UploadId": upload_id,
                    "PartNumber": number,
                },
                ExpiresIn=max(1, min(int(ttl_s), MAX_PRESIGN_S)),
            )  # fmt: skip
        return url

    def finish_multipart(self, key: str, upload_id: str, etags: list[tuple[int, str]]) -> None:
        """Assemble the parts (number, ETag) into the object; NotFound if the upload id or
        a part is unknown (then the upload is aborted)."""
        parts = [{"PartNumber": n, "ETag": etag} for n, etag in sorted(etags)]
        try:
            with _translated("cannot finish a multipart upload", refused=_PARTS_REFUSED):
                self._client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )  # fmt: skip
        except NotFound:
            self.abort_multipart(key, upload_id)
            raise

    def abort_multipart(self, key: str, upload_id: str) -> None:
        """Drop a multipart upload and its parts (no error if it is gone)."""
        try:
            with _translated("cannot abort a multipart upload"):
                self._client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except StorageUnavailable:  # its parts expire with the bucket's lifecycle rules
            log.warning("could not abort a multipart upload", extra={"key": key})

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def check(self) -> None:
        self._bucket_ready = False  # re-probe: readiness must reflect the server now
        self._ensure_bucket()

    def keys(self, prefix: str) -> list[str]:
        self._ensure_bucket()
        found: list[str] = []
        with _translated("cannot list objects"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                found.extend(str(item["Key"]) for item in page.get("Contents", []))
        return sorted(found)

    def close(self) -> None:
        self._client.close()


def _code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextlib.contextmanager
def _translated(
    what: str,
    *,
    missing: bool = False,
    refused: frozenset[str] | set[str] = frozenset(),
    allowed: frozenset[str] | set[str] = frozenset(),
) -> Iterator[None]:
    """S3's errors as vidq's, in one place: a missing object or bucket is NotFound (with
    ``missing``), a code in ``refused`` is NotFound naming it, a code in ``allowed`` is no error,
    a full store is StorageFull and anything else StorageUnavailable (``what`` says what
    failed; no URL is kept, since a presigned or endpoint URL may hold secrets)."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = _code(exc)
        if code in allowed:
            return
        if missing and code in _MISSING | _NO_BUCKET:
            raise NotFound("No such object.") from exc
        if code in refused:
            raise NotFound(f"{what}: S3 refused it ({code})") from exc
        raise _unavailable(exc, what) from exc
    except botocore.exceptions.BotoCoreError as exc:
        raise _unavailable(exc, what) from exc
    except boto3.exceptions.S3UploadFailedError as exc:  # the transfer manager's wrapper
        raise StorageUnavailable(f"{what}: {exc}") from exc


def _unavailable(exc: Exception, what: str) -> StorageUnavailable:
    """StorageUnavailable without URLs (a presigned or endpoint URL may hold secrets)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        reason = _code(exc) or "error"
        status = str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if reason in _FULL or status in _FULL:
            return StorageFull(f"{what}: the object storage is full (S3 {reason})")
    else:
        reason = type(exc).__name__
    return StorageUnavailable(f"{what}: S3 {reason}")


def checksum_header(sha256: str) -> str:
    """The ``x-amz-checksum-sha256`` value of a hex sha256 digest (its base64)."""
    return base64.b64encode(bytes.fromhex(sha256)).decode()
