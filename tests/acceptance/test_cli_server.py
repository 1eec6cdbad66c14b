"""The server's commands as processes, run as a user runs them from a shell:

- which data folder and database they use, and that none of them but `vidq serve`,
  `vidq db upgrade` and ``--init`` makes a new one (a token in a new, empty database is
  one no server knows); `vidq --version`;
- `vidq models check`, and a worker refusing to start without its weights;
- `vidq config` (every setting, secrets masked) and refused settings.

What the token and admin commands read and print runs in the test's process:
tests/integration/test_cli_tokens.py (limits, the token table, `vidq submit` over a limit)
and tests/integration/test_cli_admin.py (`vidq admin ...` against a running server).
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.support.processes import ROOT, run_cli, vidq_env
from vidq.config_doc import setting_infos

# Every command that opens the job store, with what it needs besides a store.
STORE_COMMANDS = [
    ("token", "create", "--user", "alice"),
    ("token", "list"),
    ("token", "update", "1", "--max-queued", "3"),
    ("token", "revoke", "1"),
    ("gc",),
    ("worker", "--burst"),
]


def _shell(tmp_path: Path) -> dict[str, str]:
    """A user's environment: no VIDQ_DATA_DIR, so the data folder is ./var of the cwd."""
    env = vidq_env(tmp_path / "unused")
    env.pop("VIDQ_DATA_DIR")
    return env


@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
def test_a_command_run_elsewhere_makes_no_new_data_folder(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run_cli(_shell(tmp_path), *command, cwd=elsewhere)
    assert out.returncode == 2, out.stderr
    assert out.stdout == ""
    var = elsewhere / "var"
    assert out.stderr.splitlines() == [
        f"error: no data folder {var} (looked for the database {var / 'vidq.db'}): run this "
        "in the folder where `vidq serve` runs, or give its data folder with --data-dir or "
        "VIDQ_DATA_DIR; --init creates a new, empty one"
    ]
    assert list(elsewhere.iterdir()) == []


def test_init_creates_the_data_folder_and_others_find_it(tmp_path: Path) -> None:
    env = _shell(tmp_path)
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    home.mkdir()
    elsewhere.mkdir()
    var = home / "var"
    using = f"vidq: using data folder {var} (database {var / 'vidq.db'})"

    created = run_cli(env, "token", "create", "--user", "alice", "--init", cwd=home)
    assert created.returncode == 0, created.stderr
    assert re.fullmatch(r"vq_\S+\n", created.stdout)  # stdout is the token alone
    assert using in created.stderr.splitlines()
    assert (var / "vidq.db").is_file()

    # From another folder: with --data-dir or VIDQ_DATA_DIR, the same database.
    listed = run_cli(env, "token", "list", "--data-dir", str(var), cwd=elsewhere)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [using]
    assert listed.stdout.splitlines()[1].split("\t")[:2] == ["1", "alice"]
    revoked = run_cli({**env, "VIDQ_DATA_DIR": str(var)}, "token", "revoke", "1", cwd=elsewhere)
    assert revoked.returncode == 0 and revoked.stdout == "revoked token 1\n", revoked.stderr
    assert using in revoked.stderr.splitlines()
    assert list(elsewhere.iterdir()) == []

    # gc and a worker say which data folder they use too.
    for command in (("gc", "--dry-run"), ("worker", "--burst")):
        out = run_cli(env, *command, cwd=home)
        assert out.returncode == 0, out.stderr
        assert using in out.stderr.splitlines()


def test_an_empty_data_folder_or_a_missing_sqlite_file_is_named(tmp_path: Path) -> None:
    env = _shell(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    out = run_cli(env, "token", "list", "--data-dir", str(empty), cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.startswith(
        f"error: no vidq database {empty / 'vidq.db'} in the data folder {empty}: run this "
        "in the folder where `vidq serve` runs"
    ), out.stderr
    assert list(empty.iterdir()) == []

    db = tmp_path / "elsewhere" / "jobs.db"
    env["VIDQ_DATABASE_URL"] = f"sqlite:///{db}"
    out = run_cli(env, "gc", cwd=tmp_path)
    assert out.returncode == 2 and not db.parent.exists()
    assert out.stderr.splitlines() == [
        f"error: no SQLite database {db}: check VIDQ_DATABASE_URL; --init creates a new, empty one"
    ]
    out = run_cli(env, "gc", "--init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert f"vidq: using database {db} (VIDQ_DATABASE_URL)" in out.stderr.splitlines()
    assert db.is_file()


def test_db_upgrade_and_serve_still_create_it(tmp_path: Path) -> None:
    env = _shell(tmp_path)
    out = run_cli(env, "db", "upgrade", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "database is up to date\n"
    assert (tmp_path / "var" / "vidq.db").is_file()
    assert run_cli(env, "token", "list", cwd=tmp_path).returncode == 0


def test_json_logs_keep_stderr_json(tmp_path: Path) -> None:
    env = {**_shell(tmp_path), "VIDQ_LOG_FORMAT": "json"}
    out = run_cli(env, "token", "create", "--user", "bob", "--init", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stderr.splitlines()]
    assert [line["message"] for line in lines] == [
        f"vidq: using data folder {tmp_path / 'var'} (database {tmp_path / 'var' / 'vidq.db'})"
    ]


@pytest.mark.postgres
def test_a_postgres_database_is_used_as_configured(tmp_path: Path, pg_url: str) -> None:
    """vidq never creates a PostgreSQL database, and needs no data folder for one."""
    user, host = pg_url.removeprefix("postgresql://").split("@")
    url = f"postgresql://{user}:hunter2@{host}"  # the test server trusts loopback
    env = {**_shell(tmp_path), "VIDQ_DATABASE_URL": url}
    out = run_cli(env, "token", "create", "--user", "carol", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [
        f"vidq: using database postgresql://{user}:***@{host} (VIDQ_DATABASE_URL)"
    ]
    listed = run_cli(env, "token", "list", cwd=tmp_path)
    assert listed.stdout.splitlines()[1].split("\t")[:2] == ["1", "carol"]
    assert list(tmp_path.iterdir()) == []


def test_version(tmp_path: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    out = run_cli(_shell(tmp_path), "--version", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"vidq {pyproject['project']['version']}\n"
    assert list(tmp_path.iterdir()) == []


# -- `vidq models check` and a worker without its weights --------------------------------------
WAN_POOLS = "wan22-t2v=wan,wan22-i2v=wan"


@pytest.fixture(scope="module")
def models_dir(tiny_wan_models: Path) -> Path:
    return tiny_wan_models


def test_models_check_reports_present_and_missing(tmp_path: Path, models_dir: Path) -> None:
    env = vidq_env(tmp_path / "data", models_dir=models_dir)
    out = run_cli(env, "models", "check")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wan22-fast-t2v: ok" in out.stdout and "wan22-fast-i2v-fp8: ok" in out.stdout

    empty = tmp_path / "empty"
    (empty / "Wan2.2-T2V-A14B-Diffusers" / "vae").mkdir(parents=True)
    (empty / "Wan2.2-T2V-A14B-Diffusers" / "vae" / "config.json").write_text("{}")
    out = run_cli(vidq_env(tmp_path / "data", models_dir=empty), "models", "check")
    assert out.returncode == 1
    assert "wan22-fast-t2v: MISSING" in out.stdout
    assert f"present: {empty / 'Wan2.2-T2V-A14B-Diffusers' / 'vae'}" in out.stdout
    assert f"missing: {empty / 'Wan2.2-T2V-A14B-Diffusers' / 'transformer_2'}" in out.stdout
    assert "high_noise_model.safetensors" in out.stdout


def test_worker_refuses_to_start_when_weights_are_missing(tmp_path: Path) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    env = vidq_env(tmp_path / "data", engines=WAN_POOLS, models_dir=empty)
    out = run_cli(env, "worker", "--burst", "--pools", "wan22-i2v")
    assert out.returncode == 2, out.stderr
    assert "refusing to start" in out.stderr and "wan22-fast-i2v" in out.stderr
    assert str(empty / "Wan2.2-I2V-A14B-Diffusers" / "model_index.json") in out.stderr

    env = vidq_env(tmp_path / "data", engines=WAN_POOLS)
    out = run_cli(env, "worker", "--burst", "--pools", "wan22-t2v")
    assert out.returncode == 2 and "VIDQ_MODELS_DIR is not set" in out.stderr


# -- `vidq config` and refused settings -----------------------------------------------------
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
