"""The client CLI driven as a user would: `vidq login`, `submit`, `status`, `requests`,
`result`, `cancel`, as subprocesses against a real `vidq serve`."""

from __future__ import annotations

import stat
from pathlib import Path

from tests.support.media import probe_mp4
from tests.support.processes import run_cli, serve, vidq_env


def test_login_submit_follow_and_download(tmp_path: Path) -> None:
    with serve(tmp_path / "data", preview_step_seconds=0.5) as server:
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
        assert f"saved {out_file}" in lines[-1]
        assert "5/5 steps" in sub.stderr and "ETA" in sub.stderr  # the progress bar
        info = probe_mp4(out_file.read_bytes(), tmp_path)
        assert (info.width, info.height, info.frames) == (160, 128, 33)

        status = run_cli(env, "status", "2")
        assert status.returncode == 0 and status.stdout.split() == [
            "2",
            "wan22-fast-t2v",
            "COMPLETED",
        ]
        again = tmp_path / "again.mp4"
        res = run_cli(env, "result", "2", "-o", str(again))
        assert res.returncode == 0 and again.read_bytes() == out_file.read_bytes()
        late = run_cli(env, "cancel", "1")
        assert late.returncode == 1 and "409" in late.stderr
        missing = run_cli(env, "status", "42")
        assert missing.returncode == 1 and "404" in missing.stderr


def test_no_wait_cancel_and_requests_with_flags(tmp_path: Path) -> None:
    with serve(tmp_path / "data", workers=0) as server:  # nothing runs: jobs stay queued
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
