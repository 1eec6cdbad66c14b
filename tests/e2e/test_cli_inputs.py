"""The "did you mean" of an unknown model id, as `vidq submit` shows it against a real
`vidq serve`.

The CLI speaks only HTTP, so this runs once, on SQLite (``[own]`` in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, run_cli, serve, vidq_env


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("cli-inputs") / "data", workers=0) as srv:
        yield srv


@pytest.fixture
def env(server: Server, tmp_path: Path) -> dict[str, str]:
    env = vidq_env(tmp_path / "unused", url=server.url, token=server.token("erin"))
    env.pop("VIDQ_DATA_DIR")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["COLUMNS"] = "400"  # rich wraps usage errors at the width: keep them on one line
    return env


def test_an_unknown_model_id_gets_a_suggestion(server: Server, env: dict[str, str]) -> None:
    out = run_cli(env, "submit", "wan22-fast-tv2", "-p", "a fox")
    assert out.returncode == 1
    assert out.stderr == (
        "error: HTTP 404: Unknown model 'wan22-fast-tv2'; did you mean 'wan22-fast-t2v'?\n"
    )
    out = run_cli(env, "submit", "no-such-model", "-p", "a fox")
    assert out.returncode == 1
    assert out.stderr == "error: HTTP 404: Unknown model 'no-such-model'.\n"
    with server.client(env["VIDQ_TOKEN"]) as c:
        body = {"prompt": "a fox"}
        for path in ("/queue/Wan22-Fast-I2V", "/queue/vidq/Wan22-Fast-I2V"):  # both dialects
            r = c.post(path, json=body)
            assert r.status_code == 404, r.text
            assert r.json()["detail"].endswith("did you mean 'wan22-fast-i2v'?")
        r = c.post("/queue/fal-ai/wan/v2.2-a14b/text-to-vidoe", json=body)  # fal's own ids:
        assert r.status_code == 404 and "did you mean" not in r.text  # as before
