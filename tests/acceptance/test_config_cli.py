"""`vidq config` prints the effective settings, with secrets masked."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_cli, vidq_env
from vidq.config_doc import setting_infos


def test_config_prints_every_setting_with_its_source_and_masks_secrets(tmp_path: Path) -> None:
    env = vidq_env(
        tmp_path / "env-dir",
        secret_key="topsecret-123",
        database_url="postgresql://vidq:hunter2@db:5432/vidq?sslmode=require&password=pw2",
        comfyui_url="https://tok-abc@comfy.example/,http://gpu2:8188",
        wan_base="ti2v-5b",
        pools="wan22-t2v,wan22-i2v",
    )
    proc = run_cli(env, "config", "--data-dir", str(tmp_path / "flag-dir"))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for secret in ("topsecret-123", "hunter2", "pw2", "tok-abc"):
        assert secret not in out
    rows = {line.split()[2]: line.split() for line in out.splitlines()[1:]}
    assert set(rows) == {info.env for info in setting_infos()}
    assert rows["VIDQ_DATA_DIR"][3:] == [str(tmp_path / "flag-dir"), "flag"]
    assert rows["VIDQ_SECRET_KEY"][3:] == ["***", "env"]
    assert rows["VIDQ_DATABASE_URL"][3:] == [
        "postgresql://vidq:***@db:5432/vidq?sslmode=require&password=***",
        "env",
    ]
    assert rows["VIDQ_COMFYUI_URL"][3:] == ["https://***@comfy.example,http://gpu2:8188", "env"]
    assert rows["VIDQ_WAN_BASE"][3:] == ["ti2v-5b", "env"]
    assert rows["VIDQ_POOLS"][3:] == ["wan22-t2v,wan22-i2v", "env"]
    assert rows["VIDQ_WAN_DTYPE"][3:] == ["bfloat16", "default"]
    blobs = f"file://{(tmp_path / 'flag-dir').resolve()}/blobs"
    assert rows["VIDQ_STORAGE_URL"][3:] == [blobs, "default", "(data_dir)"]


def test_a_refused_setting_is_one_line_naming_it_not_a_traceback(tmp_path: Path) -> None:
    """A flag or VIDQ_* value the settings refuse ends the command with exit 2 and a line
    that names the variable and says why."""
    env = vidq_env(tmp_path / "data", lease_seconds="soon")
    proc = run_cli(env, "worker", "--gpus", "0,0")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "invalid setting VIDQ_LEASE_SECONDS (lease_seconds): Input should be a valid number" \
        in proc.stderr  # fmt: skip
    env = vidq_env(tmp_path / "data")
    proc = run_cli(env, "worker", "--gpus", "0,0")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == "invalid setting VIDQ_GPUS (gpus): Value error, a GPU is listed twice"
    )
