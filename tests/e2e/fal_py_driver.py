"""Drives the real `fal-client` (PyPI) against vidq; run as a subprocess because
fal-client reads FAL_QUEUE_RUN_HOST at import. Prints one JSON object on stdout.

Usage: python fal_py_driver.py SCENARIO   (env: FAL_KEY, FAL_QUEUE_RUN_HOST, SSL_CERT_FILE)
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import fal_client

T2V = "vidq/wan22-fast-t2v"
INPUTS = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def describe(status: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type(status).__name__}
    for name in ("position", "logs", "metrics", "error", "error_type"):
        if hasattr(status, name):
            out[name] = getattr(status, name)
    return out


def http_error(exc: fal_client.client.FalClientHTTPError) -> dict[str, Any]:
    return {
        "status_code": exc.status_code,
        "message": str(exc),
        "error_type": exc.error_type,
        "request_id": exc.response_headers.get("x-fal-request-id"),
    }


def subscribe() -> dict[str, Any]:
    updates: list[dict[str, Any]] = []
    enqueued: list[str] = []
    result = fal_client.subscribe(
        T2V,
        arguments=INPUTS,
        with_logs=True,
        on_enqueue=enqueued.append,
        on_queue_update=lambda s: updates.append(describe(s)),
        interval=0.1,
    )
    return {"result": result, "updates": updates, "request_id": enqueued[0]}


def submit_status_result() -> dict[str, Any]:
    handle = fal_client.submit(T2V, arguments={**INPUTS, "seed": 7})
    first = describe(handle.status())
    seen = [first]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = handle.status(with_logs=True)
        seen.append(describe(status))
        if isinstance(status, fal_client.Completed):
            break
        time.sleep(0.1)
    no_logs = describe(handle.status())
    again = fal_client.status(T2V, handle.request_id, with_logs=True)
    return {
        "request_id": handle.request_id,
        "urls": [handle.response_url, handle.status_url, handle.cancel_url],
        "statuses": seen,
        "completed_without_logs": no_logs,
        "status_by_id": describe(again),
        "result": handle.get(),
        "result_by_id": fal_client.result(T2V, handle.request_id),
    }


def cancel() -> dict[str, Any]:
    busy_inputs = {
        **INPUTS,
        "duration": 2,
        "prompt": "busy",
        "higher_quality_with_more_steps": True,
    }
    busy = fal_client.submit(T2V, arguments=busy_inputs)
    queued = fal_client.submit(T2V, arguments=INPUTS)
    queued_status = describe(queued.status())
    queued.cancel()
    after = describe(queued.status(with_logs=True))
    try:
        queued.get()
        cancelled_result: dict[str, Any] = {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        cancelled_result = http_error(exc)
    busy.get()
    try:
        busy.cancel()
        late: dict[str, Any] = {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        late = http_error(exc)
    return {
        "queued_status": queued_status,
        "after_cancel": after,
        "cancelled_result": cancelled_result,
        "cancel_after_completion": late,
    }


def failing() -> dict[str, Any]:
    updates: list[dict[str, Any]] = []
    try:
        fal_client.subscribe(
            "vidq/wan22-t2v-fp8",
            arguments=INPUTS,
            with_logs=True,
            on_queue_update=lambda s: updates.append(describe(s)),
            interval=0.1,
        )
        error: dict[str, Any] = {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        error = http_error(exc)
    return {"updates": updates, "error": error}


def invalid() -> dict[str, Any]:
    try:
        fal_client.submit(T2V, arguments={"prompt": "x", "width": 100})
        return {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        return {**http_error(exc), "detail": exc.response.json()["detail"]}


SCENARIOS = {f.__name__: f for f in (subscribe, submit_status_result, cancel, failing, invalid)}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
