"""`vidq token create/list/update` run in the test's process (``tests/support/cli.py``):
the token table, limits set, listed, lifted and refused on a server's data folder (the
in-process stack), and `vidq submit` over a limit. How the server's commands find their
data folder and database, as processes from a shell, is tests/acceptance/test_cli_server.py."""

from __future__ import annotations

import datetime
from pathlib import Path

from tests.support.cli import invoke
from tests.support.stack import stack
from tests.support.wait import eventually

SMALL = {"prompt": "a red fox", "width": 128, "height": 128, "duration": 1}
T2V = "wan22-fast-t2v"


def test_token_list_has_a_header_row(tmp_path: Path) -> None:
    env = {"VIDQ_DATA_DIR": str(tmp_path / "var")}
    created = invoke(env, "token", "create", "--user", "ann", "--max-queued", "2",
                     "--weight", "3", "--init")  # fmt: skip
    assert created.returncode == 0, created.stderr
    listed = invoke(env, "token", "list").stdout.splitlines()
    header = (
        "ID USER MAX_PRIORITY ROLE STATE QUEUED RUNNING PER_MINUTE VIDEO_S_TODAY GPU_S_TODAY "
        "WEIGHT NAME EXPIRES"
    ).split()
    assert [line.split("\t") for line in listed] == [
        header,
        ["1", "ann", "100", "user", "active", "0/2", "0/-", "0/-", "0/-", "0/-", "3", "-", "-"],
    ]
    updated = invoke(env, "token", "update", "1", "--max-queued", "none", "--weight", "1")
    assert [line.split("\t") for line in updated.stdout.splitlines()] == [
        header,
        ["1", "ann", "100", "user", "active", "-", "-", "-", "-", "-", "1", "-", "-"],
    ]
    refused = invoke(env, "token", "update", "1", "--weight", "101")
    assert refused.returncode != 0 and "--weight" in refused.stderr

    # a name and an expiry, as POST /tokens gives them (the web app's API keys page)
    named = invoke(env, "token", "create", "--user", "bo", "--name", " ci runner ",
                    "--expires-in-days", "2")  # fmt: skip
    assert named.returncode == 0, named.stderr
    row = invoke(env, "token", "list").stdout.splitlines()[2].split("\t")
    assert row[:2] == ["2", "bo"] and row[-2] == "ci runner"
    expires = datetime.datetime.fromisoformat(row[-1])
    left = expires - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=2, minutes=-5) < left <= datetime.timedelta(days=2)
    for option, value in (("--name", " "), ("--expires-in-days", "0")):
        bad = invoke(env, "token", "create", "--user", "bo", option, value)
        assert bad.returncode != 0 and option in bad.stderr, bad.stderr


def _token(env: dict[str, str], user: str, *options: str) -> str:
    out = invoke(env, "token", "create", "--user", user, *options)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_token_limits_set_listed_lifted_and_refused(tmp_path: Path) -> None:
    """`vidq token create/list/update` with limits on a server's data folder (the stack in
    this process; the 429s themselves: tests/integration/api/test_limits.py), and
    `vidq submit` over a limit."""
    with stack(tmp_path / "data", workers=0) as server:
        env = server.env
        queued = _token(env, "ann", "--max-queued", "2")
        with server.client(queued) as c:
            for _ in range(2):
                assert c.post(f"/queue/{T2V}", json=SMALL).status_code == 200
            assert c.post(f"/queue/{T2V}", json=SMALL).status_code == 429

        # 17 frames at 16 fps: 1.0625 s of video per request.
        daily = _token(env, "cid", "--daily-video-seconds", "2")
        with server.client(daily) as c:
            assert c.post(f"/queue/{T2V}", json=SMALL).status_code == 200
        out = invoke(
            {**env, "VIDQ_URL": server.url, "VIDQ_TOKEN": daily},
            "submit", T2V, "-p", "a fox", "--width", "128", "--height", "128",
            "--duration", "1", "--no-wait",
        )  # fmt: skip
        assert out.returncode != 0 and "daily_video_seconds" in out.stderr, out.stderr
        assert "retry in" in out.stderr

        listed = invoke(env, "token", "list")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split("\t") for line in listed.stdout.splitlines()]
        columns = rows[0]
        ann = next(dict(zip(columns, row, strict=True)) for row in rows if row[1] == "ann")
        assert (ann["QUEUED"], ann["RUNNING"]) == ("2/2", "0/-"), ann

        # Bad limits on the command line: clear errors, nothing created.
        for bad in ("-1", "abc", "1.5"):
            out = invoke(env, "token", "create", "--user", "x", "--max-queued", bad)
            assert out.returncode == 2 and "--max-queued" in out.stderr, out.stderr
        assert "\tx\t" not in invoke(env, "token", "list").stdout
        token_id = ann["ID"]
        lifted = invoke(env, "token", "update", token_id, "--max-queued", "none")
        assert lifted.returncode == 0, lifted.stderr
        header, row = (line.split("\t") for line in lifted.stdout.splitlines())
        assert header == columns and dict(zip(header, row, strict=True))["QUEUED"] == "-"
        with server.client(queued) as c:  # no limit any more, once the 2 s token cache ends
            eventually(
                lambda: c.post(f"/queue/{T2V}", json=SMALL).status_code == 200, 10,
                interval=0.25, what="the lifted limit",
            )  # fmt: skip
        out = invoke(env, "token", "update", token_id, "--rate-per-minute", "-3")
        assert out.returncode == 2 and "--rate-per-minute" in out.stderr
