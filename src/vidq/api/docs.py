"""The API's documentation pages, ``/docs`` (Swagger UI) and ``/redoc``, served whole by this
server: their scripts and styles are the files the fastapi-offline package ships, under
``/docs/assets/``, so the pages work on an offline or air-gapped machine. A
Content-Security-Policy keeps them on this origin (ReDoc's bundle would otherwise fetch a
logo from its CDN)."""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

ASSETS = "/docs/assets"
_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
# The pages' own inline script (Swagger UI's start-up) and styles; everything else from here.
CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = CSP
    return html


@router.get("/docs")
async def swagger_ui(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return _page(
        get_swagger_ui_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
        )
    )


@router.get("/redoc")
async def redoc(request: Request) -> Response:
    root = request.scope.get("root_path", "")
    return _page(
        get_redoc_html(
            openapi_url=f"{root}{request.app.openapi_url}",
            title=f"{request.app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
    )


@router.get(ASSETS + "/{name}")
async def asset(name: str) -> Response:
    kind = _FILES.get(name)
    if kind is None:
        return Response(status_code=404)
    headers = {"Cache-Control": "public, max-age=86400"}
    return Response(_read(name), media_type=kind, headers=headers)


@functools.cache
def _read(name: str) -> bytes:
    """One of the package's files, read once (megabytes of script)."""
    return resources.files("fastapi_offline").joinpath("static", name).read_bytes()
