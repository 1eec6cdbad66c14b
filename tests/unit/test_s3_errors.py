"""How S3's errors become vidq's (``vidq.blobs.s3._translated``, the one place that says
it), with botocore's own exception types as the client raises them."""

from __future__ import annotations

import boto3.exceptions
import botocore.exceptions
import pytest

from vidq.blobs.s3 import _translated
from vidq.errors import NotFound, StorageFull, StorageUnavailable


def client_error(code: str, status: int = 400) -> botocore.exceptions.ClientError:
    response = {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {
        "HTTPStatusCode": status}}  # fmt: skip
    return botocore.exceptions.ClientError(response, "GetObject")  # type: ignore[arg-type]


def raised(exc: Exception, **kwargs: object) -> Exception | None:
    try:
        with _translated("cannot read object", **kwargs):  # type: ignore[arg-type]
            raise exc
    except Exception as translated:
        return translated
    return None


@pytest.mark.parametrize("code", ["NoSuchKey", "404", "NotFound", "NoSuchBucket"])
def test_a_missing_object_is_not_found_only_where_the_caller_asks(code: str) -> None:
    assert isinstance(raised(client_error(code, 404), missing=True), NotFound)
    assert type(raised(client_error(code, 404))) is StorageUnavailable


def test_allowed_codes_are_no_error_and_refused_codes_are_not_found_naming_the_code() -> None:
    assert (
        raised(client_error("BucketAlreadyOwnedByYou"), allowed={"BucketAlreadyOwnedByYou"}) is None
    )
    refused = raised(client_error("InvalidPart"), refused={"InvalidPart"})
    assert isinstance(refused, NotFound) and "InvalidPart" in str(refused)


@pytest.mark.parametrize(("code", "status"), [("XMinioStorageFull", 400), ("Whatever", 507)])
def test_a_full_store_is_storage_full(code: str, status: int) -> None:
    assert isinstance(raised(client_error(code, status)), StorageFull)


def test_other_errors_are_unavailable_without_the_url() -> None:
    url = "http://s3.internal:8333/b/k?X-Amz-Signature=secret"
    for exc in (
        client_error("AccessDenied", 403),
        botocore.exceptions.EndpointConnectionError(endpoint_url=url),
        boto3.exceptions.S3UploadFailedError("upload failed"),
    ):
        translated = raised(exc)
        assert type(translated) is StorageUnavailable, exc
        assert "secret" not in str(translated) and str(translated).startswith("cannot read object")


def test_vidq_errors_and_other_exceptions_pass_through() -> None:
    assert type(raised(NotFound("x"))) is NotFound
    assert type(raised(OSError(28, "No space"))) is OSError
