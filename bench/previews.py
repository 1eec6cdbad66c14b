"""What live previews cost a Wan job: the CPU-tiny T2V pipeline, with a sleep per denoising
step standing in for a GPU step, run without previews and with them (alternately,
``--repeats`` times each) at the default interval (``VIDQ_PREVIEW_INTERVAL``, 2 s),
through ``wan_pipeline.generate`` (the code the engine runs) and the preview writer the
engine child uses.

    python bench/previews.py                      # 160x128, 81 frames, 4 steps of 3 s
    python bench/previews.py --step-seconds 1 --interval 0.5

The tiny transformer's rotary table holds small grids only (160x128), so the bench also
times one preview made from latents of a full-size job (1280x720, 81 frames: 16 x 21 x 90
x 160), the projection and the WebP, which is what a GPU worker pays per preview.

Prints one JSON line and the share of the job's time spent on previews: the writer's own
count (from the engine asking whether one is due to the WebP written), and the difference
in wall time between the two runs (noisier: a shared machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the random-weight builders

import torch
from tests.support.wan_models import build_pipeline, configs

from vidq.catalog import FPS
from vidq.engines.base import NO_PREVIEWS, Previews
from vidq.engines.previews import PreviewWriter
from vidq.engines.wan_pipeline import PipelineOptions, Request, generate, offline, prepare_pipeline
from vidq.engines.wan_preview import LATENT_FPS, latent_rgb


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--duration", type=int, default=5, help="seconds; 16*d+1 frames")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--step-seconds", type=float, default=3.0, help="sleep per step (a GPU step)")
    p.add_argument("--interval", type=float, default=2.0, help="VIDQ_PREVIEW_INTERVAL")
    p.add_argument("--repeats", type=int, default=3, help="runs of each, alternated")
    return p.parse_args()


def one_run(pipe: Any, req: Request, step_s: float, previews: Previews) -> float:
    started = time.perf_counter()
    generate(pipe, req, lambda _done: time.sleep(step_s), previews)
    return time.perf_counter() - started


def main() -> int:
    args = parse()
    offline()
    torch.set_num_threads(1)
    pipe = build_pipeline("t2v", configs("t2v", tiny=True), dtype=torch.float32)
    pipe = prepare_pipeline(
        pipe, PipelineOptions(device="cpu", dtype="float32"), lora=None, fp8=False
    )
    req = Request(
        prompt="a dog walks on the sea", negative_prompt=None, width=args.width,
        height=args.height, num_frames=FPS * args.duration + 1, steps=args.steps, guidance=1.0,
        seed=0,
    )  # fmt: skip
    one_run(pipe, req, 0.0, NO_PREVIEWS)  # warm-up: the first run pays one-time costs
    with tempfile.TemporaryDirectory() as tmp:
        sent: list[int] = []
        # Alternated, so that a noisy neighbour weighs on both: the medians are compared.
        plain, shown = [], []
        for _ in range(args.repeats):
            plain.append(one_run(pipe, req, args.step_seconds, NO_PREVIEWS))
            writer = PreviewWriter(str(Path(tmp) / "preview.webp"), args.interval, sent.append)
            shown.append(one_run(pipe, req, args.step_seconds, writer))
        plain_s, shown_s = statistics.median(plain), statistics.median(shown)
        size = (Path(tmp) / "preview.webp").stat().st_size if sent else 0
        latents = torch.randn(1, 16, 21, 90, 160)
        for _ in range(2):  # the second is timed: the first pays the encoder's start-up
            full = PreviewWriter(str(Path(tmp) / "full.webp"), 1e-9, sent.append)
            while not full.due():
                time.sleep(0.001)
            full.publish(latent_rgb(latents), 1, LATENT_FPS)
        full_bytes = (Path(tmp) / "full.webp").stat().st_size
    row = {
        "size": f"{args.width}x{args.height}", "frames": req.num_frames, "steps": req.steps,
        "step_seconds": args.step_seconds, "interval_s": args.interval,
        "run_without_previews_s": [round(t, 3) for t in plain],
        "run_with_previews_s": [round(t, 3) for t in shown],
        "previews": writer.published, "preview_bytes": size,
        "preview_ms_each": round(1000 * writer.seconds / max(1, writer.published), 1),
        "previews_share_of_run": round(writer.seconds / shown[-1], 5),
        "wall_difference_share": round((shown_s - plain_s) / plain_s, 5),
        "full_size_preview_ms": round(1000 * full.seconds, 1),
        "full_size_preview_bytes": full_bytes,
        "full_size_share_at_interval": round(full.seconds / args.interval, 5),
    }  # fmt: skip
    print(json.dumps(row))
    print(
        f"\nper run, {writer.published} previews of {row['size']} x {req.num_frames} frames cost "
        f"{writer.seconds * 1000:.0f} ms of a {shown[-1]:.1f} s run: "
        f"{100 * row['previews_share_of_run']:.2f} % (median wall "
        f"difference {100 * row['wall_difference_share']:+.2f} %)\n"
        f"one preview of a 1280x720, 81-frame job's latents: {1000 * full.seconds:.0f} ms "
        f"({full_bytes} bytes); at most one per {args.interval:g} s: at most "
        f"{100 * row['full_size_share_at_interval']:.2f} % of any run"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
