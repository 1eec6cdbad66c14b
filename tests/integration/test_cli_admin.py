"""`vidq admin ...` against a running server (the in-process stack), run in the test's
process (``tests/support/cli.py``): pause, resume, cancel and retry, the requests, users
and workers in tables and in ``--json``, and clear errors (a user's token, bad values, an
unknown request or pool, no token)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.api_calls import local_blobs, submit
from tests.support.cli import Outcome, invoke
from tests.support.media import b64, encode_image, picture
from tests.support.stack import stack
from tests.support.wait import eventually, wait_status

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V, I2V = "wan22-fast-t2v", "wan22-fast-i2v"
POOL_T2V, POOL_I2V = "wan22-t2v", "wan22-i2v"
PNG = encode_image(picture(128, 128, seed=7), "PNG")
IMAGE = {**SMALL, "data_uri": f"data:image/png;base64,{b64(PNG)}"}


def _run(env: dict[str, str], *args: str) -> Outcome:
    return invoke(env, "admin", *args)


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
        env = {
            "VIDQ_URL": srv.url, "VIDQ_TOKEN": srv.admin_token, "COLUMNS": "250",
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
        }  # fmt: skip

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
        out = {name: _run(env, *args) for name, args in calls.items()}
        no = _run({k: v for k, v in env.items() if k != "VIDQ_TOKEN"}, "workers")
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
        assert no.returncode == 2 and "no token" in no.stderr

        # the in-process collector: the finished request's video goes by itself
        eventually(lambda: _outputs(data) == [], 15, what="the collector to delete the video")
        gone = alice.get(f"/queue/{T2V}/requests/{done}")
        assert gone.status_code == 410, gone.text
