"""Drives the real `fal-client` (PyPI) against vidq; run as a subprocess because
fal-client reads FAL_QUEUE_RUN_HOST at import. Prints one JSON object on stdout.

Usage: python fal_py_driver.py SCENARIO   (env: FAL_KEY, FAL_QUEUE_RUN_HOST, FAL_RUN_HOST,
SSL_CERT_FILE, VIDQ_URL). fal-client's upload hosts are module constants, not variables:
they are set as docs/clients.md shows.
"""

from __future__ import annotations

import base64
import io
import json
import os
import sys
import time
import wave
from typing import Any

import fal_client
import fal_client.client
from PIL import Image

fal_client.client.REST_URL = os.environ["VIDQ_URL"] + "/fal"
fal_client.client.CDN_URL = os.environ["VIDQ_URL"] + "/fal"

T2V = "vidq/wan22-fast-t2v"
WAN = "fal-ai/wan/v2.2-a14b"
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


def _wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0" * int(16000 * seconds))
    return buffer.getvalue()


def _data_uri(data: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(data).decode()}"


def failing() -> dict[str, Any]:
    """fal's speech-to-video endpoint id, with a prompt the server's preview engine fails
    (VIDQ_PREVIEW_FAIL_PROMPT)."""
    updates: list[dict[str, Any]] = []
    arguments = {
        "prompt": "sings [fail]",
        "image_url": _data_uri(_png((64, 64), "white"), "image/png"),
        "audio_url": _data_uri(_wav(1.0), "audio/wav"),
        "num_frames": 40,
        "resolution": "480p",
    }
    try:
        fal_client.subscribe(
            f"{WAN}/speech-to-video",
            arguments=arguments,
            with_logs=True,
            on_queue_update=lambda s: updates.append(describe(s)),
            interval=0.1,
        )
        error: dict[str, Any] = {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        error = http_error(exc)
    return {"updates": updates, "error": error}


def _refused(app: str, arguments: dict[str, Any]) -> dict[str, Any]:
    try:
        fal_client.submit(app, arguments=arguments)
        return {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        return {**http_error(exc), "detail": exc.response.json()["detail"]}


def invalid() -> dict[str, Any]:
    i2v = {"prompt": "x", "image_url": "data:,", "aspect_ratio": "4:3"}
    return {
        "width_100": _refused(T2V, {"prompt": "x", "width": 100}),
        "width_321": _refused(T2V, {"prompt": "x", "width": 321}),
        "frames_16": _refused(f"{WAN}/text-to-video", {"prompt": "x", "num_frames": 16}),
        "frames_162": _refused(f"{WAN}/text-to-video", {"prompt": "x", "num_frames": 162}),
        "resolution": _refused(f"{WAN}/text-to-video/turbo", {"prompt": "x", "resolution": "4k"}),
        "aspect": _refused(f"{WAN}/image-to-video", i2v),
        "native_on_alias": _refused(f"{WAN}/text-to-video", {"prompt": "x", "width": 128}),
    }  # fmt: skip


def _png(size: tuple[int, int], color: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def uploads_and_aliases() -> dict[str, Any]:
    """Uploads by each of fal-client's paths, then fal's endpoint ids with fal's fields on
    the uploaded URLs (and ``run``)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "first.png")
        with open(path, "wb") as fh:
            fh.write(_png((320, 180), "navy"))
        by_file = fal_client.upload_file(path)
    by_bytes = fal_client.upload(_png((180, 320), "olive"), "image/png")
    by_image = fal_client.upload_image(Image.new("RGB", (200, 200), "teal"))
    by_initiate = fal_client.upload(_png((64, 64), "red"), "image/png", repository="fal")
    i2v = fal_client.subscribe(
        f"{WAN}/image-to-video",
        arguments={"prompt": "it moves", "image_url": by_file, "end_image_url": by_initiate,
                   "resolution": "480p", "num_frames": 17, "frames_per_second": 24,
                   "num_inference_steps": 30, "seed": 11},
    )  # fmt: skip
    turbo = fal_client.subscribe(
        f"{WAN}/image-to-video/turbo",
        arguments={"prompt": "tall", "image_url": by_bytes, "resolution": "480p",
                   "aspect_ratio": "1:1", "enable_safety_checker": True},
    )  # fmt: skip
    t2v = fal_client.run(
        f"{WAN}/text-to-video",
        arguments={"prompt": "a tower", "resolution": "480p", "aspect_ratio": "9:16",
                   "num_frames": 17, "negative_prompt": "blur"},
    )  # fmt: skip
    ran = fal_client.run(T2V, arguments={**INPUTS, "seed": 5})
    return {
        "urls": [by_file, by_bytes, by_image, by_initiate],
        "i2v": i2v,
        "turbo": turbo,
        "t2v_run": t2v,
        "run": ran,
    }


def rate_limited() -> dict[str, Any]:
    """A token with --rate-per-minute 1 submits twice. fal-client retries a 429 (its
    RETRY_CODES) with exponential backoff from 0.1 s, ten attempts (about 50 s); three
    here keep the test short. Every request it sends is recorded."""
    fal_client.client.MAX_ATTEMPTS = 3
    sent: list[int] = []
    real = fal_client.client._request

    def recording(client: Any, method: str, url: str, **kwargs: Any) -> Any:
        try:
            response = real(client, method, url, **kwargs)
        except fal_client.client.FalClientHTTPError as exc:
            sent.append(exc.status_code)
            raise
        sent.append(response.status_code)
        return response

    fal_client.client._request = recording
    first = fal_client.submit(T2V, arguments=INPUTS).request_id
    started = time.monotonic()
    try:
        fal_client.submit(T2V, arguments=INPUTS)
        error: dict[str, Any] = {"ok": True}
    except fal_client.client.FalClientHTTPError as exc:
        error = {**http_error(exc), "retry_after": exc.response_headers.get("retry-after")}
    return {"first": first, "sent": sent, "error": error, "seconds": time.monotonic() - started}


SCENARIOS = {
    f.__name__: f
    for f in (
        subscribe,
        submit_status_result,
        cancel,
        failing,
        invalid,
        uploads_and_aliases,
        rate_limited,
    )
}

if __name__ == "__main__":
    print(json.dumps(SCENARIOS[sys.argv[1]]()))
