"""The ``comfyui`` engine: runs a job as a workflow on a remote ComfyUI server.

Per job: pick a server (the reachable one with the shortest queue), open its websocket,
upload the inputs, fill the workflow template of the job (``comfyui_workflows``), queue it,
follow its progress, download the output, make it an H.264/AAC MP4 if it is not one, and
delete the prompt from the server. A request's LoRAs (fetched by the worker) are linked or
copied into ``lora_dir``, a folder the servers read LoRAs from, under names unique to the
attempt, named in the template's LoRA slots (``comfyui_workflows.fill_loras``) and removed
after the job. (An upload cannot do it: ComfyUI's ``/upload/image`` writes only to its
input, temp and output folders, and ``LoraLoaderModelOnly`` reads only its ``loras``
model folders.) The protocol and what each failure means for the job
(final or retried) are in ``comfyui_client``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import av
from PIL import Image

from vidq.catalog import FPS, get_model, new_seed
from vidq.config import ComfyUISettings
from vidq.engines import comfyui_workflows as wf
from vidq.engines.base import NO_PREVIEWS, EngineJob, EngineResult, Previews, Report, lora_meta
from vidq.engines.comfyui_client import (
    ComfyUIExecutionError,
    ComfyUISession,
    display_url,
    pick_server,
    probe_servers,
)
from vidq.errors import EngineError, EngineUnavailable
from vidq.media.video import is_browser_mp4, transcode_mp4

log = logging.getLogger(__name__)

UPLOAD_FIELDS = {  # job.files key -> placeholder
    "data_uri": "image",
    "second_image_uri": "last_image",
    "audio_uri": "audio",
}
MAX_SIDE_DEFAULT = 720  # I2V/S2V height when the request names none


class ComfyUIEngine:
    """Generates videos on ComfyUI servers (see module docstring)."""

    name = "comfyui"
    settings_type = ComfyUISettings

    def __init__(
        self, settings: ComfyUISettings, pools: Sequence[str] = (), history_poll: float = 5.0
    ) -> None:
        self.urls = list(settings.urls)
        if not self.urls:
            raise EngineUnavailable("the comfyui engine needs a server URL (VIDQ_COMFYUI_URL)")
        for url in self.urls:
            if urlsplit(url).scheme not in ("http", "https"):
                raise EngineUnavailable(f"ComfyUI URL must be http(s): {display_url(url)}")
        self.workflows_dir = settings.workflows_dir
        self.lora_dir = settings.lora_dir
        self.job_timeout = settings.job_timeout
        self.http_timeout = settings.http_timeout
        self.connect_wait = settings.connect_wait
        self.history_poll = history_poll

    def load(self) -> None:
        """Nothing to load: the server holds the weights. Checks the workflows folder and,
        in the engine child, turns SIGTERM (the worker stopping the child because the lease
        was lost or it shuts down) into SystemExit, so the running prompt is interrupted on
        the server instead of being left to burn GPU time."""
        if self.workflows_dir is not None and not self.workflows_dir.is_dir():
            raise EngineUnavailable(f"workflows folder {self.workflows_dir} does not exist")
        in_child = multiprocessing.parent_process() is not None
        if in_child and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def probe(self) -> str | None:
        """None when one of the servers answers ``GET /prompt``, else why none did (the
        worker asks while it holds this engine down)."""
        return probe_servers(self.urls, http_timeout=self.http_timeout)

    # -- one job ---------------------------------------------------------------------
    def run(self, job: EngineJob, report: Report, previews: Previews = NO_PREVIEWS) -> EngineResult:
        own = wf.model_template(job.options)  # the models file's template, if it names one
        if own is None:
            kind = wf.kind_for(job.family, job.files)
            own = wf.load_template(kind, job.model_id, self.workflows_dir)
        template, origin = own
        # unique to the attempt: a stale attempt of the same job cannot delete this one's
        tag = secrets.token_hex(4)
        names = [
            (f"vidq-{job.request_id}-{tag}-{f.index}-{f.sha256[:16]}.safetensors", f.scale,
             f.transformer)
            for f in job.loras
        ]  # fmt: skip
        template = wf.fill_loras(template, names, origin)
        staged = self._stage_loras(job, [name for name, _, _ in names])
        try:
            return self._run(job, report, previews, template, origin)
        finally:
            for path in staged:
                path.unlink(missing_ok=True)

    def _stage_loras(self, job: EngineJob, names: list[str]) -> list[Path]:
        """Put the job's LoRA files in ``lora_dir`` under ``names`` (a hard link when the
        cache is on the same file system, else a copy; written under a temporary name and
        renamed, so the server never reads half a file); the paths placed."""
        if not job.loras:
            return []
        if self.lora_dir is None:
            raise EngineUnavailable(
                "this worker's ComfyUI engine has no LoRA folder (VIDQ_COMFYUI_LORA_DIR); "
                "it cannot run requests with loras"
            )
        placed: list[Path] = []
        try:
            for lora, name in zip(job.loras, names, strict=True):
                target = self.lora_dir / name
                partial = self.lora_dir / f".{name}.partial"
                partial.unlink(missing_ok=True)
                try:
                    os.link(lora.path, partial)
                except OSError:
                    shutil.copyfile(lora.path, partial)
                os.replace(partial, target)
                placed.append(target)
        except OSError as exc:
            for path in placed:
                path.unlink(missing_ok=True)
            raise EngineUnavailable(
                f"cannot place the LoRAs in {self.lora_dir}: {type(exc).__name__}: {exc}"
            ) from exc
        return placed

    def _run(
        self,
        job: EngineJob,
        report: Report,
        previews: Previews,
        template: wf.Workflow,
        origin: str,
    ) -> EngineResult:
        deadline = time.monotonic() + self.job_timeout
        url = pick_server(
            self.urls,
            http_timeout=self.http_timeout,
            connect_wait=self.connect_wait,
            deadline=deadline,
        )
        session = ComfyUISession(
            url,
            deadline=deadline,
            job_timeout=self.job_timeout,
            http_timeout=self.http_timeout,
            history_poll=self.history_poll,
            connect_wait=self.connect_wait,
        )
        with session:
            uploads = {
                UPLOAD_FIELDS[field]: session.upload(job.request_id, field, Path(path))
                for field, path in sorted(job.files.items())
                if field in UPLOAD_FIELDS
            }
            if job.family == "foley" and "image" in uploads:
                uploads["video"] = uploads.pop("image")
            values = self._values(job, uploads)
            graph = wf.fill(template, values)
            graph = wf.fill_inputs(graph, list(job.options.get("inputs") or []), job.inputs)
            wf.check_graph(graph, origin)
            prompt_id = session.submit(graph)
            extra = {"job_id": job.request_id, "prompt_id": prompt_id}
            log.info("comfyui prompt queued on %s", display_url(url), extra=extra)
            try:
                try:
                    session.follow(prompt_id, report, previews)
                except (SystemExit, KeyboardInterrupt):
                    session.stop(prompt_id)
                    raise
                entry = session.history_entry(prompt_id)
                source = session.download_output(entry, wf.output_node_ids(graph))
                try:
                    self._write_output(source, Path(job.output_path))
                finally:
                    source.unlink(missing_ok=True)
            finally:
                session.forget(prompt_id)
        model = get_model(job.model_id)
        name = job.output_name or (model.output_name if model is not None else "ComfyUI")
        return EngineResult(
            name=name,
            meta={
                "engine": "comfyui",
                "server": display_url(url),
                "prompt_id": prompt_id,
                "workflow": Path(origin).name,
                "seed": values["seed"],
                "frames": values["frames"],
                "fps": FPS,
                **({"loras": lora_meta(job.loras)} if job.loras else {}),
            },
        )

    def _values(self, job: EngineJob, uploads: dict[str, str]) -> dict[str, Any]:
        inputs = job.inputs
        seed = inputs.get("seed")
        duration = int(inputs.get("duration") or 5)
        width, height = _target_size(job)
        negative = inputs.get("negative_prompt") or wf.DEFAULT_NEGATIVE_PROMPT
        return {
            "prompt": str(inputs.get("prompt") or ""),
            "negative_prompt": str(negative),
            "width": width,
            "height": height,
            "duration": duration,
            "frames": FPS * duration + 1,
            "fps": FPS,
            # a job queued before the submit drew every request's seed gets one here
            "seed": int(seed) if seed is not None else new_seed(),
            "steps": job.steps,
            "half_steps": max(1, job.steps // 2),
            "background_music": bool(inputs.get("background_music", False)),
            "filename_prefix": f"vidq/{job.request_id}",
            "request_id": job.request_id,
            "model_id": job.model_id,
            **uploads,
        }

    def _write_output(self, source: Path, output: Path) -> None:
        if is_browser_mp4(source):
            shutil.copyfile(source, output)
            return
        try:
            transcode_mp4(source, output)
        except (av.FFmpegError, ValueError) as exc:
            raise ComfyUIExecutionError(f"ComfyUI's output is not a readable video: {exc}") from exc


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _target_size(job: EngineJob) -> tuple[int, int]:
    """The request's width/height; for image jobs without them, the image's aspect at the
    requested (or default) height, rounded to multiples of 16."""
    inputs = job.inputs
    width, height = inputs.get("width"), inputs.get("height")
    if width and height:
        return int(width), int(height)
    image = job.files.get("data_uri") if job.family in ("i2v", "s2v") else None
    if image is None:
        return int(width or 1280), int(height or 720)
    try:
        with Image.open(image) as im:
            iw, ih = im.size
    except OSError as exc:
        raise EngineError(f"data_uri: the input image cannot be read: {exc}") from exc
    h = int(height or inputs.get("min_height") or min(ih, MAX_SIDE_DEFAULT))
    w = int(width or h * iw / ih)
    return max(16, round(w / 16) * 16), max(16, round(h / 16) * 16)
