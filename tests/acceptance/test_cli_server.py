"""The server's commands as processes, run as a user runs them from a shell:

- which data folder and database they use, and that none of them but `vidq serve`,
  `vidq db upgrade` and ``--init`` makes a new one (a token in a new, empty database is
  one no server knows); `vidq --version`;
- (`vidq token create/list/update` with limits, and `vidq submit` over a limit, run in the
  test's process: tests/integration/test_cli_tokens.py);
- `vidq models check`, and a worker refusing to start without its weights;
- `vidq config` (every setting, secrets masked) and refused settings;
- `vidq admin ...` against a running server (the in-process stack: the command is the
  process under test), in tables and in ``--json``, with clear errors.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.api_calls import local_blobs, submit
from tests.support.media import b64, encode_image, picture
from tests.support.processes import ROOT, run_cli, vidq_env
from tests.support.stack import stack
from tests.support.wait import eventually, wait_status
from vidq.config_doc import setting_infos

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V, I2V = "wan22-fast-t2v", "wan22-fast-i2v"
POOL_T2V, POOL_I2V = "wan22-t2v", "wan22-i2v"
PNG = encode_image(picture(128, 128, seed=7), "PNG")
IMAGE = {**SMALL, "data_uri": f"data:image/png;base64,{b64(PNG)}"}

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


# -- `vidq admin` against a running server --------------------------------------------------


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidq", "admin", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _json(env: dict[str, str], *args: str) -> Any:
    out = _run(env, *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _table(text: str) -> list[list[str]]:
    """The cells of a rich table's lines (header first)."""
    return [
        [cell.strip() for cell in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
        for line in text.splitlines()
        if line.strip().startswith(("│", "┃"))
    ]


def _outputs(data: Path) -> list[str]:
    return [k for k in local_blobs(data) if k.startswith("outputs/")]


def test_admin_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with stack(data, gc_interval=0.3, output_ttl=0, input_ttl=3600) as srv:
        alice_token = srv.token("alice")
        alice = srv.client(alice_token)
        env = vidq_env(tmp_path / "unused", url=srv.url, token=srv.admin_token)
        env.pop("VIDQ_DATA_DIR")
        env.update(COLUMNS="250", XDG_CONFIG_HOME=str(tmp_path / "config"))

        assert _json(env, "pause", POOL_I2V) == {"pool": POOL_I2V, "paused": True}
        done = submit(alice, T2V, SMALL)
        doomed = submit(alice, I2V, IMAGE)
        cancelled = submit(alice, I2V, IMAGE)
        body = _json(env, "cancel", cancelled)
        assert (body["request_id"], body["user"], body["status"]) == (
            cancelled, "alice", "CANCELLED",
        )  # fmt: skip
        # the doomed request's input vanishes while its pool is paused: it will fail
        for key in local_blobs(data):
            if key.startswith("inputs/") and key.endswith("/data_uri"):
                (data / "blobs" / "vidq" / key).unlink()
        resumed = _run(env, "resume", POOL_I2V)
        assert resumed.returncode == 0 and resumed.stdout == f"pool {POOL_I2V}: running\n"
        assert wait_status(alice, I2V, doomed, {"FAILED", "COMPLETED"})["status"] == "FAILED"
        wait_status(alice, T2V, done, {"COMPLETED"})
        # paused, so that no worker claims it before the answer reads it back (a CI run saw
        # IN_PROGRESS there)
        assert _run(env, "pause", POOL_I2V).returncode == 0
        retried = _run(env, "retry", doomed)
        assert retried.returncode == 0, retried.stderr
        assert retried.stdout == f"request {doomed} (alice): IN_QUEUE\n"
        assert _run(env, "resume", POOL_I2V).returncode == 0
        wait_status(alice, I2V, doomed, {"FAILED"})  # its input is still gone

        calls = {
            "requests": ("requests", "--user", "alice", "--json"),
            "page": ("requests", "--limit", "1", "--json"),
            "table": ("requests", "--pool", POOL_T2V),
            "users": ("users", "--json"),
            "users_table": ("users",),
            "workers": ("workers", "--json"),
            "workers_table": ("workers",),
            "user_token": ("users", "--token", alice_token),
            "bad_state": ("requests", "--state", "NOPE"),
            "bad_limit": ("requests", "--limit", "0"),
            "bad_id": ("cancel", "abc"),
            "missing": ("cancel", "424242"),
            "finished": ("retry", done),
            "no_pool": ("pause", "nope"),
        }
        no_token = {k: v for k, v in env.items() if k != "VIDQ_TOKEN"}
        with ThreadPoolExecutor(4) as pool:  # independent calls: run them side by side
            futures = {name: pool.submit(_run, env, *args) for name, args in calls.items()}
            anonymous = pool.submit(_run, no_token, "workers")
            out = {name: f.result() for name, f in futures.items()}
        for name in ("requests", "page", "table", "users", "users_table", "workers",
                     "workers_table"):  # fmt: skip
            assert out[name].returncode == 0, (name, out[name].stderr)

        listed = json.loads(out["requests"].stdout)["requests"]
        assert [(r["request_id"], r["status"]) for r in listed] == [
            (cancelled, "CANCELLED"), (doomed, "FAILED"), (done, "COMPLETED"),
        ]  # fmt: skip
        page = json.loads(out["page"].stdout)
        assert len(page["requests"]) == 1 and page["next_before"] == int(cancelled)
        header, *rows = _table(out["table"].stdout)
        assert header == ["request_id", "user", "model_id", "status", "attempt", "worker", "error"]
        assert rows == [[done, "alice", T2V, "COMPLETED", "1", "serve-0", ""]]
        (user,) = json.loads(out["users"].stdout)["users"]
        assert user["user"] == "alice" and user["completed_today"] == 1
        assert user["failed_today"] == 1 and user["queued"] == 0
        header, row = _table(out["users_table"].stdout)
        assert dict(zip(header, row, strict=True)) == {k: str(v) for k, v in user.items()}
        (worker,) = json.loads(out["workers"].stdout)["workers"]
        assert worker["name"] == "serve-0" and worker["jobs_done"] == 1
        assert worker["engines"] == {p: "preview" for p in worker["pools"]}
        header, row = _table(out["workers_table"].stdout)
        shown = dict(zip(header, row, strict=True))
        assert shown["name"] == "serve-0" and f"{POOL_T2V}=preview" in shown["engines"]
        assert worker["state"] == shown["state"] == "ready"  # what it said: claiming

        denied = out["user_token"]
        assert denied.returncode == 1 and denied.stdout == ""
        assert "HTTP 404" in denied.stderr and "not an admin token" in denied.stderr
        bad = out["bad_state"]
        assert bad.returncode == 1 and "HTTP 422: query.state: must be one of" in bad.stderr
        assert out["bad_limit"].returncode == 1
        assert "HTTP 422: query.limit" in out["bad_limit"].stderr
        assert out["bad_id"].returncode == 2
        assert "Invalid value for 'request_id'" in out["bad_id"].stderr
        assert out["missing"].returncode == 1 and "HTTP 404" in out["missing"].stderr
        assert out["finished"].returncode == 1 and "HTTP 409" in out["finished"].stderr
        assert out["no_pool"].returncode == 1 and "HTTP 404" in out["no_pool"].stderr
        no = anonymous.result()
        assert no.returncode == 2 and "no token" in no.stderr

        # the in-process collector: the finished request's video goes by itself
        eventually(lambda: _outputs(data) == [], 15, what="the collector to delete the video")
        gone = alice.get(f"/queue/{T2V}/requests/{done}")
        assert gone.status_code == 410, gone.text
