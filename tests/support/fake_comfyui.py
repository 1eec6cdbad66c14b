"""A small stand-in for a ComfyUI server, for tests (ComfyUI itself needs a GPU stack).

It speaks ComfyUI's HTTP and websocket protocol with the message shapes of ComfyUI's
``server.py`` / ``execution.py`` / ``main.py``: ``POST /prompt`` -> ``{"prompt_id", "number",
"node_errors"}`` (400 with ``{"error": {...}, "node_errors": {...}}``), websocket
``{"type": ..., "data": ...}`` messages (``status``, ``execution_start``,
``execution_cached``, ``executing``, ``progress``, ``executed``, ``execution_success``,
``execution_error``, ``execution_interrupted``, and ``executing`` with ``node: null`` after
the prompt is done, error or not), ``/history/{id}`` entries with ``outputs`` and
``status: {status_str, completed, messages}``, ``/view``, ``/upload/image``, ``/queue``,
``/interrupt``. A ``LoraLoaderModelOnly`` naming a ``vidq-...`` file must find it in
``lora_dir`` (``models/loras``), as ComfyUI validates a LoRA name against that folder; the
bytes of each one a queued prompt named are kept in ``lora_files``. Nodes "run" on the
CPU and make a real MP4 from the inputs with PyAV.

``mode`` chooses a behaviour: ``ok``, ``error`` (the sampler raises), ``oom``,
``drop_ws`` (the websocket is closed after the first progress message; execution goes on),
``drop_ws_error`` (the same, then the sampler raises while the client is away),
``slow`` (each step sleeps ``step_delay``; honours ``/interrupt``), ``slow_http`` (every HTTP
answer waits ``http_delay``). ``codec`` is the output's video codec (``h264`` or ``mpeg4``).
``preview_method`` stands for ComfyUI's ``--preview-method``: ``none`` (its default),
``image`` (after each sampler step, a binary PREVIEW_IMAGE message: a JPEG whose colour is
the step's) or ``metadata`` (PREVIEW_IMAGE_WITH_METADATA, naming the prompt).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import struct
import threading
import time
import uuid
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import WSMsgType, web
from PIL import Image

from vidq.media.video import write_mp4

PASSIVE = {
    "UNETLoader",
    "LoraLoaderModelOnly",
    "ModelSamplingSD3",
    "CLIPLoader",
    "VAELoader",
    "CLIPTextEncode",
    "AudioEncoderLoader",
}
ACTIVE = {
    "LoadImage",
    "LoadAudio",
    "LoadVideo",
    "AudioEncoderEncode",
    "EmptyHunyuanLatentVideo",
    "WanImageToVideo",
    "WanFirstLastFrameToVideo",
    "WanSoundImageToVideo",
    "KSampler",
    "KSamplerAdvanced",
    "VAEDecode",
    "CreateVideo",
    "GetVideoComponents",
    "HunyuanVideoFoleyGenerateAudio",
    "SaveVideo",
}
OUTPUT = {"SaveVideo"}
LORA = "LoraLoaderModelOnly"


class Interrupted(Exception):
    pass


class FakeComfyUI:
    """The server; ``start()`` runs it on a loopback port in a thread."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.input_dir = root / "input"
        self.output_dir = root / "output"
        # ComfyUI's models/loras: where vidq places a request's LoRAs (VIDQ_COMFYUI_LORA_DIR)
        self.lora_dir = root / "models" / "loras"
        self.input_dir.mkdir(parents=True, exist_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.lora_dir.mkdir(parents=True, exist_ok=True)
        self.lora_files: dict[str, bytes] = {}  # LoRAs in lora_dir a prompt named, when queued
        self.port = port or _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.mode = "ok"
        self.codec = "h264"
        self.step_delay = 0.0
        self.preview_method = "none"
        self.previews_sent = 0
        self.http_delay = 0.0
        self.prompt_answer_delay = 0.0  # a queued prompt's answer comes this late
        self.prompts: list[dict[str, Any]] = []  # every accepted graph
        self.history: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []  # history entries deleted
        self.ended: dict[str, str] = {}  # each prompt that ran to its end: its status_str
        self.dequeued: list[str] = []  # pending prompts deleted from the queue
        self.prompt_ids: list[str] = []  # every queued prompt's id
        self.interrupts = 0
        self.ws_connects = 0
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._running: str | None = None
        self._pending: list[str] = []
        self._interrupt = False
        self._number = 0
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> FakeComfyUI:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve())
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._shutdown())
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-comfyui", daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake ComfyUI did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def __enter__(self) -> FakeComfyUI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> None:
        self._lock = asyncio.Lock()
        app = web.Application(middlewares=[self._delay])
        app.add_routes(
            [
                web.get("/ws", self._ws),
                web.get("/prompt", self._queue_info),
                web.post("/prompt", self._post_prompt),
                web.post("/upload/image", self._upload),
                web.get("/history/{prompt_id}", self._get_history),
                web.post("/history", self._post_history),
                web.get("/queue", self._get_queue),
                web.post("/queue", self._post_queue),
                web.post("/interrupt", self._post_interrupt),
                web.get("/view", self._view),
            ]
        )
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _shutdown(self) -> None:
        # Stop listening first, so that the port is free at once for a replacement server
        # (closing the websockets below may wait for their clients on a loaded machine).
        if self._runner is not None:
            for site in list(self._runner.sites):
                await site.stop()
        for ws in list(self._sockets.values()):
            await ws.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    @web.middleware
    async def _delay(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.mode == "slow_http" and request.path != "/ws":
            await asyncio.sleep(self.http_delay)
        response: web.StreamResponse = await handler(request)
        return response

    # -- routes ----------------------------------------------------------------------
    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "") or uuid.uuid4().hex
        self._sockets[sid] = ws
        self.ws_connects += 1
        try:
            await ws.send_json({"type": "status", "data": {**self._status(), "sid": sid}})
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                self._sockets.pop(sid, None)
        return ws

    def _status(self) -> dict[str, Any]:
        pending = len(self._pending) + (1 if self._running else 0)
        return {"status": {"exec_info": {"queue_remaining": pending}}}

    async def _queue_info(self, request: web.Request) -> web.Response:
        return web.json_response(self._status()["status"])

    async def _post_prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            return web.json_response({"error": "no prompt", "node_errors": []}, status=400)
        for nid, node in graph.items():
            if node["class_type"] not in PASSIVE | ACTIVE:
                error = {
                    "type": "invalid_prompt",
                    "message": f"Cannot execute because node {node['class_type']} does not exist.",
                    "details": f"Node ID '#{nid}'",
                    "extra_info": {},
                }
                return web.json_response({"error": error, "node_errors": {}}, status=400)
        node_errors = self._missing_files(graph)
        if node_errors:
            error = {
                "type": "prompt_outputs_failed_validation",
                "message": "Prompt outputs failed validation",
                "details": "",
                "extra_info": {},
            }
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())  # the client's, as ComfyUI
        self._number += 1
        self.prompts.append(graph)
        self.prompt_ids.append(prompt_id)
        for node in graph.values():
            name = str(node["inputs"].get("lora_name", "")) if node["class_type"] == LORA else ""
            if (self.lora_dir / name).is_file():
                self.lora_files[name] = (self.lora_dir / name).read_bytes()
        client_id = body.get("client_id")
        self._pending.append(prompt_id)
        asyncio.get_running_loop().create_task(self._execute(prompt_id, graph, client_id))
        await asyncio.sleep(self.prompt_answer_delay)
        return web.json_response(
            {"prompt_id": prompt_id, "number": self._number, "node_errors": {}}
        )

    def _missing_files(self, graph: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        keys = {"LoadImage": "image", "LoadAudio": "audio", "LoadVideo": "file"}
        for nid, node in graph.items():
            key = keys.get(node["class_type"])
            folder = self.input_dir
            name = str(node["inputs"].get("lora_name", ""))
            if node["class_type"] == LORA and name.startswith("vidq-"):
                # a request's LoRA must be in the loras folder (the shipped Lightning
                # LoRAs' names are taken as installed)
                key, folder = "lora_name", self.lora_dir
            if key and not (folder / str(node["inputs"][key])).is_file():
                errors[nid] = {
                    "errors": [
                        {
                            "type": "value_not_in_list",
                            "message": "Value not in list",
                            "details": f"{key}: '{node['inputs'][key]}' not in []",
                            "extra_info": {"input_name": key},
                        }
                    ],
                    "dependent_outputs": [n for n, v in graph.items() if v["class_type"] in OUTPUT],
                    "class_type": node["class_type"],
                }
        return errors

    async def _upload(self, request: web.Request) -> web.Response:
        post = await request.post()
        image = post.get("image")
        if not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder", ""))
        folder = self.input_dir / subfolder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / image.filename).write_bytes(image.file.read())
        return web.json_response({"name": image.filename, "subfolder": subfolder, "type": "input"})

    async def _get_history(self, request: web.Request) -> web.Response:
        pid = request.match_info["prompt_id"]
        return web.json_response({pid: self.history[pid]} if pid in self.history else {})

    async def _post_history(self, request: web.Request) -> web.Response:
        body = await request.json()
        for pid in body.get("delete", []):
            self.deleted.append(pid)
            self.history.pop(pid, None)
        return web.Response(status=200)

    async def _get_queue(self, request: web.Request) -> web.Response:
        running = [[self._number, self._running, {}, {}, []]] if self._running else []
        pending = [[self._number, pid, {}, {}, []] for pid in self._pending]
        return web.json_response({"queue_running": running, "queue_pending": pending})

    async def _post_queue(self, request: web.Request) -> web.Response:
        body = await request.json()
        for pid in body.get("delete", []):
            if pid in self._pending:
                self._pending.remove(pid)
                self.dequeued.append(pid)
        return web.Response(status=200)

    async def _post_interrupt(self, request: web.Request) -> web.Response:
        self.interrupts += 1
        self._interrupt = True
        return web.Response(status=200)

    async def _view(self, request: web.Request) -> web.StreamResponse:
        name = request.query.get("filename", "")
        if not name or name.startswith("/") or ".." in name:
            return web.Response(status=400)
        base = (
            self.output_dir if request.query.get("type", "output") == "output" else self.input_dir
        )
        path = base / request.query.get("subfolder", "") / name
        if not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Disposition": f'filename="{name}"'})

    # -- execution -------------------------------------------------------------------
    async def _send(self, client_id: str | None, kind: str, data: dict[str, Any]) -> None:
        ws = self._sockets.get(client_id or "")
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError):
                await ws.send_json({"type": kind, "data": data})

    async def _send_preview(self, client_id: str | None, pid: str, step: int) -> None:
        """A sampler preview as ComfyUI sends it: binary, a 4-byte event type first."""
        ws = self._sockets.get(client_id or "")
        if self.preview_method == "none" or ws is None or ws.closed:
            return
        out = io.BytesIO()
        Image.new("RGB", (48, 32), preview_colour(step)).save(out, format="JPEG", quality=95)
        if self.preview_method == "metadata":
            meta = json.dumps({"node_id": "3", "display_node_id": "3", "prompt_id": pid}).encode()
            message = struct.pack(">II", 4, len(meta)) + meta + out.getvalue()
        else:
            message = struct.pack(">II", 1, 1) + out.getvalue()
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(message)
            self.previews_sent += 1

    async def _execute(self, pid: str, graph: dict[str, Any], cid: str | None) -> None:
        assert self._lock is not None
        async with self._lock:
            if pid not in self._pending:
                return  # deleted from the queue before it ran
            self._pending.remove(pid)
            self._running, self._interrupt = pid, False
            try:
                await self._run_graph(pid, graph, cid)
            finally:
                self._running = None
            await self._send(cid, "executing", {"node": None, "prompt_id": pid})

    async def _run_graph(self, pid: str, graph: dict[str, Any], cid: str | None) -> None:
        now = lambda: int(time.time() * 1000)  # noqa: E731
        messages: list[list[Any]] = []
        start = {"prompt_id": pid, "timestamp": now()}
        messages.append(["execution_start", start])
        await self._send(cid, "execution_start", start)
        await self._send(
            cid, "execution_cached", {"nodes": [], "prompt_id": pid, "timestamp": now()}
        )
        outputs: dict[str, tuple[Any, ...]] = {}
        ui: dict[str, Any] = {}
        executed: list[str] = []
        ctx = _Ctx(self, pid, cid)
        for nid in _order(graph):
            node = graph[nid]
            await self._send(cid, "executing", {"node": nid, "display_node": nid, "prompt_id": pid})
            inputs = {
                k: outputs[v[0]][v[1]] if isinstance(v, list) else v
                for k, v in node["inputs"].items()
            }
            try:
                result, node_ui = await _run_node(ctx, node["class_type"], inputs)
            except Interrupted:
                data = {
                    "prompt_id": pid,
                    "node_id": nid,
                    "node_type": node["class_type"],
                    "executed": executed,
                    "timestamp": now(),
                }
                messages.append(["execution_interrupted", data])
                await self._send(cid, "execution_interrupted", data)
                self._record(pid, graph, cid, {}, "error", messages)
                return
            except Exception as exc:
                data = {
                    "prompt_id": pid,
                    "node_id": nid,
                    "node_type": node["class_type"],
                    "executed": executed,
                    "exception_message": str(exc),
                    "exception_type": getattr(exc, "comfy_type", type(exc).__name__),
                    "traceback": [
                        "Traceback (most recent call last):\n",
                        f"  {type(exc).__name__}\n",
                    ],
                    "current_inputs": {},
                    "current_outputs": {},
                    "timestamp": now(),
                }
                messages.append(["execution_error", data])
                await self._send(cid, "execution_error", data)
                self._record(pid, graph, cid, {}, "error", messages)
                return
            outputs[nid] = result
            executed.append(nid)
            if node_ui:
                ui[nid] = node_ui
                await self._send(
                    cid,
                    "executed",
                    {"node": nid, "display_node": nid, "output": node_ui, "prompt_id": pid},
                )
        success = {"prompt_id": pid, "timestamp": now()}
        messages.append(["execution_success", success])
        await self._send(cid, "execution_success", success)
        self._record(pid, graph, cid, ui, "success", messages)

    def _record(
        self,
        pid: str,
        graph: dict[str, Any],
        cid: str | None,
        ui: dict[str, Any],
        status: str,
        messages: list[list[Any]],
    ) -> None:
        outs = [n for n, v in graph.items() if v["class_type"] in OUTPUT]
        self.ended[pid] = status  # kept when a client deletes the history entry
        self.history[pid] = {
            "prompt": [self._number, pid, graph, {"client_id": cid}, outs],
            "outputs": ui,
            "status": {
                "status_str": status,
                "completed": status == "success",
                "messages": messages,
            },
            "meta": {
                n: {"node_id": n, "display_node": n, "parent_node": None, "real_node_id": n}
                for n in ui
            },
        }


def preview_colour(step: int) -> tuple[int, int, int]:
    """The colour of the fake's preview image at ``step``."""
    return (min(255, 40 * step), 100, 200)


class _Ctx:
    def __init__(self, server: FakeComfyUI, pid: str, cid: str | None) -> None:
        self.server, self.pid, self.cid = server, pid, cid
        self.progressed = False

    async def steps(self, node_type: str, first: int, last: int, total: int) -> None:
        server = self.server
        if server.mode in ("error", "oom"):
            error = RuntimeError("mat1 and mat2 shapes cannot be multiplied (77x4096 and 768x320)")
            if server.mode == "oom":
                error = RuntimeError("Allocation on device")
                error.comfy_type = "torch.OutOfMemoryError"  # type: ignore[attr-defined]
            raise error
        for step in range(first + 1, last + 1):
            if server.step_delay:
                await asyncio.sleep(server.step_delay)
            if server._interrupt:
                raise Interrupted()
            if server.mode == "drop_ws_error" and self.progressed:
                raise ValueError("the sampler failed while nobody was listening")
            data = {"value": step, "max": total, "prompt_id": self.pid, "node": None}
            await server._send(self.cid, "progress", data)
            await server._send_preview(self.cid, self.pid, step)
            if server.mode in ("drop_ws", "drop_ws_error") and not self.progressed:
                self.progressed = True
                ws = server._sockets.get(self.cid or "")
                if ws is not None:
                    await ws.close()


async def _run_node(
    ctx: _Ctx, kind: str, i: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if kind == "KSampler":
        await ctx.steps(kind, 0, int(i["steps"]), int(i["steps"]))
        return (i["latent_image"],), {}
    if kind == "KSamplerAdvanced":
        steps = int(i["steps"])
        await ctx.steps(kind, int(i["start_at_step"]), min(steps, int(i["end_at_step"])), steps)
        return (i["latent_image"],), {}
    if kind == "HunyuanVideoFoleyGenerateAudio":
        steps = int(i["num_inference_steps"])
        await ctx.steps(kind, 0, steps, steps)
        v = i["video"]
        seconds = len(v["frames"]) / v["fps"]
        t = np.arange(int(48000 * seconds), dtype=np.float32) / 48000
        return ({"samples": (0.3 * np.sin(2 * np.pi * 330 * t))[None, :], "rate": 48000},), {}
    if kind == "SaveVideo":
        prefix = Path(str(i["filename_prefix"]))
        folder = ctx.server.output_dir / prefix.parent
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{prefix.name}_00001_.mp4"
        await asyncio.to_thread(_save, folder / name, i["video"], ctx.server.codec)
        item = {"filename": name, "subfolder": str(prefix.parent), "type": "output"}
        return (), {"images": [item], "animated": [True]}
    return _plain_node(ctx.server.input_dir, kind, i), {}


def _plain_node(inp: Path, kind: str, i: dict[str, Any]) -> tuple[Any, ...]:
    if kind in PASSIVE:
        return (None, None, None)
    if kind == "LoadImage":
        with Image.open(inp / i["image"]) as im:
            return (np.asarray(im.convert("RGB")), None)
    if kind == "LoadAudio":
        return (_read_audio(inp / i["audio"]),)
    if kind == "LoadVideo":
        return (_read_video(inp / i["file"]),)
    if kind == "AudioEncoderEncode":
        return (i["audio"],)
    if kind in (
        "EmptyHunyuanLatentVideo",
        "WanImageToVideo",
        "WanFirstLastFrameToVideo",
        "WanSoundImageToVideo",
    ):
        latent = {
            "w": int(i["width"]),
            "h": int(i["height"]),
            "n": int(i["length"]),
            "start": i.get("start_image", i.get("ref_image")),
            "end": i.get("end_image"),
        }
        return (latent,) if kind == "EmptyHunyuanLatentVideo" else (None, None, latent)
    if kind == "VAEDecode":
        return (_decode(i["samples"]),)
    if kind == "CreateVideo":
        return ({"frames": i["images"], "fps": float(i["fps"]), "audio": i.get("audio")},)
    if kind == "GetVideoComponents":
        v = i["video"]
        return (v["frames"], v["audio"], v["fps"])
    raise AssertionError(kind)


def _order(graph: dict[str, Any]) -> list[str]:
    order: list[str] = []

    def visit(nid: str) -> None:
        if nid in order:
            return
        for v in graph[nid]["inputs"].values():
            if isinstance(v, list):
                visit(v[0])
        order.append(nid)

    for nid, node in graph.items():
        if node["class_type"] in OUTPUT:
            visit(nid)
    return order


def _decode(latent: dict[str, Any]) -> list[np.ndarray]:
    w, h, n = latent["w"], latent["h"], latent["n"]
    start, end = latent["start"], latent["end"]
    first = np.asarray(Image.fromarray(start).resize((w, h))) if start is not None else None
    last = np.asarray(Image.fromarray(end).resize((w, h))) if end is not None else first
    frames = []
    for k in range(n):
        a = k / max(1, n - 1)
        if first is not None and last is not None:
            frame = (first * (1 - a) + last * a).astype(np.uint8)
        else:
            frame = np.zeros((h, w, 3), np.uint8)
            frame[..., 0] = int(255 * a)
            frame[..., 2] = 128
        frames.append(frame)
    return frames


def _read_audio(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        rs = av.AudioResampler(format="fltp", layout="mono", rate=rate)
        parts = [o.to_ndarray() for f in c.decode(s) for o in rs.resample(f)]
    return {"samples": np.concatenate(parts, axis=1).astype(np.float32), "rate": rate}


def _read_video(path: Path) -> dict[str, Any]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or Fraction(16))
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    return {"frames": frames, "fps": fps, "audio": None}


def _save(path: Path, video: dict[str, Any], codec: str) -> None:
    frames = video["frames"]
    h, w = frames[0].shape[:2]
    fps = round(video["fps"])
    audio = video["audio"]
    if codec == "h264":
        write_mp4(
            path,
            iter(frames),
            width=w,
            height=h,
            fps=fps,
            audio=None if audio is None else audio["samples"],
            sample_rate=44100 if audio is None else audio["rate"],
        )
        return
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
