"""The baseline of bench/api.py: a bare Starlette JSON endpoint, served like vidq."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

BODY = {
    "status": "IN_QUEUE",
    "queue_position": 4711,
    "statusMessages": {},
    "etaSeconds": 123.4,
    "response_url": "http://127.0.0.1:8000/queue/wan22-fast-t2v/requests/12",
}


async def status(request: Request) -> JSONResponse:
    return JSONResponse(BODY)


async def submit(request: Request) -> JSONResponse:
    await request.json()
    return JSONResponse(BODY)


app = Starlette(routes=[Route("/status", status), Route("/submit", submit, methods=["POST"])])
