"""File uploads the way fal's clients make them, stored in vidq's blob store under the
uploader (``uploads/<user>/<id>/<name>``) and recorded in the job store (owner, time,
requested expiry) so that retention can delete them.

The routes, as the clients' sources call them (``fal_client`` 1.x: ``REST_URL`` and
``CDN_URL``; ``@fal-ai/client``: its REST URL, through ``requestMiddleware``), all under
``{base}/fal``:

- ``POST /fal/storage/auth/token?storage_type=fal-cdn-v3`` (API token): a short-lived
  upload token and ``base_url``; then ``POST /fal/files/upload`` (raw body,
  ``Content-Type``, ``X-Fal-File-Name``) answers ``access_url``; large files:
  ``POST /fal/files/upload/multipart``, ``PUT {access_url}/multipart/{id}/{n}`` (answers an
  ``ETag``), ``POST {access_url}/multipart/{id}/complete``;
- ``POST /fal/storage/upload/initiate`` (API token, JSON ``content_type``, ``file_name``):
  a signed ``upload_url`` to ``PUT`` the bytes to (no credentials: the signature is the
  permission) and the ``file_url``; ``initiate-multipart``: the same with
  ``PUT {upload_url}/{n}`` and ``POST {upload_url}/complete``;
- ``GET /fal/files/{id}/{name}``: the file, to its uploader only (404 to anyone else).

An upload counts against ``VIDQ_MAX_INPUT_BYTES`` (413 above, nothing kept); its expiry
is ``X-Fal-Object-Lifecycle-Preference`` / ``X-Fal-Object-Lifecycle``'s
``expiration_duration_seconds`` when given. A request input naming the ``access_url`` is
read from storage (``api/services/uploads.py``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from vidq.api.auth import parse_authorization
from vidq.api.context import AppContext, caller, context, token_store, upload_store
from vidq.api.parsing.headers import upload_expiry
from vidq.api.services import uploads
from vidq.errors import (
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    VidqError,
)
from vidq.jobs import user_folder
from vidq.store.base import Token, TokenStore, Upload, UploadStore

router = APIRouter(tags=["fal-compatible uploads"])

TOKEN_PREFIX = "vqu_"  # upload tokens, told apart from API tokens (vq_...)
TOKEN_TTL_S = 3600
UPLOAD_URL_TTL_S = 3600
MAX_PARTS = 10_000
_NAME = re.compile(r"[^A-Za-z0-9._-]")


def _secret(ctx: AppContext) -> bytes:
    from vidq.blobs import load_secret

    key = ctx.settings.storage.secret_key
    return load_secret(ctx.settings.data_dir, key.get_secret_value() if key else None)


def _sign(ctx: AppContext, *parts: str) -> str:
    message = "\0".join(("vidq-upload", *parts)).encode()
    return hmac.new(_secret(ctx), message, hashlib.sha256).hexdigest()


def _iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


def upload_token(ctx: AppContext, token: Token, expires: int) -> str:
    """A token that lets the user of the API ``token`` upload until ``expires`` (and
    nothing else), for as long as ``token`` is not revoked."""
    name = base64.urlsafe_b64encode(token.user.encode()).decode().rstrip("=")
    parts = (str(token.id), str(expires))
    return f"{TOKEN_PREFIX}{name}.{'.'.join(parts)}.{_sign(ctx, 'token', token.user, *parts)}"


def _token_user(ctx: AppContext, value: str) -> tuple[str, int] | None:
    """The user and the API token id of a valid, unexpired upload token."""
    try:
        name, token_id, expires, signature = value.removeprefix(TOKEN_PREFIX).split(".")
        user = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
    except ValueError:
        return None
    if not token_id.isdigit() or not expires.isdigit() or int(expires) < time.time():
        return None
    if not hmac.compare_digest(signature, _sign(ctx, "token", user, token_id, expires)):
        return None
    return user, int(token_id)


async def uploader(request: Request, tokens: TokenStore = Depends(token_store)) -> str:
    """The user an upload is for: an upload token's, while the API token it came from is
    not revoked; else an API token's (401)."""
    value = parse_authorization(request.headers.get("authorization"))
    if value.startswith(TOKEN_PREFIX):
        found = _token_user(context(request), value)
        if found is not None:
            user, token_id = found
            api = await run_in_threadpool(tokens.get_token, token_id)
            if api is not None and not api.revoked and api.user == user:
                return user
        raise Unauthorized("Invalid or expired upload token.")
    token: Token = await caller(request)
    return token.user


def _file_name(value: str | None, content_type: str) -> str:
    name = _NAME.sub("_", (value or "").rsplit("/", 1)[-1])[:100].strip("._")
    if name:
        return name
    subtype = _NAME.sub("", content_type.split("/")[-1].split(";")[0])[:10] or "bin"
    return f"upload.{subtype}"


def _expires_in(request: Request) -> float | None:
    """The uploader's expiry, in seconds, never past the operator's ``VIDQ_UPLOAD_TTL``
    (None: that TTL)."""
    return upload_expiry(request.headers, context(request).settings.retention.upload_ttl)


def _check_size(ctx: AppContext, size: int) -> None:
    limit = ctx.settings.limits.max_input_bytes
    if size > limit:
        raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")


def _new(
    ctx: AppContext, store: UploadStore, user: str, content_type: str, name: str,
    expires: float | None,
) -> Upload:  # fmt: skip
    """Record a new upload of ``user``: 429 when they keep ``max_uploads_per_user``."""
    upload_id = uuid.uuid4().hex
    key = f"uploads/{user_folder(user)}/{upload_id}/{name}"
    most = ctx.settings.limits.max_uploads_per_user
    upload = store.create_upload(
        upload_id, user, key, content_type, name, expires, max_uploads=most
    )
    if upload is None:
        raise RateLimited(
            f"max_uploads_per_user: you keep {most} uploads already; they expire after "
            f"{ctx.settings.retention.upload_ttl:g} s at most",
            limit="max_uploads_per_user", value=most, retry_after=60,
        )  # fmt: skip
    return upload


def _save(ctx: AppContext, store: UploadStore, upload: Upload, data: bytes) -> None:
    """The bytes of a recorded upload; over a limit (or a failure) forgets it."""
    try:
        _check_size(ctx, len(data))
        ctx.storage.put_bytes(upload.key, data, upload.content_type)
        most = ctx.settings.limits.max_upload_bytes_per_user
        if not store.upload_stored(upload.id, len(data), max_bytes=most):
            raise _over_bytes(ctx)
    except BaseException:
        _forget(ctx, store, upload)
        raise


def _over_bytes(ctx: AppContext) -> RateLimited:
    most = ctx.settings.limits.max_upload_bytes_per_user
    return RateLimited(
        f"max_upload_bytes_per_user: your uploads would hold more than {most} bytes; "
        f"they expire after {ctx.settings.retention.upload_ttl:g} s at most",
        limit="max_upload_bytes_per_user", value=most, retry_after=60,
    )  # fmt: skip


def _forget(ctx: AppContext, store: UploadStore, upload: Upload) -> None:
    try:
        ctx.storage.delete(upload.key)
        store.delete_upload(upload.id)
    except VidqError:
        pass  # retention deletes what is left


def _file(base: str, upload: Upload) -> dict[str, Any]:
    return {
        "access_url": uploads.file_url(base, upload.id, upload.file_name),
        "content_type": upload.content_type,
        "file_name": upload.file_name,
        "file_size": upload.size,
    }


def _content_type(request: Request) -> str:
    value = (request.headers.get("content-type") or "application/octet-stream").strip()
    return value[:200]


# --- fal-cdn-v3: token, then a direct upload -------------------------------------------------
@router.post("/fal/storage/auth/token", summary="An upload token (fal's storage_type=fal-cdn-v3)")
async def auth_token(request: Request, token: Token = Depends(caller)) -> Response:
    ctx = context(request)
    expires = int(time.time()) + TOKEN_TTL_S
    return JSONResponse(
        {
            "token": upload_token(ctx, token, expires),
            "token_type": "Bearer",
            "base_url": f"{ctx.base_url(request)}/fal",
            "expires_at": _iso(expires),
        }
    )


@router.post("/fal/files/upload", summary="Upload a file (raw body); answers its access_url")
async def upload_file(
    request: Request,
    user: str = Depends(uploader),
    store: UploadStore = Depends(upload_store),
) -> Response:
    ctx = context(request)
    _check_size(ctx, int(request.headers.get("content-length") or 0))
    data = await request.body()
    content_type = _content_type(request)
    name = _file_name(request.headers.get("x-fal-file-name"), content_type)
    expires = _expires_in(request)

    def work() -> Upload:
        _check_size(ctx, len(data))
        upload = _new(ctx, store, user, content_type, name, expires)
        _save(ctx, store, upload, data)
        return store.get_upload(upload.id, user) or upload

    upload = await run_in_threadpool(work)
    return JSONResponse(_file(ctx.base_url(request), upload))


@router.post("/fal/files/upload/multipart", summary="Start a multipart upload")
async def multipart_start(
    request: Request,
    user: str = Depends(uploader),
    store: UploadStore = Depends(upload_store),
) -> Response:
    ctx = context(request)
    content_type = _content_type(request)
    name = _file_name(request.headers.get("x-fal-file-name"), content_type)
    expires = _expires_in(request)
    upload = await run_in_threadpool(_new, ctx, store, user, content_type, name, expires)
    url = uploads.file_url(ctx.base_url(request), upload.id, upload.file_name)
    return JSONResponse({"access_url": url, "uploadId": upload.id})


def _pending(store: UploadStore, upload_id: str, user: str) -> Upload:
    upload = store.get_upload(upload_id, user)
    if upload is None or upload.size is not None:
        raise NotFound("No such upload in progress.")
    return upload


def _parts_prefix(upload: Upload) -> str:
    return f"{upload.key}.parts/"


def _part_key(upload: Upload, number: int) -> str:
    return f"{_parts_prefix(upload)}{number:05d}"


def _put_part(ctx: AppContext, store: UploadStore, upload: Upload, number: int, data: bytes) -> str:
    """Store one part, counted first: the parts of one upload stay within the single-file
    limit (413), and everything its uploader holds within theirs (429)."""
    if not 1 <= number <= MAX_PARTS:
        raise InvalidInput("part_number", f"must be 1..{MAX_PARTS}")
    limits = ctx.settings.limits
    _check_size(ctx, upload.received + len(data))
    if not store.upload_received(
        upload.id, len(data), max_one=limits.max_input_bytes,
        max_bytes=limits.max_upload_bytes_per_user,
    ):  # fmt: skip
        now = store.get_upload(upload.id)
        if now is not None and now.received + len(data) > limits.max_input_bytes:
            _check_size(ctx, now.received + len(data))
        raise _over_bytes(ctx)
    ctx.storage.put_bytes(_part_key(upload, number), data, "application/octet-stream")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Part(BaseModel):
    """One uploaded part of a multipart upload, as both fal clients name it."""

    model_config = ConfigDict(extra="ignore")

    partNumber: int = Field(ge=1, le=MAX_PARTS, strict=True)  # fal's name
    etag: str = Field(default="", max_length=200)


class CompleteBody(BaseModel):
    """The parts that make the file, in any order (each number once)."""

    model_config = ConfigDict(extra="ignore")

    parts: list[Part] = Field(min_length=1, max_length=MAX_PARTS)


def _part_numbers(raw: Any) -> list[int]:
    """The part numbers a complete names, checked like every other body (422 naming the
    field) before anything is read or deleted."""
    try:
        body = CompleteBody.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_input=False)]
        raise RequestValidationError(errors) from None
    numbers = sorted(p.partNumber for p in body.parts)
    if len(set(numbers)) != len(numbers):
        raise InvalidInput("parts", "a part number is listed twice")
    return numbers


def _complete(ctx: AppContext, store: UploadStore, upload: Upload, numbers: list[int]) -> None:
    """Join the named parts into the upload. The work is bounded by the parts stored
    (listed by their prefix), never by the numbers a body names; every stored part is
    deleted once the upload is joined or refused for its size."""
    stored = {int(k.rsplit("/", 1)[1]): k for k in ctx.storage.keys(_parts_prefix(upload))}
    missing = [n for n in numbers if n not in stored]
    if missing:
        raise InvalidInput("parts", f"part {missing[0]} was not uploaded")
    limit = ctx.settings.limits.max_input_bytes
    chunks: list[bytes] = []
    try:
        for number in numbers:
            chunks.append(ctx.storage.get_bytes(stored[number], max_bytes=limit))
            if sum(map(len, chunks)) > limit:
                raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes")
    except NotFound:
        raise InvalidInput("parts", "a part was not uploaded") from None
    except PayloadTooLarge:
        _forget(ctx, store, upload)
        raise PayloadTooLarge(f"the upload is over the limit of {limit} bytes") from None
    finally:
        for key in stored.values():
            try:
                ctx.storage.delete(key)
            except VidqError:
                pass
    _save(ctx, store, upload, b"".join(chunks))


async def _part(
    ctx: AppContext, store: UploadStore, upload: Callable[[], Upload], number: int,
    request: Request,
) -> Response:  # fmt: skip
    """Store one part of a multipart upload (``upload`` finds it, in the request thread)
    and answer its ETag, as both clients expect."""
    data = await request.body()
    etag = await run_in_threadpool(lambda: _put_part(ctx, store, upload(), number, data))
    return JSONResponse({"partNumber": number, "etag": etag}, headers={"ETag": f'"{etag}"'})


@router.put("/fal/files/{upload_id}/{name}/multipart/{upload_id2}/{number}", summary="A part")
async def multipart_part(
    upload_id: str, name: str, upload_id2: str, number: int, request: Request,
    user: str = Depends(uploader), store: UploadStore = Depends(upload_store),
) -> Response:  # fmt: skip
    ctx = context(request)
    return await _part(ctx, store, lambda: _pending(store, upload_id2, user), number, request)


@router.post("/fal/files/{upload_id}/{name}/multipart/{upload_id2}/complete", summary="Finish")
async def multipart_complete(
    upload_id: str, name: str, upload_id2: str, request: Request,
    user: str = Depends(uploader), store: UploadStore = Depends(upload_store),
) -> Response:  # fmt: skip
    ctx = context(request)
    numbers = _part_numbers(await _json(request))

    def work() -> None:
        _complete(ctx, store, _pending(store, upload_id2, user), numbers)

    await run_in_threadpool(work)
    return JSONResponse({"access_url": uploads.file_url(ctx.base_url(request), upload_id, name)})


# --- storage/upload/initiate: a signed URL to PUT to ----------------------------------------
async def _initiate(request: Request, token: Token, store: UploadStore, suffix: str) -> Response:
    ctx = context(request)
    body = await _json(request) if await request.body() else {}
    body = body if isinstance(body, dict) else {}
    content_type = str(body.get("content_type") or "application/octet-stream")[:200]
    name = _file_name(str(body.get("file_name") or ""), content_type)
    expires_in = _expires_in(request)
    upload = await run_in_threadpool(_new, ctx, store, token.user, content_type, name, expires_in)
    base = ctx.base_url(request)
    expires = str(int(time.time()) + UPLOAD_URL_TTL_S)
    signature = _sign(ctx, "put", upload.id, expires)
    url = f"{base}/fal/storage/upload/{upload.id}{suffix}?expires={expires}&signature={signature}"
    return JSONResponse(
        {"upload_url": url, "file_url": uploads.file_url(base, upload.id, upload.file_name)}
    )


@router.post("/fal/storage/upload/initiate", summary="Start an upload to a signed URL")
async def initiate(
    request: Request,
    token: Token = Depends(caller),
    store: UploadStore = Depends(upload_store),
) -> Response:
    return await _initiate(request, token, store, "")


@router.post("/fal/storage/upload/initiate-multipart", summary="Start a multipart upload")
async def initiate_multipart(
    request: Request,
    token: Token = Depends(caller),
    store: UploadStore = Depends(upload_store),
) -> Response:
    return await _initiate(request, token, store, "/multipart")


def _signed(ctx: AppContext, store: UploadStore, upload_id: str, request: Request) -> Upload:
    """The pending upload a signed upload URL is for (its signature is the permission)."""
    expires = request.query_params.get("expires", "")
    signature = request.query_params.get("signature", "")
    if not expires.isdigit() or int(expires) < time.time():
        raise Unauthorized("Invalid or expired upload URL.")
    if not hmac.compare_digest(signature, _sign(ctx, "put", upload_id, expires)):
        raise Unauthorized("Invalid or expired upload URL.")
    upload = store.get_upload(upload_id)
    if upload is None or upload.size is not None:
        raise NotFound("No such upload in progress.")
    return upload


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise InvalidInput("", "the body must be JSON", kind="json_invalid", loc=[]) from None


@router.put("/fal/storage/upload/{upload_id}", summary="The bytes of an initiated upload")
async def put_signed(
    upload_id: str, request: Request, store: UploadStore = Depends(upload_store)
) -> Response:
    ctx = context(request)
    _check_size(ctx, int(request.headers.get("content-length") or 0))
    data = await request.body()

    def work() -> None:
        _save(ctx, store, _signed(ctx, store, upload_id, request), data)

    await run_in_threadpool(work)
    return Response(status_code=200)


@router.put("/fal/storage/upload/{upload_id}/multipart/{number}", summary="A part (signed)")
async def put_signed_part(
    upload_id: str, number: int, request: Request, store: UploadStore = Depends(upload_store)
) -> Response:
    ctx = context(request)
    return await _part(ctx, store, lambda: _signed(ctx, store, upload_id, request), number, request)


@router.post("/fal/storage/upload/{upload_id}/multipart/complete", summary="Finish (signed)")
async def complete_signed(
    upload_id: str, request: Request, store: UploadStore = Depends(upload_store)
) -> Response:
    ctx = context(request)
    numbers = _part_numbers(await _json(request))

    def work() -> None:
        _complete(ctx, store, _signed(ctx, store, upload_id, request), numbers)

    await run_in_threadpool(work)
    return Response(status_code=200)


# --- reading an upload back -------------------------------------------------------------------
@router.get("/fal/files/{upload_id}/{name}", summary="An upload, to its uploader")
async def read_file(
    upload_id: str,
    name: str,
    request: Request,
    token: Token = Depends(caller),
    store: UploadStore = Depends(upload_store),
) -> Response:
    ctx = context(request)

    def work() -> tuple[bytes, str]:
        upload = store.get_upload(upload_id, token.user)
        if upload is None or upload.size is None or upload.file_name != name:
            raise NotFound("No such file.")
        return ctx.storage.get_bytes(upload.key), upload.content_type

    data, content_type = await run_in_threadpool(work)
    return Response(data, media_type=_served_type(content_type), headers=_SERVED_HEADERS)


# An upload is served with the type its uploader claimed only when that is media a browser
# cannot run (no text/html, no SVG), else as bytes to save; never sniffed, never a page.
_MEDIA_TYPE = re.compile(r"(image/(png|jpeg|webp|gif)|audio/[\w.+-]+|video/[\w.+-]+)")
_SERVED_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}


def _served_type(claimed: str) -> str:
    kind = claimed.split(";")[0].strip().lower()
    return kind if _MEDIA_TYPE.fullmatch(kind) else "application/octet-stream"
