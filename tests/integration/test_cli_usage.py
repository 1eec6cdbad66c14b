"""``vidq usage`` and ``vidq admin usage`` (and the SDK's ``Client.usage`` and
``Status.metrics`` they stand on) in process (typer's runner) against the
in-process stack after real preview jobs: the server's JSON with ``--json``, a table with
a total row without it, and a bad ``--days`` refused naming the option's field."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner, Result

from tests.support.stack import Stack, stack
from vidq.cli.main import app
from vidq.client import Client

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}


def vidq(s: Stack, token: str, *args: str) -> Result:
    env = {"VIDQ_URL": s.url, "VIDQ_TOKEN": token, "COLUMNS": "200",
           "XDG_CONFIG_HOME": str(s.data_dir / "config")}  # fmt: skip
    return CliRunner().invoke(app, list(args), env=env)


def cells(text: str) -> list[list[str]]:
    """The cells of a rich table's body and header lines."""
    return [
        [cell.strip() for cell in line.strip().strip("│┃").split("│" if "│" in line else "┃")]
        for line in text.splitlines()
        if line.strip().startswith(("│", "┃"))
    ]


def test_usage_commands_print_what_the_routes_answer(tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as s:
        ann, bob = s.token("ann"), s.token("bob")
        for token in (ann, ann, bob):
            with s.client(token) as c:
                assert c.post(f"/queue/{T2V}", json=SMALL).status_code == 200
        assert s.drain() == 3
        with s.client(ann) as c:
            answer = c.get("/usage").json()
        with Client(s.url, ann) as sdk:  # the SDK's view: the same answer, and per request
            assert sdk.usage(7) == answer
            (newest, *_) = sdk.requests()["requests"]
            cost = sdk.get_handle(newest["request_id"]).status().metrics
            assert cost is not None and cost["attempts"] == 1 and cost["gpu_seconds"] > 0

        mine = vidq(s, ann, "usage", "--json")
        assert mine.exit_code == 0, mine.output
        assert json.loads(mine.output) == answer
        (row,) = answer["usage"]
        assert row["jobs"] == 2 and row["gpu_seconds"] > 0

        table = vidq(s, ann, "usage", "--days", "3")
        assert table.exit_code == 0, table.output
        header, body, total = cells(table.output)
        assert header == ["day", "model_id", "jobs", "video_seconds", "gpu_seconds"]
        assert body == [row["day"], T2V, "2", str(row["video_seconds"]), str(row["gpu_seconds"])]
        assert total == ["total", "", "2", str(row["video_seconds"]), str(row["gpu_seconds"])]

        every = vidq(s, s.admin_token, "admin", "usage", "--json")
        assert every.exit_code == 0, every.output
        users = {r["user"]: r for r in json.loads(every.output)["usage"]}
        assert set(users) == {"ann", "bob"} and users["ann"]["jobs"] == 2
        table = vidq(s, s.admin_token, "admin", "usage")
        assert table.exit_code == 0, table.output
        header, *rows, total = cells(table.output)
        assert header == ["user", "day", "model_id", "jobs", "video_seconds", "gpu_seconds"]
        assert [r[0] for r in rows] == ["ann", "bob"] and total[:4] == ["total", "", "", "3"]

        refused = vidq(s, ann, "admin", "usage")  # an operator's route
        assert refused.exit_code == 1 and "admin token" in refused.output
        bad = vidq(s, ann, "usage", "--days", "0")
        assert bad.exit_code != 0 and "days" in bad.output
