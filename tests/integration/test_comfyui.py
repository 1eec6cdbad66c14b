"""The comfyui engine against a server speaking ComfyUI's protocol (tests/support/fake_comfyui.py):
each family end to end, progress, errors, a dropped websocket, a slow and a dead server;
and the worker path (the in-process stack with VIDQ_ENGINES=...=comfyui) turning each into the
right job state."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from tests.support.fake_comfyui import FakeComfyUI, preview_colour
from tests.support.media import probe_mp4, result_mp4
from tests.support.processes import free_port
from tests.support.stack import Stack, stack
from tests.support.wait import eventually, holds, until, wait_status
from vidq.blobs import open_storage
from vidq.compose import worker_options
from vidq.config import ComfyUISettings
from vidq.engines.base import EngineJob
from vidq.engines.comfyui import ComfyUIEngine
from vidq.engines.comfyui_client import (
    ComfyUIExecutionError,
    ComfyUIInterrupted,
    ComfyUIRejected,
    ComfyUITimeout,
    ComfyUIUnavailable,
    preview_frame,
)
from vidq.errors import EngineError, LeaseLost
from vidq.jobs import JobState, NewJob
from vidq.media.video import write_mp4
from vidq.ops.metrics import WorkerMetrics, serve_worker_metrics
from vidq.store import open_store
from vidq.worker import Worker, WorkerOptions
from vidq.worker.child import EngineFailed, EngineProcess
from vidq.worker.local import LocalSource


@pytest.fixture
def comfy(tmp_path: Path) -> Iterator[FakeComfyUI]:
    with FakeComfyUI(tmp_path / "comfy") as server:
        yield server


def _job(
    tmp_path: Path, family: str, model_id: str, files: dict[str, str] | None = None, **inputs: Any
) -> EngineJob:
    return EngineJob(
        request_id=7,
        model_id=model_id,
        family=family,
        variant="fast",
        inputs={"prompt": "a fox", "duration": 1, **inputs},
        files=files or {},
        output_path=str(tmp_path / f"out-{family}.mp4"),
        steps=4,
    )


def _png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> str:
    Image.new("RGB", size, color).save(path, format="PNG")
    return str(path)


def _wav(path: Path, seconds: float) -> str:
    rate = 16000
    t = np.arange(int(rate * seconds)) / rate
    data = (0.4 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(data.tobytes())
    return str(path)


def _engine(server: FakeComfyUI, **options: Any) -> ComfyUIEngine:
    settings = ComfyUISettings(urls=server.url, **{"connect_wait": 0, **options})
    return ComfyUIEngine(settings, history_poll=0.5)


def _run(engine: ComfyUIEngine, job: EngineJob) -> tuple[Any, list[tuple[int, int]]]:
    seen: list[tuple[int, int]] = []
    engine.load()
    result = engine.run(job, lambda k, n: seen.append((k, n)))
    return result, seen


# -- engine level: each family ------------------------------------------------------------
def test_t2v_runs_the_workflow_reports_progress_and_cleans_up(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    job = _job(
        tmp_path,
        "t2v",
        "wan22-fast-t2v",
        width=128,
        height=96,
        seed=1234,
        prompt='a "quoted" {{prompt}} fox',
    )
    result, seen = _run(_engine(comfy), job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (128, 96, 17)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert result.name == "WanVideo2_2_T2V"
    assert result.meta["seed"] == 1234 and result.meta["workflow"] == "t2v.json"
    # Both Wan 2.2 experts reported their steps: high noise 1..2, low noise 3..4 of 4.
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]
    (graph,) = comfy.prompts
    texts = [n["inputs"]["text"] for n in graph.values() if n["class_type"] == "CLIPTextEncode"]
    assert texts[0] == 'a "quoted" {{prompt}} fox'  # spliced as data, not re-templated
    assert result.meta["prompt_id"] in comfy.deleted and not comfy.history


class Shown:
    """``Previews`` that keeps what an engine shows (always due)."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, list[np.ndarray]]] = []

    def due(self) -> bool:
        return True

    def publish(self, frames: Any, step: int) -> None:
        self.frames.append((step, [np.asarray(f) for f in frames]))


@pytest.mark.parametrize("method", ["image", "metadata"])
def test_comfyuis_preview_images_are_shown_with_their_step(
    comfy: FakeComfyUI, tmp_path: Path, method: str
) -> None:
    comfy.preview_method = method
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=96, seed=1)
    engine = _engine(comfy)
    engine.load()
    shown = Shown()
    engine.run(job, lambda k, n: None, shown)
    assert comfy.previews_sent == 4
    assert [step for step, _ in shown.frames] == [1, 2, 3, 4]
    for step, (frame,) in shown.frames:
        assert frame.shape == (32, 48, 3)
        assert np.abs(frame[16, 24].astype(int) - preview_colour(step)).max() <= 8  # a JPEG


def test_no_previews_without_comfyuis_preview_method(comfy: FakeComfyUI, tmp_path: Path) -> None:
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=96, seed=1)
    engine = _engine(comfy)
    engine.load()
    shown = Shown()
    engine.run(job, lambda k, n: None, shown)
    assert comfy.previews_sent == 0 and shown.frames == []


def test_preview_messages_that_are_not_ours_or_not_images_are_ignored() -> None:
    jpeg = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(jpeg, format="JPEG")
    meta = json.dumps({"prompt_id": "other"}).encode()
    assert preview_frame(struct.pack(">II", 4, len(meta)) + meta + jpeg.getvalue(), "p1") is None
    assert preview_frame(struct.pack(">II", 3, 1) + b"text", "p1") is None  # not a preview
    assert preview_frame(struct.pack(">II", 1, 1) + b"not a jpeg", "p1") is None
    assert preview_frame(b"\x00\x00", "p1") is None
    frame = preview_frame(struct.pack(">II", 1, 1) + jpeg.getvalue(), "p1")
    assert frame is not None and frame.shape == (8, 8, 3)


def test_i2v_and_first_last_frame_upload_their_images(comfy: FakeComfyUI, tmp_path: Path) -> None:
    first = _png(tmp_path / "first", (250, 10, 10))
    last = _png(tmp_path / "last", (10, 10, 250))
    job = _job(tmp_path, "i2v", "wan22-fast-i2v", {"data_uri": first}, height=128)
    _run(_engine(comfy), job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (192, 128, 17)  # the image's 3:2 aspect
    flf = _job(
        tmp_path,
        "i2v",
        "wan22-fast-i2v",
        {"data_uri": first, "second_image_uri": last},
        width=128,
        height=128,
    )
    flf = dataclasses.replace(flf, output_path=str(tmp_path / "flf.mp4"))
    result, _ = _run(_engine(comfy), flf)
    assert result.meta["workflow"] == "flf2v.json"
    assert "WanFirstLastFrameToVideo" in {n["class_type"] for n in comfy.prompts[-1].values()}
    frames = _frames(Path(flf.output_path))
    assert frames[0][..., 0].mean() > 200 and frames[-1][..., 2].mean() > 200  # red -> blue


def test_s2v_in_the_engine_child_keeps_the_input_audio(comfy: FakeComfyUI, tmp_path: Path) -> None:
    files = {
        "data_uri": _png(tmp_path / "face", (200, 180, 160)),
        "audio_uri": _wav(tmp_path / "voice", 1.2),
    }
    job = _job(tmp_path, "s2v", "wan22-s2v-fast", files, width=128, height=128)
    proc = EngineProcess("comfyui", ComfyUISettings(urls=comfy.url, connect_wait=0))
    seen: list[tuple[int, int]] = []
    try:
        result = proc.run(job, lambda k, n: seen.append((k, n)), lambda: False)
    finally:
        proc.stop()
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (128, 128, 17)
    assert info.audio_codec == "aac" and info.audio_duration and info.audio_duration > 1.0
    assert result.name == "WanVideo2_2_S2V" and seen[-1] == (4, 4)
    kinds = {n["class_type"] for n in comfy.prompts[0].values()}
    assert {"WanSoundImageToVideo", "AudioEncoderEncode", "LoadAudio"} <= kinds


def test_foley_adds_sound_to_the_input_video(comfy: FakeComfyUI, tmp_path: Path) -> None:
    src = tmp_path / "silent.mp4"
    frames = [np.full((64, 96, 3), 20 * k, np.uint8) for k in range(12)]
    write_mp4(src, iter(frames), width=96, height=64, fps=12)
    job = _job(tmp_path, "foley", "hunyuan-foley", {"data_uri": str(src)})
    result, seen = _run(_engine(comfy), job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.width, info.height, info.frames) == (96, 64, 12)
    assert info.audio_codec == "aac" and info.audio_duration and info.audio_duration > 0.9
    assert result.name == "HunyuanFoley" and seen[-1] == (4, 4)
    loader = next(n for n in comfy.prompts[0].values() if n["class_type"] == "LoadVideo")
    assert loader["inputs"]["file"].endswith(".mp4")


def test_a_non_h264_output_is_reencoded(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.codec = "mpeg4"
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    _run(_engine(comfy), job)
    info = probe_mp4(Path(job.output_path).read_bytes(), tmp_path)
    assert (info.codec, info.pix_fmt, info.frames) == ("h264", "yuv420p", 17)


def test_operator_workflow_per_model_id(comfy: FakeComfyUI, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    shipped = Path(__file__).parents[2] / "src/vidq/engines/workflows/t2v.json"
    text = shipped.read_text().replace('"cfg": 1.0', '"cfg": 3.5')
    (folder / "wan22-fast-t2v-pro.json").write_text(text)
    job = _job(tmp_path, "t2v", "wan22-fast-t2v-pro", width=128, height=128)
    result, _ = _run(_engine(comfy, workflows_dir=str(folder)), job)
    assert result.meta["workflow"] == "wan22-fast-t2v-pro.json"
    cfgs = {n["inputs"]["cfg"] for n in comfy.prompts[0].values() if "cfg" in n["inputs"]}
    assert cfgs == {3.5}


# -- engine level: failures ----------------------------------------------------------------
def test_execution_error_carries_comfyuis_message(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.mode = "error"
    with pytest.raises(ComfyUIExecutionError, match="mat1 and mat2 shapes cannot be multiplied"):
        _run(_engine(comfy), _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128))
    assert comfy.deleted  # the failed prompt's history is cleaned up too


def test_out_of_memory_is_retryable(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.mode = "oom"
    with pytest.raises(ComfyUIInterrupted, match="OutOfMemoryError"):
        _run(_engine(comfy), _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128))


def test_a_missing_node_pack_is_rejected_with_comfyuis_reason(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    folder = tmp_path / "wf"
    folder.mkdir()
    shipped = Path(__file__).parents[2] / "src/vidq/engines/workflows/t2v.json"
    (folder / "t2v.json").write_text(shipped.read_text().replace("VAEDecode", "VAEDecodeTiledX"))
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    with pytest.raises(ComfyUIRejected, match="node VAEDecodeTiledX does not exist"):
        _run(_engine(comfy, workflows_dir=str(folder)), job)


def test_websocket_dropped_mid_job_reconnects_and_completes(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.mode = "drop_ws"
    comfy.step_delay = 0.1
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    _run(_engine(comfy), job)
    assert comfy.ws_connects >= 2
    assert probe_mp4(Path(job.output_path).read_bytes(), tmp_path).frames == 17


def test_an_error_while_the_websocket_is_down_is_read_from_history(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.mode = "drop_ws_error"
    comfy.step_delay = 0.2
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    with pytest.raises(ComfyUIExecutionError, match="failed while nobody was listening"):
        _run(_engine(comfy), job)


def test_a_server_restart_mid_job_loses_the_prompt_and_is_retryable(tmp_path: Path) -> None:
    first = FakeComfyUI(tmp_path / "a").start()
    first.mode, first.step_delay = "slow", 0.5
    port = first.port
    replacement: list[FakeComfyUI] = []

    def restart() -> None:
        while not first.prompts:
            time.sleep(0.02)
        time.sleep(0.3)
        first.stop()
        replacement.append(FakeComfyUI(tmp_path / "b", port=port).start())

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
        with pytest.raises(ComfyUIUnavailable, match="no longer on ComfyUI"):
            _run(_engine(first, connect_wait=10), job)  # back within CONNECT_WAIT
    finally:
        thread.join(10)
        first.stop()
        for server in replacement:
            server.stop()
    assert replacement and replacement[0].ws_connects >= 1


def test_a_server_that_dies_mid_job_fails_the_attempt_within_connect_wait(
    tmp_path: Path,
) -> None:
    """Killed mid-job and never back: the attempt fails (retryable) once no server answered
    for CONNECT_WAIT, not at the job timeout of an hour."""
    server = FakeComfyUI(tmp_path / "a").start()
    server.mode, server.step_delay = "slow", 0.5
    killed: list[float] = []

    def kill() -> None:
        while not server.prompts:
            time.sleep(0.02)
        time.sleep(0.3)
        server.stop()
        killed.append(time.monotonic())

    thread = threading.Thread(target=kill)
    thread.start()
    try:
        job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
        engine = _engine(server, connect_wait=3, job_timeout=3600)
        with pytest.raises(ComfyUIUnavailable, match=r"did not come back within 3 s"):
            _run(engine, job)
        failed_after = time.monotonic() - killed[0]
    finally:
        thread.join(10)
        server.stop()
    # The whole CONNECT_WAIT (the drop is seen while the server stops, a little before
    # ``killed``), plus at most one history poll (0.5 s here) and the last try.
    assert 3 - 0.5 <= failed_after < 3 + 2.5, failed_after
    assert not isinstance(ComfyUIUnavailable("x"), EngineError)  # so the worker retries it


def test_a_prompt_whose_answer_was_lost_is_removed_from_the_server(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """``POST /prompt`` queued the prompt but its answer came after ``http_timeout``: vidq
    chose the prompt id, so the prompt is interrupted and its history removed before the
    attempt fails (retryable); nothing is left running on the server for nobody."""
    comfy.mode, comfy.step_delay = "slow", 0.5
    comfy.prompt_answer_delay = 2.0
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    with pytest.raises(ComfyUIUnavailable, match=r"did not answer POST /prompt within 0\.5 s"):
        _run(_engine(comfy, http_timeout=0.5), job)
    (pid,) = comfy.prompt_ids
    assert pid in comfy.deleted
    assert pid in comfy.dequeued or comfy.interrupts == 1
    if pid in comfy.dequeued:  # still queued (a busy machine): removed, it never runs
        assert comfy.interrupts == 0 and pid not in comfy.ended  # never ran
        return
    # The history entry may be gone already (deleted after the interrupted prompt ended).
    ended = eventually(lambda: comfy.ended.get(pid), 10, what="the interrupted prompt to end")
    assert ended == "error"  # interrupted, not run out


def test_slow_execution_times_out_and_is_interrupted(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.mode = "slow"
    comfy.step_delay = 1.0
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    with pytest.raises(ComfyUITimeout, match=r"did not finish prompt .* within 1\.5 s"):
        _run(_engine(comfy, job_timeout=1.5), job)
    assert comfy.interrupts == 1


def test_a_lost_lease_interrupts_the_prompt_on_the_server(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    comfy.mode, comfy.step_delay = "slow", 1.0
    proc = EngineProcess("comfyui", ComfyUISettings(urls=comfy.url, connect_wait=0))
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    seen: list[tuple[int, int]] = []
    try:
        with pytest.raises(LeaseLost):
            proc.run(job, lambda k, n: seen.append((k, n)), lambda: bool(seen))
    finally:
        proc.stop()
    deadline = time.monotonic() + 10
    while comfy.interrupts < 1:
        assert time.monotonic() < deadline, "the orphaned prompt was not interrupted"
        time.sleep(0.05)
    assert comfy.deleted  # and its history entry removed


def test_slow_http_answers_time_out(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.mode = "slow_http"
    comfy.http_delay = 2.0
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    with pytest.raises(ComfyUIUnavailable, match="no answer in time"):
        _run(_engine(comfy, http_timeout=0.5), job)


def test_server_down_is_retryable_through_the_engine_child(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    proc = EngineProcess("comfyui", ComfyUISettings(urls=url, connect_wait=0.5))
    job = _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128)
    try:
        with pytest.raises(EngineFailed) as failed:
            proc.run(job, lambda k, n: None, lambda: False)
    finally:
        proc.stop()
    assert failed.value.retryable and failed.value.error_type == "ComfyUIUnavailable"
    assert failed.value.down  # unreachable: the worker holds the engine down
    assert "connection refused" in failed.value.message


def test_farm_skips_a_dead_server(comfy: FakeComfyUI, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    engine = ComfyUIEngine(ComfyUISettings(urls=f"{dead},{comfy.url}", connect_wait=0))
    result, _ = _run(engine, _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128))
    assert result.meta["server"] == comfy.url


# -- the worker path ---------------------------------------------------------------------
T2V = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
ENGINES = "wan22-t2v=comfyui,wan22-i2v=comfyui,wan22-s2v=comfyui,hunyuan-foley=comfyui"


def test_worker_completes_a_t2v_job_through_comfyui(comfy: FakeComfyUI, tmp_path: Path) -> None:
    with stack(tmp_path / "data", engines=ENGINES, comfyui_url=comfy.url) as server:
        client = server.client(server.token("alice"))
        comfy.step_delay = 0.4
        rid = client.post("/queue/wan22-fast-t2v", json={**T2V, "seed": 5}).json()["request_id"]
        running = wait_status(client, "wan22-fast-t2v", rid, {"IN_PROGRESS"})
        messages = set()
        while running["status"] == "IN_PROGRESS":
            messages.add(running["statusMessages"]["detail_message"])
            time.sleep(0.1)
            running = client.get(f"/queue/wan22-fast-t2v/requests/{rid}/status").json()
        assert {"Progress: 2/4 Tasks done", "Progress: 3/4 Tasks done"} <= messages, messages
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
        info = probe_mp4(result_mp4(client, "wan22-fast-t2v", rid), tmp_path)
        assert (info.width, info.height, info.frames, info.codec) == (128, 128, 17, "h264")
    (graph,) = comfy.prompts
    assert {n["inputs"].get("noise_seed") for n in graph.values()} >= {5}


def test_worker_uses_the_operators_workflow_folder(comfy: FakeComfyUI, tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    shipped = Path(__file__).parents[2] / "src/vidq/engines/workflows/t2v.json"
    (folder / "wan22-fast-t2v.json").write_text(shipped.read_text().replace("euler", "uni_pc"))
    settings = {"engines": ENGINES, "comfyui_url": comfy.url, "comfyui_workflows_dir": folder}
    with stack(tmp_path / "data", **settings) as server:
        client = server.client(server.token("alice"))
        rid = client.post("/queue/wan22-fast-t2v", json=T2V).json()["request_id"]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
    (graph,) = comfy.prompts
    samplers = {
        n["inputs"]["sampler_name"] for n in graph.values() if "sampler_name" in n["inputs"]
    }
    assert samplers == {"uni_pc"}


def test_worker_fails_the_job_with_comfyuis_error(comfy: FakeComfyUI, tmp_path: Path) -> None:
    comfy.mode = "error"
    with stack(tmp_path / "data", engines=ENGINES, comfyui_url=comfy.url) as server:
        client = server.client(server.token("alice"))
        rid = client.post("/queue/wan22-fast-t2v", json=T2V).json()["request_id"]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "FAILED"
        body = client.get(f"/queue/wan22-fast-t2v/requests/{rid}").json()
        assert "mat1 and mat2 shapes cannot be multiplied" in str(body)
    assert len(comfy.prompts) == 1  # a workflow error is final: not retried


# -- an engine that says when it is down ----------------------------------------------
DOWN = {
    "engines": ENGINES, "comfyui_connect_wait": 0.5, "engine_probe_seconds": 0.2,
    "engine_probe_max_seconds": 1.0, "lease_seconds": 5,
}  # fmt: skip


@contextlib.contextmanager
def _watched_worker(server: Stack) -> Iterator[tuple[Worker, str, CollectorRegistry]]:
    """A worker on the stack's settings, as `vidq worker --metrics-port` runs one: its
    ``/health`` and ``/metrics`` served on a loopback port (the URL yielded)."""
    registry = CollectorRegistry()
    options = worker_options(server.settings, name="gpu-box")
    worker = Worker(
        LocalSource(server.store, server.storage), options, WorkerMetrics(registry),
        reaper=server.store,
    )  # fmt: skip
    port = free_port()
    serve_worker_metrics(registry, port, host="127.0.0.1", unhealthy=worker.unhealthy)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker, f"http://127.0.0.1:{port}", registry
    finally:
        worker.stop(drain=False)
        thread.join(30)


def _health(url: str) -> httpx.Response:
    return httpx.get(f"{url}/health", timeout=5)


def _shown(server: Stack, name: str = "gpu-box") -> dict[str, Any]:
    admin = server.client(server.admin_token)
    rows = {w["name"]: w for w in admin.get("/admin/workers").json()["workers"]}
    return rows.get(name, {})


def test_a_worker_holds_its_engine_down_while_comfyui_is_down(tmp_path: Path) -> None:
    """ComfyUI killed and left down: the job that meets it is given back unspent, the
    worker says engine_down (``/health`` 503 with the reason, ``vidq_worker_engine_up`` 0,
    ``/admin/workers``), claims nothing and probes; the job stays queued with its attempt
    count still. ComfyUI back: the worker recovers and the job completes."""
    comfy = FakeComfyUI(tmp_path / "comfy").start()
    up = {"slot": "cpu", "engine": "comfyui"}
    with (
        stack(tmp_path / "data", workers=0, comfyui_url=comfy.url, **DOWN) as server,
        _watched_worker(server) as (worker, url, registry),
    ):
        client = server.client(server.token("alice"))
        eventually(lambda: _health(url).status_code == 200, 30, what="the worker to be healthy")
        assert registry.get_sample_value("vidq_worker_engine_up", up) == 1
        assert _shown(server)["state"] == "ready"

        comfy.stop()
        killed = time.monotonic()
        rid = client.post("/queue/wan22-fast-t2v", json=T2V).json()["request_id"]
        down = until(lambda: _health(url), lambda r: r.status_code == 503, 30,
                     what="/health to say the engine is down")  # fmt: skip
        detected = time.monotonic() - killed
        assert down.json()["detail"].startswith("gpu-box: engine comfyui down: ")
        assert "connection refused" in down.json()["detail"]
        assert registry.get_sample_value("vidq_worker_engine_up", up) == 0
        shown = eventually(lambda: (w := _shown(server))["state"] == "engine_down" and w,
                           10, what="/admin/workers to say engine_down")  # fmt: skip
        assert "ComfyUI" in shown["state_reason"] and shown["current_job"] is None

        def queued_once() -> bool:
            job = server.store.get(int(rid))
            return job is not None and job.state is JobState.RETRY and job.attempt == 1

        eventually(queued_once, 10, what="the job to be given back")
        # Several probes go by (0.2 s doubling to 1 s): no claim, no attempt spent.
        holds(queued_once, 3.0, what="the job to stay queued, its attempt unspent")
        status = client.get(f"/queue/wan22-fast-t2v/requests/{rid}/status").json()
        assert status["status"] == "IN_QUEUE"

        with FakeComfyUI(tmp_path / "comfy-again", port=comfy.port) as again:
            restarted = time.monotonic()
            eventually(lambda: _health(url).status_code == 200, 30, what="the worker to recover")
            recovered = time.monotonic() - restarted
            assert registry.get_sample_value("vidq_worker_engine_up", up) == 1
            done = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
            assert done["status"] == "COMPLETED", done
            assert len(again.prompts) == 1
            shown = _shown(server)
            assert shown["state"] == "ready" and shown["state_reason"] is None
        job = server.store.get(int(rid))
        assert job is not None and job.attempt == 2 and worker.down == {}
    print(f"\nComfyUI killed -> worker /health 503: {detected:.2f} s (a job submitted at the "
          f"kill, connect wait 0.5 s); restarted -> /health 200: {recovered:.2f} s "
          "(probes 0.2 s doubling to 1 s)")  # fmt: skip


def test_an_idle_worker_notices_comfyui_gone_without_a_job(tmp_path: Path) -> None:
    """No job meets the dead server: the idle worker's own probe (every
    ``engine_probe_max_seconds``, here 1 s) reports it, and its recovery too."""
    comfy = FakeComfyUI(tmp_path / "comfy").start()
    with (
        stack(tmp_path / "data", workers=0, comfyui_url=comfy.url, **DOWN) as server,
        _watched_worker(server) as (worker, url, _registry),
    ):
        eventually(lambda: _health(url).status_code == 200, 30, what="the worker to be healthy")
        comfy.stop()
        killed = time.monotonic()
        down = until(lambda: _health(url), lambda r: r.status_code == 503, 30,
                     what="/health to say the engine is down")  # fmt: skip
        detected = time.monotonic() - killed
        assert "engine comfyui down" in down.json()["detail"]
        eventually(lambda: _shown(server)["state"] == "engine_down", 10, what="engine_down")
        with FakeComfyUI(tmp_path / "comfy-again", port=comfy.port):
            eventually(lambda: _health(url).status_code == 200, 30, what="the worker to recover")
            assert worker.down == {}
        assert server.store.get(1) is None  # no job was needed to find out
    print(f"\nComfyUI killed, idle worker -> /health 503: {detected:.2f} s (probes every 1 s)")


def test_a_worker_that_starts_with_comfyui_down_says_so_before_its_first_claim(
    tmp_path: Path,
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with stack(tmp_path / "data", workers=0, comfyui_url=dead, **DOWN) as server:
        client = server.client(server.token("alice"))
        rid = client.post("/queue/wan22-fast-t2v", json=T2V).json()["request_id"]
        with _watched_worker(server) as (_, url, _):
            shown = eventually(lambda: (w := _shown(server)).get("state") == "engine_down" and w,
                               30, what="/admin/workers to say engine_down")  # fmt: skip
            assert "no ComfyUI server answered" in shown["state_reason"]
            assert _health(url).status_code == 503
            holds(lambda: server.store.get(int(rid)).attempt == 0, 1.0, what="no claim")  # type: ignore[union-attr]
        assert _shown(server)["state"] == "stopped"  # said by the loop's end


def test_an_engine_child_that_fails_to_start_again_and_again_is_held_down(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """Its load raises (a workflows folder that does not exist) at warm-up and on two jobs'
    claims in a row: the engine is held down with the load's error, the job is given back
    unspent each time (it never fails), and a probe that starts the child again brings it
    back once the folder is there."""
    folder = tmp_path / "workflows"
    settings = {**DOWN, "comfyui_url": comfy.url, "comfyui_workflows_dir": folder,
                "max_attempts": 1}  # fmt: skip
    with (
        stack(tmp_path / "data", workers=0, **settings) as server,
        _watched_worker(server) as (_, url, registry),
    ):
        client = server.client(server.token("alice"))
        rid = client.post("/queue/wan22-fast-t2v", json=T2V).json()["request_id"]
        down = until(lambda: _health(url), lambda r: r.status_code == 503 and "down" in r.text,
                     30, what="the engine to be held down")  # fmt: skip
        assert "failed to load" in down.json()["detail"]
        assert f"workflows folder {folder} does not exist" in down.json()["detail"]
        assert registry.get_sample_value(
            "vidq_worker_engine_up", {"slot": "cpu", "engine": "comfyui"}
        ) == 0  # fmt: skip
        shown = _shown(server)
        assert shown["state"] == "engine_down" and "does not exist" in shown["state_reason"]
        job = server.store.get(int(rid))
        # warm-up, then two claims: three failed starts in a row, none spent an attempt
        assert job is not None and job.state is JobState.RETRY and job.attempt == 2
        holds(lambda: server.store.get(int(rid)).attempt == 2, 1.0, what="no more claims")  # type: ignore[union-attr]
        folder.mkdir()
        done = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"}, timeout=60)
        assert done["status"] == "COMPLETED", done
        assert _health(url).status_code == 200


def _frames(path: Path) -> list[Any]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# -- the worker path with input media (blobs), in-process worker + engine child --------
def _worker_run(
    tmp_path: Path,
    comfy: FakeComfyUI,
    model_id: str,
    pool: str,
    blobs: dict[str, Path],
    inputs: dict[str, Any],
) -> tuple[Any, Any]:
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    storage = open_storage(f"file://{tmp_path / 'blobs'}", secret=b"k" * 32)
    keys = {}
    for field, path in blobs.items():
        keys[field] = f"inputs/{field}"
        storage.put_file(keys[field], path, "application/octet-stream")
    job = store.enqueue(
        NewJob(
            user="alice",
            model_id=model_id,
            pool=pool,
            tier=0,
            priority=0,
            inputs={**inputs, "_blobs": keys},
        )
    )
    options = WorkerOptions(
        pools=(pool,),
        engines={pool: "comfyui"},
        burst=True,
        engine_settings={"comfyui": ComfyUISettings(urls=comfy.url, connect_wait=0)},
    )
    try:
        assert Worker(LocalSource(store, storage), options, reaper=store).run() == 1
        done = store.get(job.id)
        assert done is not None
        video = storage.get_bytes(done.result_key) if done.result_key else b""
    finally:
        store.close()
    return done, video


def test_worker_runs_s2v_with_its_input_blobs(comfy: FakeComfyUI, tmp_path: Path) -> None:
    face = Path(_png(tmp_path / "face.png", (90, 160, 220), (128, 128)))
    voice = Path(_wav(tmp_path / "voice.wav", 2.0))
    done, video = _worker_run(
        tmp_path,
        comfy,
        "wan22-s2v-fast",
        "wan22-s2v",
        {"data_uri": face, "audio_uri": voice},
        {"prompt": "a person talking", "duration": 2, "width": 128, "height": 128},
    )
    assert done.state.value == "COMPLETED", done.error
    info = probe_mp4(video, tmp_path)
    assert (info.width, info.height, info.frames) == (128, 128, 33)
    assert info.audio_codec == "aac" and info.audio_duration and info.audio_duration > 1.9
    assert done.result_meta["engine"] == "comfyui"
    assert done.result_meta["workflow"] == "s2v.json" and done.result_key.endswith(".mp4")


def test_worker_runs_foley_and_fails_cleanly_on_comfyui_errors(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    clip = tmp_path / "clip.mp4"
    write_mp4(
        clip,
        iter([np.full((64, 64, 3), 9 * k, np.uint8) for k in range(16)]),
        width=64,
        height=64,
        fps=16,
    )
    done, video = _worker_run(
        tmp_path / "a",
        comfy,
        "hunyuan-foley",
        "hunyuan-foley",
        {"data_uri": clip},
        {"prompt": "footsteps on gravel"},
    )
    assert done.state.value == "COMPLETED", done.error
    info = probe_mp4(video, tmp_path)
    assert (info.frames, info.audio_codec) == (16, "aac")
    comfy.mode = "error"
    failed, _ = _worker_run(
        tmp_path / "b",
        comfy,
        "hunyuan-foley",
        "hunyuan-foley",
        {"data_uri": clip},
        {"prompt": "footsteps on gravel"},
    )
    assert failed.state.value == "FAILED" and failed.attempt == 1
    assert "HunyuanVideoFoleyGenerateAudio" in (failed.error or "")


# -- LoRAs ---------------------------------------------------------------------------------
def _lora(tmp_path: Path, name: str, data: bytes, index: int, scale: float, expert: str) -> Any:
    import hashlib

    from vidq.engines.base import LoraFile

    path = tmp_path / name
    path.write_bytes(data)
    sha = hashlib.sha256(data).hexdigest()
    return LoraFile(index, f"loras[{index}] (https://h/{name})", str(path), sha, len(data),
                    scale, expert)  # fmt: skip


def test_loras_fill_the_templates_slots_and_leave_nothing_behind(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    both = _lora(tmp_path, "both.safetensors", b"both" * 100, 0, 0.6, "both")
    low = _lora(tmp_path, "low.safetensors", b"low" * 100, 1, 1.25, "low")
    job = dataclasses.replace(
        _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128), loras=[both, low]
    )
    result, _ = _run(_engine(comfy, lora_dir=str(comfy.lora_dir)), job)
    (graph,) = comfy.prompts
    tag = graph["30"]["inputs"]["lora_name"].split("-")[2]  # the attempt's own
    name0 = f"vidq-7-{tag}-0-{both.sha256[:16]}.safetensors"
    name1 = f"vidq-7-{tag}-1-{low.sha256[:16]}.safetensors"

    def lora_node(nid: str) -> tuple[Any, ...]:
        i = graph[nid]["inputs"]
        return graph[nid]["class_type"], i["model"], i["lora_name"], i["strength_model"]

    # high-noise chain: Lightning (3) -> the "both" LoRA (the slot, 30) -> sampling (5)
    assert lora_node("30") == ("LoraLoaderModelOnly", ["3", 0], name0, 0.6)
    assert graph["5"]["inputs"]["model"] == ["30", 0]
    # low-noise chain: Lightning (4) -> "both" (31) -> "low" (31_lora1) -> sampling (6)
    assert lora_node("31") == ("LoraLoaderModelOnly", ["4", 0], name0, 0.6)
    assert lora_node("31_lora1") == ("LoraLoaderModelOnly", ["31", 0], name1, 1.25)
    assert graph["6"]["inputs"]["model"] == ["31_lora1", 0]
    # the server found the files, whole, when the prompt was queued; they are gone now
    assert comfy.lora_files == {name0: b"both" * 100, name1: b"low" * 100}
    assert list(comfy.lora_dir.iterdir()) == []
    assert result.meta["loras"][1] == {
        "sha256": low.sha256, "bytes": 300, "scale": 1.25, "transformer": "low"
    }  # fmt: skip


def test_without_loras_the_slots_are_bypassed(comfy: FakeComfyUI, tmp_path: Path) -> None:
    _run(_engine(comfy), _job(tmp_path, "t2v", "wan22-fast-t2v", width=128, height=128))
    (graph,) = comfy.prompts
    assert "30" not in graph and "31" not in graph
    assert graph["5"]["inputs"]["model"] == ["3", 0] and graph["6"]["inputs"]["model"] == ["4", 0]


def test_loras_without_a_slot_or_a_lora_folder_fail_the_job_clearly(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    import json

    folder = tmp_path / "workflows"
    folder.mkdir()
    shipped = json.loads(
        (Path(__file__).parents[2] / "src/vidq/engines/workflows/s2v.json").read_text()
    )
    (folder / "t2v.json").write_text(json.dumps(shipped))  # a valid graph without a slot
    lora = _lora(tmp_path, "a.safetensors", b"a" * 10, 0, 1.0, "high")
    job = dataclasses.replace(_job(tmp_path, "t2v", "wan22-fast-t2v"), loras=[lora])
    proc = EngineProcess(
        "comfyui",
        ComfyUISettings(urls=comfy.url, workflows_dir=folder, lora_dir=comfy.lora_dir),
        ["wan22-t2v"],
    )
    proc.start()
    try:
        with pytest.raises(EngineFailed) as err:
            proc.run(job, lambda _k, _n: None, lambda: False)
        assert not err.value.retryable
        assert "workflow" in err.value.message and "has no LoRA slot" in err.value.message
    finally:
        proc.stop()
    with pytest.raises(EngineError, match="no LoRA folder"):
        _run(_engine(comfy), job)
    assert comfy.prompts == []


def test_worker_fetches_a_lora_and_comfyui_gets_it_in_its_slot(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    from tests.support.loopback import loopback_http

    data = b"lora bytes" * 1000
    settings = {
        "engines": ENGINES, "comfyui_url": comfy.url, "comfyui_lora_dir": comfy.lora_dir,
        "fetch_allow_http": "true", "fetch_allow_networks": "127.0.0.1/32",
    }  # fmt: skip
    with (
        loopback_http({"/l.safetensors": (200, {}, data)}) as (base, _hits),
        stack(tmp_path / "data", **settings) as server,
    ):
        client = server.client(server.token("alice"))
        loras = [{"path": f"{base}/l.safetensors", "scale": 0.5, "transformer": "high"}]
        rid = client.post("/queue/wan22-fast-t2v", json={**T2V, "loras": loras}).json()[
            "request_id"
        ]
        status = wait_status(client, "wan22-fast-t2v", rid, {"COMPLETED", "FAILED"})
        assert status["status"] == "COMPLETED", status
    (graph,) = comfy.prompts
    (name,) = comfy.lora_files
    assert comfy.lora_files[name] == data
    assert graph["30"]["inputs"]["lora_name"] == name and "31" not in graph
    assert graph["30"]["inputs"]["strength_model"] == 0.5
    assert list(comfy.lora_dir.iterdir()) == []


def test_a_burst_worker_whose_comfyui_is_down_exits_and_leaves_the_job_queued(
    tmp_path: Path,
) -> None:
    """A worker that drains the queue and exits cannot wait for a dead server: it gives the
    job it met back (unspent) and ends (`vidq worker --burst` exits 3: operations.md)."""
    store = open_store(f"sqlite:///{tmp_path / 'vidq.db'}")
    storage = open_storage(f"file://{tmp_path / 'blobs'}", secret=b"k" * 32)
    dead = f"http://127.0.0.1:{free_port()}"
    job = store.enqueue(NewJob("alice", "wan22-fast-t2v", "wan22-t2v", 0, 0, dict(T2V)))
    options = WorkerOptions(
        pools=("wan22-t2v",), engines={"wan22-t2v": "comfyui"}, burst=True,
        engine_settings={"comfyui": ComfyUISettings(urls=dead, connect_wait=0)},
    )  # fmt: skip
    worker = Worker(LocalSource(store, storage), options, reaper=store)
    try:
        started = time.monotonic()
        worker.run()  # the one attempt it took, given back
        assert time.monotonic() - started < 30
        assert set(worker.down) == {"comfyui"}
        back = store.get(job.id)
        assert back is not None and back.state.queued and back.error is None
    finally:
        store.close()
