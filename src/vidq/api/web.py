"""The web app: ``/`` and its static files under ``/app/``, shipped as package data in
``src/vidq/web/`` (plain HTML, CSS and ES modules; no build step, nothing fetched from
elsewhere). The page talks to the public API with the user's token, like the SDK does.

Every answer carries a Content-Security-Policy that allows scripts and styles from this
origin only (no inline scripts), and an ETag: browsers revalidate (``no-cache``) and get
304s, so an upgraded package is picked up at once.
"""

from __future__ import annotations

import hashlib
import mimetypes
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

# Media (videos, and the live previews of running jobs) comes from this origin (local
# storage) or an S3 server's presigned URLs.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data: blob: https: http:; "
    "media-src 'self' blob: data: https: http:; connect-src 'self'; form-action 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


class WebFiles:
    """The web app's files, read once from the package: name -> (bytes, type, etag)."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        root = resources.files("vidq").joinpath("web")
        self._walk(root, "")

    def _walk(self, folder: resources.abc.Traversable, prefix: str) -> None:
        for entry in folder.iterdir():
            name = prefix + entry.name
            if entry.is_dir():
                self._walk(entry, name + "/")
                continue
            suffix = "." + name.rsplit(".", 1)[-1]
            kind = _TYPES.get(suffix) or mimetypes.guess_type(name)[0]
            if kind is None:
                continue  # not something the app serves
            data = entry.read_bytes()
            charset = "; charset=utf-8" if kind.startswith("text/") else ""
            etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
            self.files[name] = (data, kind + charset, etag)

    def response(self, name: str, request: Request) -> Response:
        found = self.files.get(name)
        if found is None:
            return JSONResponse({"detail": "Not found."}, status_code=404)
        data, kind, etag = found
        headers = {
            "Content-Security-Policy": CSP,
            "Cache-Control": "no-cache",
            "ETag": etag,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY",
        }
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(data, media_type=kind, headers=headers)


def router(files: WebFiles) -> APIRouter:
    """``GET /`` (the page) and ``GET /app/{name}`` (its scripts and styles)."""
    web = APIRouter(include_in_schema=False)

    @web.get("/")
    async def index(request: Request) -> Response:
        return files.response("index.html", request)

    @web.get("/app/{name:path}")
    async def asset(name: str, request: Request) -> Response:
        return files.response(name, request)

    return web
