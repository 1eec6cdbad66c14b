"""Talking to a ComfyUI server: its HTTP routes and websocket messages, and what each
failure means for the job.

Routes (ComfyUI's ``server.py``): ``GET /prompt`` (queue length), ``POST /upload/image``
(any file into the input folder), ``POST /prompt`` -> ``{"prompt_id", "number",
"node_errors"}`` or 400 ``{"error": {...}, "node_errors": {...}}``, ``GET /history/{id}`` ->
``{id: {"outputs": {node: ui}, "status": {"status_str", "completed", "messages"}}}``,
``GET /view``, ``GET/POST /queue``, ``POST /interrupt``, ``POST /history`` (delete).
Websocket ``/ws?clientId=...`` messages are ``{"type", "data"}``: ``progress``
(``value``/``max``), ``executing`` (``node: null`` once the prompt is done, error or not),
``execution_success``, ``execution_error`` (``exception_type``/``exception_message``),
``execution_interrupted``.

Failures (``EngineError`` is final for the job; anything else is retried by the worker):

- server unreachable, 5xx, an HTTP call slower than ``http_timeout``: ``ComfyUIUnavailable``;
  unreachable (no server answers within ``connect_wait``, a refused connection, a websocket
  that does not come back) is ``down``: the job is given back unspent and the worker holds
  the engine down, probing it (``probe_servers``), until a server answers.
- the websocket drops: reconnect with the same client id, read ``/history``; a prompt found
  in neither history nor queue is lost (server restarted): ``ComfyUIPromptLost``; a server
  that does not answer again within ``connect_wait``: ``ComfyUIUnavailable``.
- no result within ``job_timeout``: the prompt is dequeued or interrupted; ``ComfyUITimeout``.
- ``execution_error``: ``ComfyUIExecutionError`` with ComfyUI's message (final), except
  out-of-memory; that and ``execution_interrupted`` are ``ComfyUIInterrupted`` (retried).
- ``POST /prompt`` answers 400 (missing node pack or model file): ``ComfyUIRejected`` (final).
  vidq chooses the prompt id, so a prompt whose ``POST /prompt`` answer was lost is
  dequeued or interrupted, and its history removed, before the attempt fails.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import struct
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import av
import httpx
import numpy as np
import numpy.typing as npt
from PIL import Image
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from vidq.engines.base import NO_PREVIEWS, Previews, Report
from vidq.errors import EngineError

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".gif", ".webp")


class ComfyUIUnavailable(ConnectionError):
    """No ComfyUI server answered (retried). ``down``: the server is unreachable, not just
    slow or failing one call; the worker then gives the job back unspent and holds the
    engine down until a probe (``probe_servers``) answers (``Engine.probe``)."""

    def __init__(self, message: str, *, down: bool = False) -> None:
        super().__init__(message)
        self.backend_down = down


class ComfyUIPromptLost(ComfyUIUnavailable):
    """The server forgot the prompt: restarted, or its queue was cleared (retried)."""


class ComfyUITimeout(TimeoutError):
    """ComfyUI did not finish in time (retried)."""


class ComfyUIInterrupted(RuntimeError):
    """ComfyUI interrupted the prompt, or ran out of memory (retried)."""


class ComfyUIExecutionError(EngineError):
    """ComfyUI failed to run the workflow."""


class ComfyUIRejected(EngineError):
    """ComfyUI rejected the workflow."""


def display_url(url: str) -> str:
    """``url`` without credentials or query string, for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def pick_server(
    urls: list[str], *, http_timeout: float, connect_wait: float, deadline: float
) -> str:
    """The reachable server with the fewest queued prompts; waits up to
    ``connect_wait`` seconds for one to answer."""
    wait_until = min(deadline, time.monotonic() + connect_wait)
    delay = 0.5
    while True:
        best, errors = _queue_lengths(urls, http_timeout)
        if best is not None:
            return best[1]
        if time.monotonic() >= wait_until:
            raise ComfyUIUnavailable(
                f"no ComfyUI server answered within {connect_wait:g} s: " + "; ".join(errors),
                down=True,
            )
        time.sleep(min(delay, max(0.0, wait_until - time.monotonic())))
        delay = min(delay * 2, 5.0)


def probe_servers(urls: list[str], *, http_timeout: float) -> str | None:
    """One round of ``GET /prompt`` on every server: None when one answers, else why none
    did (the worker's probe of an engine it holds down)."""
    best, errors = _queue_lengths(urls, http_timeout)
    return None if best is not None else "no ComfyUI server answered: " + "; ".join(errors)


def _queue_lengths(
    urls: list[str], http_timeout: float
) -> tuple[tuple[int, str] | None, list[str]]:
    """The answering server with the fewest queued prompts (and that number), and why
    each other server did not answer."""
    errors: list[str] = []
    best: tuple[int, str] | None = None
    for url in urls:
        try:
            r = httpx.get(f"{url}/prompt", timeout=http_timeout)
            r.raise_for_status()
            queued = int(r.json().get("exec_info", {}).get("queue_remaining", 0))
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            errors.append(f"{display_url(url)}: {_why(exc)}")
            continue
        if best is None or queued < best[0]:
            best = (queued, url)
    return best, errors


def _why(exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(exc, httpx.ConnectError):
        return "connection refused or unreachable"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def _suffix(path: Path, field: str) -> str:
    """A file extension for an input, from its content (ComfyUI's loaders go by name)."""
    if field in ("data_uri", "second_image_uri"):
        with contextlib.suppress(OSError):
            with Image.open(path) as im:
                return "." + (im.format or "png").lower().replace("jpeg", "jpg")
    try:
        with av.open(str(path)) as container:
            name = container.format.name.split(",")[0]
    except (av.FFmpegError, OSError) as exc:
        raise EngineError(f"{field}: the input media cannot be decoded") from exc
    return {"mov": ".mp4", "matroska": ".mkv"}.get(name, f".{name}")


class ComfyUISession:
    """One job's conversation with one ComfyUI server (see module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        deadline: float,
        job_timeout: float,
        http_timeout: float,
        history_poll: float,
        connect_wait: float = 30.0,
    ) -> None:
        self.url = url
        self.client_id = uuid.uuid4().hex
        self.deadline = deadline
        self.job_timeout = job_timeout
        self.http_timeout = http_timeout
        self.history_poll = history_poll
        self.connect_wait = connect_wait  # how long a dropped server may take to answer again
        self.http = httpx.Client(base_url=url, timeout=http_timeout)
        self.ws: ClientConnection | None = None
        self._ws_scope = contextlib.ExitStack()
        self._step = 0  # the last step ComfyUI reported (the step a preview shows)

    def __enter__(self) -> ComfyUISession:
        self._connect()  # before /prompt, so no message of ours is missed
        return self

    def __exit__(self, *exc: object) -> None:
        self._drop_ws()
        self.http.close()

    def _drop_ws(self) -> None:
        self.ws = None
        self._ws_scope.close()

    # -- HTTP ------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        where = f"ComfyUI at {display_url(self.url)}"
        try:
            r = self.http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise ComfyUIUnavailable(
                f"{where} did not answer {method} {path.split('?')[0]} "
                f"within {self.http_timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise ComfyUIUnavailable(f"{where} is unreachable: {_why(exc)}", down=True) from exc
        if r.status_code >= 500:
            raise ComfyUIUnavailable(f"{where} answered HTTP {r.status_code} to {method} {path}")
        return r

    def upload(self, request_id: int, field: str, path: Path) -> str:
        """Upload an input file; returns the name the workflow's loader node uses."""
        name = f"vidq-{request_id}-{uuid.uuid4().hex[:8]}-{field}{_suffix(path, field)}"
        with path.open("rb") as fh:
            r = self._request(
                "POST",
                "/upload/image",
                files={"image": (name, fh, "application/octet-stream")},
                data={"type": "input", "overwrite": "true"},
            )
        if r.status_code != 200:
            raise ComfyUIUnavailable(f"uploading {field} to ComfyUI failed: HTTP {r.status_code}")
        body = r.json()
        subfolder = str(body.get("subfolder") or "")
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    def submit(self, graph: dict[str, Any]) -> str:
        """Queue the workflow under a prompt id of our own (ComfyUI takes ``prompt_id`` in
        the body), so that a prompt whose answer was lost (a timeout, a dropped connection)
        is still known: it is dequeued or interrupted and its history removed."""
        prompt_id = str(uuid.uuid4())
        body = {"prompt": graph, "client_id": self.client_id, "prompt_id": prompt_id}
        try:
            r = self._request("POST", "/prompt", json=body)
        except ComfyUIUnavailable:
            self.stop(prompt_id)
            self.forget(prompt_id)
            raise
        if r.status_code != 200:
            raise ComfyUIRejected(f"ComfyUI rejected the workflow: {_rejection(r)}")
        return str(r.json().get("prompt_id") or prompt_id)

    def history_entry(self, prompt_id: str) -> dict[str, Any]:
        entry = self._history(prompt_id)
        if entry is None:
            raise ComfyUIUnavailable(f"ComfyUI has no history for prompt {prompt_id}")
        return entry

    def _history(self, prompt_id: str) -> dict[str, Any] | None:
        r = self._request("GET", f"/history/{prompt_id}")
        if r.status_code != 200:
            return None
        entry = r.json().get(prompt_id)
        return entry if isinstance(entry, dict) else None

    def download_output(self, entry: dict[str, Any], output_ids: list[str]) -> Path:
        """Download the video the output node saved, to a temporary file."""
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            _raise_from_messages(status.get("messages") or [])
        outputs: dict[str, Any] = entry.get("outputs") or {}
        ordered = [*output_ids, *(k for k in outputs if k not in output_ids)]
        for node_id in ordered:
            for item in _files_of(outputs.get(node_id) or {}):
                if str(item.get("filename", "")).lower().endswith(VIDEO_SUFFIXES):
                    return self._view(item)
        raise ComfyUIExecutionError(
            "ComfyUI finished but its output nodes saved no video "
            f"(outputs of nodes {sorted(outputs)})"
        )

    def _view(self, item: dict[str, Any]) -> Path:
        params = {
            "filename": str(item["filename"]),
            "subfolder": str(item.get("subfolder", "")),
            "type": str(item.get("type", "output")),
        }
        suffix = Path(params["filename"]).suffix
        fd, name = tempfile.mkstemp(prefix="vidq-comfyui-", suffix=suffix)
        target = Path(name)
        try:
            with open(fd, "wb") as out, self.http.stream("GET", "/view", params=params) as r:
                if r.status_code != 200:
                    raise ComfyUIUnavailable(
                        f"downloading {params['filename']} from ComfyUI: HTTP {r.status_code}"
                    )
                for chunk in r.iter_bytes():
                    out.write(chunk)
        except httpx.HTTPError as exc:
            target.unlink(missing_ok=True)
            raise ComfyUIUnavailable(f"downloading the output from ComfyUI: {_why(exc)}") from exc
        except BaseException:
            target.unlink(missing_ok=True)
            raise
        return target

    def forget(self, prompt_id: str) -> None:
        """Remove the prompt from the server's queue and history (best effort)."""
        with contextlib.suppress(ComfyUIUnavailable):
            self._request("POST", "/queue", json={"delete": [prompt_id]})
            self._request("POST", "/history", json={"delete": [prompt_id]})

    def stop(self, prompt_id: str) -> None:
        """On timeout or abort: dequeue the prompt, or interrupt it if it is the one running."""
        with contextlib.suppress(ComfyUIUnavailable, ValueError, KeyError, TypeError):
            self._request("POST", "/queue", json={"delete": [prompt_id]})
            queue = self._request("GET", "/queue").json()
            running = [item[1] for item in queue.get("queue_running", [])]
            if prompt_id in running:
                self._request("POST", "/interrupt", json={"prompt_id": prompt_id})

    # -- websocket -------------------------------------------------------------------
    def _connect(self, until: float | None = None) -> None:
        """Open the websocket, waiting for its handshake no later than ``until`` (the
        deadline if None) and no longer than ``http_timeout``."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        ws_url = urlunsplit(
            (scheme, parts.netloc, parts.path + "/ws", f"clientId={self.client_id}", "")
        )
        until = self.deadline if until is None else until
        timeout = max(0.1, min(self.http_timeout, until - time.monotonic()))
        try:
            connection = connect(ws_url, open_timeout=timeout, max_size=None, close_timeout=1)
            self.ws = self._ws_scope.enter_context(connection)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            raise ComfyUIUnavailable(
                f"ComfyUI websocket at {display_url(self.url)} is unreachable: {type(exc).__name__}"
            ) from exc

    def follow(self, prompt_id: str, report: Report, previews: Previews = NO_PREVIEWS) -> None:
        """Read the websocket until our prompt ends; reconnect when it drops. The preview
        images ComfyUI sends (binary messages, with ``--preview-method``) go to
        ``previews``."""
        last_poll = time.monotonic()
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                self.stop(prompt_id)
                raise ComfyUITimeout(
                    f"ComfyUI at {display_url(self.url)} did not finish prompt {prompt_id} "
                    f"within {self.job_timeout:g} s"
                )
            if self.ws is None:
                self._reconnect(prompt_id)
                if self._finished(prompt_id, check_queue=True):
                    return
                continue
            try:
                raw = self.ws.recv(timeout=min(remaining, self.history_poll))
            except TimeoutError:
                raw = None
            except ConnectionClosed:
                log.warning("comfyui websocket closed; reconnecting", extra={"prompt": prompt_id})
                self._drop_ws()
                continue
            if raw is None or time.monotonic() - last_poll >= self.history_poll:
                # A safety net for a missed 'executing' message.
                last_poll = time.monotonic()
                if self._finished(prompt_id, check_queue=raw is None):
                    return
            if isinstance(raw, str) and self._handle(json.loads(raw), prompt_id, report):
                return
            if isinstance(raw, bytes) and previews.due():
                frame = preview_frame(raw, prompt_id)
                if frame is not None:
                    previews.publish([frame], self._step)

    def _reconnect(self, prompt_id: str) -> None:
        """Reopen the websocket; a server that does not answer within ``connect_wait``
        (or by the job's deadline) fails the attempt (ComfyUIUnavailable: retried), so a
        dead server never holds the worker until ``job_timeout``."""
        give_up = min(self.deadline, time.monotonic() + self.connect_wait)
        delay = 0.2
        while True:
            try:
                self._connect(give_up)
                return
            except ComfyUIUnavailable as exc:
                left = give_up - time.monotonic()
                if left <= 0:
                    raise ComfyUIUnavailable(
                        f"ComfyUI at {display_url(self.url)} stopped answering during prompt "
                        f"{prompt_id} and did not come back within {self.connect_wait:g} s",
                        down=True,
                    ) from exc
                time.sleep(min(delay, left))  # the last try is at ``give_up``
                delay = min(delay * 2, 5.0)

    def _finished(self, prompt_id: str, *, check_queue: bool = False) -> bool:
        """Whether ``/history`` holds the prompt (raising its error if it failed). With
        ``check_queue``, a prompt in neither history nor queue is lost (the server was
        restarted or its queue cleared): ComfyUIUnavailable, so the job is retried."""
        try:
            entry = self._history(prompt_id)
            if entry is None and check_queue and not self._queued(prompt_id):
                entry = self._history(prompt_id)  # it may have finished in between
                if entry is None:
                    raise ComfyUIPromptLost(
                        f"prompt {prompt_id} is no longer on ComfyUI at "
                        f"{display_url(self.url)} (server restarted or queue cleared)"
                    )
        except ComfyUIPromptLost:
            raise
        except ComfyUIUnavailable:
            return False
        if entry is None:
            return False
        status = entry.get("status") or {}
        if status.get("status_str") == "error":
            _raise_from_messages(status.get("messages") or [])
        return bool(status.get("completed", True)) or bool(entry.get("outputs"))

    def _queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or pending on the server (True if unknown)."""
        try:
            queue = self._request("GET", "/queue").json()
            items = [*queue.get("queue_running", []), *queue.get("queue_pending", [])]
            return any(isinstance(i, list) and len(i) > 1 and i[1] == prompt_id for i in items)
        except (ComfyUIUnavailable, ValueError, AttributeError):
            return True

    def _handle(self, message: Any, prompt_id: str, report: Report) -> bool:
        """Act on one websocket message; True when our prompt is done."""
        if not isinstance(message, dict):
            return False
        kind, data = message.get("type"), message.get("data") or {}
        if not isinstance(data, dict) or data.get("prompt_id") not in (prompt_id, None):
            return False
        if kind == "progress" and data.get("prompt_id") == prompt_id:
            value, total = int(data.get("value", 0)), int(data.get("max", 0))
            if total > 0:
                self._step = min(value, total)
                report(self._step, total)
        elif kind == "executing" and data.get("prompt_id") == prompt_id:
            return data.get("node") is None
        elif kind == "execution_success" and data.get("prompt_id") == prompt_id:
            return True
        elif kind in ("execution_error", "execution_interrupted") and data.get("prompt_id"):
            _raise_from_messages([[kind, data]])
        return False


# ComfyUI's binary websocket messages: a 4-byte big-endian event type, then its payload.
# PREVIEW_IMAGE: a 4-byte image format (1 JPEG, 2 PNG), then the image. PREVIEW_IMAGE_WITH_
# METADATA: a 4-byte length, that much JSON (``prompt_id``, ``node_id``, ...), then the image.
PREVIEW_IMAGE = 1
PREVIEW_IMAGE_WITH_METADATA = 4
_PREVIEW_MAX_PIXELS = 4096 * 4096


def preview_frame(raw: bytes, prompt_id: str) -> npt.NDArray[np.uint8] | None:
    """The RGB pixels of a preview image message of ``prompt_id``'s run, or None (another
    kind of message, another prompt's, or an image that does not decode)."""
    if len(raw) < 8:
        return None
    (event,) = struct.unpack(">I", raw[:4])
    if event == PREVIEW_IMAGE:
        image = raw[8:]
    elif event == PREVIEW_IMAGE_WITH_METADATA:
        (size,) = struct.unpack(">I", raw[4:8])
        try:
            meta = json.loads(raw[8 : 8 + size])
        except ValueError:
            return None
        if not isinstance(meta, dict) or meta.get("prompt_id") not in (prompt_id, None):
            return None
        image = raw[8 + size :]
    else:
        return None
    try:
        with Image.open(io.BytesIO(image)) as img:
            if img.width * img.height > _PREVIEW_MAX_PIXELS:
                return None
            return np.asarray(img.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


def _files_of(output: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """File entries of one node's UI output: SaveVideo uses 'images', VHS 'gifs'."""
    for key in ("images", "gifs", "videos", "video"):
        for item in output.get(key) or []:
            if isinstance(item, dict) and "filename" in item:
                yield item


def _raise_from_messages(messages: list[Any]) -> None:
    """Raise the failure recorded in ComfyUI's status messages ([event, data] pairs)."""
    for event, data in (m for m in messages if isinstance(m, list | tuple) and len(m) == 2):
        if not isinstance(data, dict):
            continue
        if event == "execution_interrupted":
            raise ComfyUIInterrupted(
                f"ComfyUI interrupted the prompt at node {data.get('node_id')} "
                f"({data.get('node_type')})"
            )
        if event == "execution_error":
            kind = str(data.get("exception_type") or "Exception")
            text = (
                f"ComfyUI node {data.get('node_id')} ({data.get('node_type')}) failed: "
                f"{kind}: {str(data.get('exception_message', '')).strip()}"
            )
            if "OutOfMemory" in kind or "out of memory" in text.lower():
                raise ComfyUIInterrupted(text)
            raise ComfyUIExecutionError(text)
    raise ComfyUIExecutionError("ComfyUI reported an error without details")


def _rejection(r: httpx.Response) -> str:
    """ComfyUI's reason for a 400 on /prompt: its error message and the node errors."""
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code}"
    error = body.get("error")
    parts = []
    if isinstance(error, dict):
        detail = f" ({error['details']})" if error.get("details") else ""
        parts.append(f"{error.get('message', 'invalid prompt')}{detail}")
    elif error:
        parts.append(str(error))
    for node_id, node in (body.get("node_errors") or {}).items():
        for err in node.get("errors", []) if isinstance(node, dict) else []:
            parts.append(
                f"node {node_id} ({node.get('class_type')}): {err.get('message')}"
                + (f": {err['details']}" if err.get("details") else "")
            )
    return "; ".join(parts) or f"HTTP {r.status_code}"
