"""Seconds per video of the ltx2 engine (video with sound), split by phase, and peak GPU memory.

Runs ``vidq.engines.ltx2.LTX2Engine`` (the code a worker runs) in this process on T2V and I2V
jobs and prints, per job, the engine's phases: the first step (it includes the Gemma prompt
encoding and the latents), the remaining denoising steps, the video + audio decode (video VAE,
audio VAE, vocoder) and the MP4 encode (H.264 + AAC).

    python bench/gpu_ltx2.py --models-dir DIR   # DIR/LTX-2: the published weights (diffusers
                                                # layout); on a CUDA GPU
    python bench/gpu_ltx2.py --tiny             # tiny random weights on the CPU: checks the
                                                # script and the engine work

Unlike ``bench/gpu_wan.py`` there is no full-size random-weight mode: the LTX-2 configs are
not restated here, so GPU figures need the real weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from vidq.engines.base import EngineJob

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support: the tiny weights

# torch, diffusers and the engine are imported once the arguments are checked (in ``run``):
# a usage error is answered at once, not after seconds of imports.


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny random weights on the CPU")
    p.add_argument("--models-dir", type=Path, default=None, help="holds LTX-2/ (not --tiny)")
    p.add_argument("--families", default="t2v,i2v")
    p.add_argument("--width", type=int, default=None, help="default 768 (tiny: 96)")
    p.add_argument("--height", type=int, default=None, help="default 512 (tiny: 64)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds (8k+1 frames at 24 fps)")
    p.add_argument("--dtype", default=None, help="default bfloat16 (tiny: float32)")
    p.add_argument("--offload", action="store_true", help="model CPU offload (smaller GPUs)")
    p.add_argument("--vae-tiling", action="store_true", help="lower the VAE decode peak")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def _job(family: str, args: argparse.Namespace, out: Path, image: Path) -> EngineJob:
    from vidq.engines.base import EngineJob

    width = args.width or (96 if args.tiny else 768)
    height = args.height or (64 if args.tiny else 512)
    inputs: dict[str, Any] = {
        "prompt": "a cat walks on the beach, waves crash, gulls call",
        "duration": args.duration,
        "width": width,
        "height": height,
        "seed": 1,
    }
    return EngineJob(
        request_id=1,
        model_id=f"ltx2-{family}",
        family=family,
        variant="",
        inputs=inputs,
        files={"data_uri": str(image)} if family == "i2v" else {},
        output_path=str(out / f"{family}.mp4"),
        steps=8,
    )


def _row(family: str, meta: dict[str, Any], total: float, device: torch.device) -> dict[str, Any]:
    row: dict[str, Any] = {
        "family": family,
        "size": f"{meta['width']}x{meta['height']}",
        "frames": meta["frames"],
        "audio_s": meta["audio_seconds"],
        "steps": meta["steps"],
        **{f"{k}_s": v for k, v in meta["seconds"].items()},
        "total_s": round(total, 3),
    }
    if device.type == "cuda":
        import torch

        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return row


def main() -> int:
    args = parse()
    if not args.tiny and args.models_dir is None:
        print("give --models-dir (with an LTX-2/ folder) or --tiny", file=sys.stderr)
        return 2
    return run(args)


def run(args: argparse.Namespace) -> int:
    import torch
    from tests.support.ltx2_models import write_tiny_ltx2

    from vidq.config import LTX2Settings
    from vidq.engines.ltx2 import LTX2Engine

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        models_dir = args.models_dir
        if args.tiny:
            models_dir = work / "models"
            started = time.perf_counter()
            write_tiny_ltx2(models_dir)
            print(f"tiny LTX-2 written in {time.perf_counter() - started:.2f} s")
        settings = LTX2Settings(
            models_dir=models_dir,
            device="cpu" if args.tiny else "auto",
            dtype=args.dtype or ("float32" if args.tiny else "bfloat16"),
            offload=args.offload,
            vae_tiling=args.vae_tiling,
        )
        engine = LTX2Engine(settings)
        started = time.perf_counter()
        engine.load()
        print(f"load: {time.perf_counter() - started:.2f} s")
        device = engine.options.torch_device()
        from PIL import Image

        image = work / "first.png"
        Image.new("RGB", (768, 512), (40, 120, 200)).save(image)
        rows = []
        for family in args.families.split(","):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            job = _job(family, args, work, image)
            started = time.perf_counter()
            result = engine.run(job, lambda done, total: None)
            row = _row(family, result.meta, time.perf_counter() - started, device)
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items()))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
