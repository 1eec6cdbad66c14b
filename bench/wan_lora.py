"""Time a request's LoRA load and unload on a Wan 2.2 pipeline (``job_loras``): read the
safetensors file, load it as a peft adapter on the experts, set its scale; then remove it.

    python bench/wan_lora.py [--runs 10] [--experts both|high]

The pipeline is the tiny random-weight one of the tests (CPU, float32), with Lightning
LoRAs fused as the engine does; the LoRA is a random lightx2v-format one of rank 4 on
every attention and FFN layer of an expert. Prints the median and the range of each
phase. (The A14B figures need a GPU and the real weights; not measured here.)
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # the random-weight builders (tests.support)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from tests.support.wan_models import build_pipeline, configs, lightx2v_lora  # noqa: E402

from vidq.engines.base import LoraFile  # noqa: E402
from vidq.engines.wan_pipeline import job_loras, load_lightning  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--experts", choices=("both", "high"), default="both")
    args = parser.parse_args()

    torch.set_num_threads(1)
    cfg = configs("t2v", tiny=True)
    pipe = build_pipeline("t2v", cfg)
    load_lightning(pipe, lightx2v_lora(cfg, seed=11), lightx2v_lora(cfg, seed=12))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lora.safetensors"
        save_file(lightx2v_lora(cfg, scale=1.0, seed=5), str(path))
        data = path.read_bytes()
        lora = LoraFile(
            index=0, name="loras[0] (bench)", path=str(path),
            sha256=hashlib.sha256(data).hexdigest(), size=len(data), scale=1.0,
            transformer=args.experts,
        )  # fmt: skip
        loads, unloads = [], []
        for _ in range(args.runs):
            with job_loras(pipe, [lora]) as timing:
                pass
            loads.append(timing.load_s)
            unloads.append(timing.unload_s)
            assert not any("lora" in n for n, _ in pipe.transformer.named_parameters())
    print(
        f"LoRA of {len(data) / 1e6:.3f} MB on the tiny Wan T2V pipeline ({args.experts}, "
        f"cpu, {args.runs} runs): load median {statistics.median(loads) * 1000:.1f} "
        f"ms ({min(loads) * 1000:.1f}-{max(loads) * 1000:.1f}), unload median "
        f"{statistics.median(unloads) * 1000:.1f} ms "
        f"({min(unloads) * 1000:.1f}-{max(unloads) * 1000:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
