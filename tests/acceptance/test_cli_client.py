"""The client CLI driven as a user would, as subprocesses against the in-process stack (the
commands are the processes under test): `vidq login`, `submit` (following the request to
its download), `status`, `requests`, `result`, `cancel`, a paused queue and a held
request. How `vidq submit` reads its inputs is tested in the test's process
(tests/integration/test_cli_inputs.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

from tests.support.media import probe_mp4
from tests.support.processes import run_cli, vidq_env
from tests.support.stack import stack
from tests.support.wait import eventually


def test_login_submit_follow_and_download(tmp_path: Path) -> None:
    with stack(tmp_path / "data", preview_step_seconds=0.5) as server:
        token = server.token("carol")
        env = vidq_env(tmp_path / "unused")
        env.pop("VIDQ_DATA_DIR")
        env["XDG_CONFIG_HOME"] = str(tmp_path / "config")

        denied = run_cli(env, "submit", "wan22-fast-t2v", "--prompt", "x")
        assert denied.returncode != 0 and "vidq login" in denied.stderr

        login = run_cli(env, "login", "--url", server.url, "--token", token)
        assert login.returncode == 0, login.stderr
        config = tmp_path / "config" / "vidq" / "config.json"
        assert stat.S_IMODE(config.stat().st_mode) == 0o600
        assert token in config.read_text()

        # A request ahead in the queue, so that the next one is seen queued first.
        busy = run_cli(env, "submit", "wan22-fast-t2v", "--prompt", "busy", "--no-wait")
        assert busy.returncode == 0 and busy.stdout == "request 1 submitted (wan22-fast-t2v)\n"
        out_file = tmp_path / "fox.mp4"
        args = ["--prompt", "a fox in snow", "--width", "160", "--height", "128"]
        sub = run_cli(
            env, "submit", "wan22-fast-t2v", *args, "--duration", "2", "-o", str(out_file)
        )
        assert sub.returncode == 0, sub.stderr
        lines = sub.stdout.splitlines()
        assert lines[0] == "request 2 submitted (wan22-fast-t2v)"
        assert "queued: position 0" in sub.stdout and "running" in lines
        assert "completed: 5/5 steps" in sub.stdout
        completed = next(line for line in lines if line.startswith("completed: "))
        seed = completed.rsplit(", seed ", 1)[1]  # the seed drawn at submit
        assert seed.isdigit(), completed
        assert f"saved {out_file}" in lines[-1]
        assert "5/5 steps" in sub.stderr and "ETA" in sub.stderr  # the progress bar
        info = probe_mp4(out_file.read_bytes(), tmp_path)
        assert (info.width, info.height, info.frames) == (160, 128, 33)

        status = run_cli(env, "status", "2")
        assert status.returncode == 0 and status.stdout.split() == [
            "2",
            "wan22-fast-t2v",
            "COMPLETED",
            "seed",
            seed,
        ]
        again = tmp_path / "again.mp4"
        res = run_cli(env, "result", "2", "-o", str(again))
        assert res.returncode == 0 and again.read_bytes() == out_file.read_bytes()
        late = run_cli(env, "cancel", "1")
        assert late.returncode == 1 and "409" in late.stderr
        missing = run_cli(env, "status", "42")
        assert missing.returncode == 1 and "404" in missing.stderr


def test_no_wait_cancel_and_requests_with_flags(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as server:  # nothing runs: jobs stay queued
        env = vidq_env(tmp_path / "unused")
        env.pop("VIDQ_DATA_DIR")
        env["XDG_CONFIG_HOME"] = str(tmp_path / "empty-config")
        env["VIDQ_URL"] = server.url
        env["VIDQ_TOKEN"] = server.token("dave")
        env["COLUMNS"] = "400"  # rich wraps errors at the width: keep long paths on one line
        for prompt in ("one", "two"):
            sub = run_cli(env, "submit", "wan22-fast-t2v", "--prompt", prompt, "--no-wait")
            assert sub.returncode == 0, sub.stderr
        status = run_cli(env, "status", "2")
        assert "IN_QUEUE  position 1" in status.stdout
        cancel = run_cli(env, "cancel", "1", "--url", server.url)
        assert cancel.returncode == 0 and "cancelled" in cancel.stdout
        listed = run_cli(env, "requests")
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        assert rows[0] == ["REQUEST_ID", "MODEL_ID", "STATUS", "CREATED"]
        assert [row[:3] for row in rows[1:]] == [
            ["2", "wan22-fast-t2v", "IN_QUEUE"],
            ["1", "wan22-fast-t2v", "CANCELLED"],
        ]
        assert all(len(row) == 4 for row in rows)
        paged = run_cli(env, "requests", "--limit", "1")
        assert "--before 2" in paged.stdout
        wrong = run_cli(env, "requests", "--token", "vq_wrong")
        assert wrong.returncode == 1 and "401" in wrong.stderr
        bad_file = run_cli(env, "submit", "wan22-fast-i2v", "--image", str(tmp_path / "nope.png"))
        assert bad_file.returncode != 0 and "nope.png" in bad_file.stderr


def test_a_paused_queue_a_held_request_and_the_seed_are_shown(tmp_path: Path) -> None:
    """`vidq submit` and `vidq status` say why a queued request waits (an operator paused
    its queue: no ETA; the token's max_running) and the seed it runs with. Request 1's steps
    are slow (15 s in all) so that request 2 is still held when `vidq status 2` starts, even
    on a loaded machine."""
    with stack(tmp_path / "data", preview_step_seconds=3.0) as server:
        token = server.token("erin", max_running=1)
        env = vidq_env(tmp_path / "unused")
        env.pop("VIDQ_DATA_DIR")
        env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), VIDQ_URL=server.url,
                   VIDQ_TOKEN=token, COLUMNS="400")  # fmt: skip
        admin = {**env, "VIDQ_TOKEN": server.admin_token}
        assert run_cli(admin, "admin", "pause", "wan22-t2v").returncode == 0

        out_file = tmp_path / "paused.mp4"
        args = ["--prompt", "a quiet harbour", "--width", "128", "--height", "128"]
        follow = subprocess.Popen(
            [sys.executable, "-m", "vidq", "submit", "wan22-fast-t2v", *args,
             "--duration", "1", "-o", str(out_file)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert follow.stdout is not None
            assert follow.stdout.readline() == "request 1 submitted (wan22-fast-t2v)\n"
            queued = follow.stdout.readline()
            assert queued == (
                "queued: position 0, paused by an operator (it starts once the queue is resumed)\n"
            ), queued
            status = run_cli(env, "status", "1")
            assert status.returncode == 0, status.stderr
            words = status.stdout.split()
            assert words[:5] == ["1", "wan22-fast-t2v", "IN_QUEUE", "position", "0"], words
            assert "paused by an operator" in status.stdout and "ETA" not in status.stdout
            assert words[-2] == "seed" and words[-1].isdigit(), words
            seed = words[-1]

            # A second request of erin's waits for the first, which runs once resumed.
            second = run_cli(env, "submit", "wan22-fast-t2v", *args, "--no-wait")
            assert second.returncode == 0, second.stderr
            assert run_cli(admin, "admin", "resume", "wan22-t2v").returncode == 0
            with server.client(token) as api:
                eventually(lambda: api.get("/requests/1").json()["status"] == "IN_PROGRESS",
                           30, what="request 1 to start")  # fmt: skip
            held = run_cli(env, "status", "2").stdout
            waits = "IN_QUEUE  position 0  held until one of your running requests ends"
            assert f"{waits} (max_running)" in held and "paused" not in held, held

            out, err = follow.communicate(timeout=60)
        finally:
            follow.kill()
        assert follow.returncode == 0, err
        completed = out.splitlines()[-2]
        assert completed.startswith("completed: 5/5 steps, "), out
        assert completed.endswith(f", seed {seed}"), out  # the seed shown while queued
        assert out_file.exists()
