"""bench/gpu_wan.py runs end to end with tiny configs on the CPU (its GPU figures need a GPU),
in this process (``tests/support/benches.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.benches import run_bench

pytestmark = pytest.mark.slow  # torch on the CPU


def test_gpu_wan_bench_runs_tiny_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--tiny", "--duration", "1", "--width", "128", "--height", "128", "--json", str(out)]
    assert run_bench("gpu_wan.py", *args) == 0
    rows = json.loads(out.read_text())
    timed = [r for r in rows if "total_s" in r]
    assert [r["model"] for r in timed] == ["Wan2.2-T2V-A14B (tiny)", "Wan2.2-I2V-A14B (tiny)"]
    for r in timed:
        assert r["frames"] == 17 and len(r["step_s"]) == 4
        parts = r["text_encode_s"] + r["prepare_s"] + r["denoise_s"] + r["vae_decode_s"]
        assert 0 < parts + r["mp4_encode_s"] <= r["total_s"] + 0.01
    assert all("compute capability" in r["unavailable"] for r in rows if "total_s" not in r)
