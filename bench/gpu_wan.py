"""Seconds per video of the wan engine's generation path, split by phase, and peak GPU memory.

Builds Wan2.2 T2V-A14B and I2V-A14B from their published configs (restated in
``tests.support.wan_models``) with random bf16 weights (nothing is downloaded), fuses a
random rank-64 LoRA in the lightx2v format into both experts (the 4-step fast mode), and
times 1280x720, 81 frames (5 s at 16 fps), batch 1, through ``vidq.engines.wan_pipeline.
generate`` (the code the engine runs), then the MP4 encode. Then the same with fp8 experts.

    python bench/gpu_wan.py              # on a CUDA GPU (an H100 holds one A14B pipeline)
    python bench/gpu_wan.py --tiny       # tiny configs on the CPU: checks the script works

Random weights give noise, not pictures; the timings are those of the real architecture.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the random-weight builders

import numpy as np
import torch
from PIL import Image
from tests.support.wan_models import build_pipeline, configs, lightx2v_lora

from vidq.catalog import FPS
from vidq.engines.wan_pipeline import (
    PipelineOptions,
    Request,
    generate,
    offline,
    prepare_pipeline,
    quantize_fp8,
)
from vidq.errors import EngineUnavailable
from vidq.media.video import write_mp4


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny configs on the CPU")
    p.add_argument("--families", default="t2v,i2v")
    p.add_argument("--width", type=int, default=None, help="default 1280 (tiny: 160)")
    p.add_argument("--height", type=int, default=None, help="default 720 (tiny: 128)")
    p.add_argument("--duration", type=int, default=5, help="seconds; 16*d+1 frames")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--warmup", type=int, default=None, help="untimed runs (default GPU 1, CPU 0)")
    p.add_argument("--no-fp8", action="store_true")
    p.add_argument("--attention", default="native", help="native | flash | sage")
    p.add_argument("--vae-tiling", action="store_true", help="lower the VAE decode peak")
    p.add_argument("--offload", action="store_true", help="model CPU offload (smaller GPUs)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def one_video(pipe: Any, req: Request, device: torch.device, out: Path) -> dict[str, Any]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    gen = generate(pipe, req, lambda _k: None)
    t_enc = time.perf_counter()
    write_mp4(out, iter(gen.frames), width=req.width, height=req.height, fps=FPS)
    encode_s = time.perf_counter() - t_enc
    return {
        "text_encode_s": round(gen.text_encode_s, 3),
        "prepare_s": round(gen.prepare_s, 3),
        "denoise_s": round(sum(gen.step_s), 3),
        "step_s": [round(s, 3) for s in gen.step_s],
        "vae_decode_s": round(gen.decode_s, 3),
        "mp4_encode_s": round(encode_s, 3),
        "total_s": round(time.perf_counter() - started, 3),
        "peak_gpu_gib": peak_gib(device),
    }


def bench_family(
    family: str, args: argparse.Namespace, device: torch.device
) -> list[dict[str, Any]]:
    cfg = configs(family, tiny=args.tiny)
    dtype = torch.float32 if args.tiny else torch.bfloat16
    options = PipelineOptions(
        device=device.type,
        dtype="float32" if args.tiny else "bfloat16",
        attention=args.attention,
        vae_tiling=args.vae_tiling,
        offload=args.offload,
    )
    t0 = time.perf_counter()
    with torch.device(device):
        pipe = build_pipeline(family, cfg, dtype=dtype)
    lora = (lightx2v_lora(cfg, seed=11), lightx2v_lora(cfg, seed=12))
    pipe = prepare_pipeline(pipe, options, lora=lora, fp8=False)
    build_s = time.perf_counter() - t0
    width = args.width or (160 if args.tiny else 1280)
    height = args.height or (128 if args.tiny else 720)
    image = None
    if family == "i2v":
        ramp = np.linspace(0, 255, width * height * 3, dtype=np.float32).reshape(height, width, 3)
        image = Image.fromarray(ramp.astype(np.uint8))
    req = Request(
        prompt="a dog walks on the sea",
        negative_prompt=None,
        width=width,
        height=height,
        num_frames=FPS * args.duration + 1,
        steps=args.steps,
        guidance=1.0,
        seed=0,
        image=image,
    )
    warmup = args.warmup if args.warmup is not None else (1 if device.type == "cuda" else 0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("bf16", "fp8"):
            row: dict[str, Any] = {
                "model": f"Wan2.2-{family.upper()}-A14B" + (" (tiny)" if args.tiny else ""),
                "precision": precision if not args.tiny else f"{precision} (tiny: fp32)",
                "size": f"{width}x{height}",
                "frames": req.num_frames,
                "steps": req.steps,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            }
            if precision == "fp8":
                if args.no_fp8:
                    break
                try:
                    quantize_fp8(pipe, device)
                except EngineUnavailable as exc:
                    row["unavailable"] = exc.message
                    results.append(row)
                    print(json.dumps(row), flush=True)
                    break
            else:
                row["build_s"] = round(build_s, 2)
            for _ in range(warmup):
                generate(pipe, req, lambda _k: None)
            row.update(one_video(pipe, req, device, Path(tmp) / f"{family}-{precision}.mp4"))
            results.append(row)
            print(json.dumps(row), flush=True)
    del pipe
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results


def main() -> int:
    args = parse()
    offline()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not args.tiny:
        print("no CUDA GPU here: full-size A14B needs one; use --tiny on a CPU", file=sys.stderr)
        return 2
    results = []
    for family in args.families.split(","):
        results += bench_family(family.strip(), args, device)
    print()
    print(
        f"{'model':28} {'precision':18} {'text':>6} {'denoise':>8} {'decode':>7} "
        f"{'mp4':>6} {'total':>7} {'peak GiB':>8}"
    )
    for r in results:
        if "unavailable" in r:
            print(f"{r['model']:28} {r['precision']:18} unavailable: {r['unavailable']}")
            continue
        print(
            f"{r['model']:28} {r['precision']:18} {r['text_encode_s']:6.2f} "
            f"{r['denoise_s'] + r['prepare_s']:8.2f} {r['vae_decode_s']:7.2f} "
            f"{r['mp4_encode_s']:6.2f} {r['total_s']:7.2f} {r['peak_gpu_gib'] or '-':>8}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
