"""Downloads: signed file URLs of the local store, and ``/fal/download/{bucket}/{key}``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from vidq.api.context import caller, context, submit_store
from vidq.api.services.results import require_not_expired
from vidq.errors import NotFound, Unauthorized
from vidq.jobs import POSTER_TYPE, PREVIEW_PREFIX, PREVIEW_TYPE, poster_output
from vidq.store.base import SubmitStore, Token

router = APIRouter()


@router.get(
    "/fal/download/{bucket}/{key:path}",
    summary="A signed download URL for one of your outputs",
    tags=["download"],
)
async def fal_download(
    bucket: str,
    key: str,
    request: Request,
    token: Token = Depends(caller),
    store: SubmitStore = Depends(submit_store),
) -> Response:
    ctx = context(request)
    base = ctx.base_url(request)

    def work() -> dict[str, str]:
        job = store.find_by_result_key(key) if bucket == ctx.storage.bucket else None
        if job is None or job.user != token.user:
            raise NotFound("No such file.")
        require_not_expired(job)
        url = ctx.storage.signed_url(key, ctx.settings.storage.download_url_ttl, base)
        return {"url": url, "key": key, "r2_uri": f"r2://{bucket}/{key}"}

    return JSONResponse(await run_in_threadpool(work))


@router.get(
    "/files/{bucket}/{key:path}", summary="Signed download (local storage)", tags=["download"]
)
async def signed_file(
    bucket: str, key: str, request: Request, expires: str = "", signature: str = ""
) -> Response:
    """Serves an object of the local store to whoever holds a valid, unexpired signature."""
    ctx = context(request)
    from vidq.blobs.local import LocalBlobStore

    storage = ctx.storage
    if not isinstance(storage, LocalBlobStore) or bucket != storage.bucket:
        raise NotFound("No such file.")
    if not storage.verify(key, expires, signature):
        raise Unauthorized("Invalid or expired signature.")
    path = storage.open_path(key)
    if key.startswith(PREVIEW_PREFIX):  # a live preview: written over while its job runs
        return FileResponse(path, media_type=PREVIEW_TYPE, headers={"Cache-Control": "no-store"})
    if poster_output(key) is not None:  # a poster frame: never written over
        return FileResponse(path, media_type=POSTER_TYPE, headers={"Cache-Control": "private"})
    return FileResponse(path, media_type="video/mp4", filename=path.name)
