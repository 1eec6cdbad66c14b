"""bench/gpu_ltx2.py runs end to end with tiny weights on the CPU (its GPU figures need a GPU
and the published weights), in this process (``tests/support/benches.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.benches import run_bench

pytestmark = pytest.mark.slow  # torch on the CPU


def test_gpu_ltx2_bench_runs_tiny_on_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    assert run_bench("gpu_ltx2.py", "--tiny", "--duration", "1", "--json", str(out)) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())
    assert [r["family"] for r in rows] == ["t2v", "i2v"]
    for r in rows:
        assert r["size"] == "96x64" and r["frames"] == 25 and r["steps"] == 8
        assert 0.9 < r["audio_s"] < 1.1
        parts = r["first_step_s"] + r["denoise_s"] + r["decode_s"] + r["encode_s"]
        assert 0 < parts <= r["total_s"] + 0.01
    assert "family=t2v" in printed and "total_s=" in printed


def test_gpu_ltx2_bench_needs_weights_or_tiny(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_bench("gpu_ltx2.py") == 2
    assert "--models-dir" in capsys.readouterr().err
