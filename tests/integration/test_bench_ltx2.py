"""bench/gpu_ltx2.py runs end to end with tiny weights on the CPU (its GPU figures need a GPU
and the published weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, vidq_env

pytestmark = pytest.mark.slow  # torch on the CPU


def test_gpu_ltx2_bench_runs_tiny_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    args = ["--tiny", "--duration", "1", "--json", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_ltx2.py"), *args],
        env=vidq_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(out.read_text())
    assert [r["family"] for r in rows] == ["t2v", "i2v"]
    for r in rows:
        assert r["size"] == "96x64" and r["frames"] == 25 and r["steps"] == 8
        assert 0.9 < r["audio_s"] < 1.1
        parts = r["first_step_s"] + r["denoise_s"] + r["decode_s"] + r["encode_s"]
        assert 0 < parts <= r["total_s"] + 0.01
    assert "family=t2v" in proc.stdout and "total_s=" in proc.stdout


def test_gpu_ltx2_bench_needs_weights_or_tiny(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_ltx2.py")],
        env=vidq_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert "--models-dir" in proc.stderr
