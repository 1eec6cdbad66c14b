"""The client CLI driven as a user would, as subprocesses against the in-process stack (the
commands are the processes under test): `vidq login`, `submit`, `status`, `requests`,
`result`, `cancel`; `vidq submit` with any input of a model's schema (`-i KEY=VALUE`,
`--json FILE`), its errors worded with the user's flags rather than the wire fields, and
the "did you mean" of an unknown model id (a server without workers: what was submitted
is read back from `GET /requests/{id}`)."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.media import encode_image, picture, probe_mp4
from tests.support.processes import run_cli, vidq_env
from tests.support.stack import Stack, stack
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


# -- `vidq submit` with any input of a model's schema ---------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("cli-inputs") / "data", workers=0) as srv:
        yield srv


@pytest.fixture
def env(server: Stack, tmp_path: Path) -> dict[str, str]:
    env = vidq_env(tmp_path / "unused", url=server.url, token=server.token("erin"))
    env.pop("VIDQ_DATA_DIR")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    env["COLUMNS"] = "400"  # rich wraps usage errors at the width: keep them on one line
    return env


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """An image, and files with media names that hold no media."""
    made = {
        "first": tmp_path / "first.png",
        "last": tmp_path / "last.png",
        "bad_png": tmp_path / "bad.png",
        "bad_wav": tmp_path / "bad.wav",
        "bad_mp4": tmp_path / "bad.mp4",
    }
    made["first"].write_bytes(encode_image(picture(64, 48), "PNG"))
    made["last"].write_bytes(encode_image(picture(64, 48, seed=1), "PNG"))
    for key in ("bad_png", "bad_wav", "bad_mp4"):
        made[key].write_bytes(b"not media at all")
    return made


def submitted(server: Stack, env: dict[str, str], out: subprocess.CompletedProcess[str]) -> Any:
    """What the server holds of the request ``out`` submitted."""
    assert out.returncode == 0, out.stderr
    rid = out.stdout.split()[1]
    with server.client(env["VIDQ_TOKEN"]) as c:
        r = c.get(f"/requests/{rid}")
    assert r.status_code == 200, r.text
    return r.json()


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


def test_i_gives_any_input_typed_by_the_schema(
    server: Stack, env: dict[str, str], files: dict[str, Path]
) -> None:
    out = run_cli(
        env, "submit", "wan22-fast-i2v", "--image", str(files["first"]), "--no-wait",
        "-i", "negative_prompt=blurry, static", "-i", "seed=7",
        "-i", "higher_quality_with_more_steps=true", "-i", "new_resolution=720p",
        "-i", "min_height=256", "-i", f"second_image_uri={files['last']}",
    )  # fmt: skip
    body = submitted(server, env, out)
    assert sorted(body["input_files"]) == ["data_uri", "second_image_uri"]  # files, read
    inputs = body["inputs"]
    assert inputs["negative_prompt"] == "blurry, static"
    assert inputs["seed"] == 7 and inputs["min_height"] == 256
    assert inputs["higher_quality_with_more_steps"] is True
    assert inputs["new_resolution"] == "720p"
    # new_resolution is an integer or a string: a number is sent as a number
    out = run_cli(env, "submit", "wan22-fast-i2v", "--image", str(files["first"]), "--no-wait",
                  "-i", "new_resolution=720")  # fmt: skip
    assert submitted(server, env, out)["inputs"]["new_resolution"] == 720


def test_json_file_with_i_and_flags_on_top(
    server: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"prompt": "from the file", "width": 160, "height": 128,
                                "duration": 2, "seed": 1, "negative_prompt": "file"}))  # fmt: skip
    out = run_cli(env, "submit", "wan22-fast-t2v", "--json", str(spec), "-i", "seed=2",
                  "--width", "192", "--no-wait")  # fmt: skip
    inputs = submitted(server, env, out)["inputs"]
    assert {k: inputs[k] for k in ("prompt", "width", "height", "duration", "seed")} == {
        "prompt": "from the file", "width": 192, "height": 128, "duration": 2, "seed": 2,
    }  # fmt: skip
    assert inputs["negative_prompt"] == "file"
    out = run_cli(env, "submit", "wan22-fast-t2v", "--json", str(spec), "-p", "the flag",
                  "-i", "prompt=the -i", "--no-wait")  # fmt: skip
    assert submitted(server, env, out)["inputs"]["prompt"] == "the flag"

    spec.write_text("[1, 2]")
    out = run_cli(env, "submit", "wan22-fast-t2v", "--json", str(spec))
    assert out.returncode == 2 and "--json" in out.stderr and "no JSON object" in out.stderr


@pytest.mark.parametrize(
    ("args", "named", "says"),
    [
        (["-i", "seed=abc"], "-i seed", "'abc' is not an integer"),
        (["-i", "higher_quality_with_more_steps=maybe"], "-i higher_quality_with_more_steps",
         "'maybe' is not true or false"),
        (["-i", "nope=1"], "-i nope", "wan22-fast-t2v has no input 'nope'; its inputs: prompt,"),
        (["-i", "seed"], "-i", "'seed' is not KEY=VALUE"),
    ],
)  # fmt: skip
def test_i_refuses_unknown_keys_and_values_of_the_wrong_type(
    env: dict[str, str], args: list[str], named: str, says: str
) -> None:
    out = run_cli(env, "submit", "wan22-fast-t2v", "-p", "a fox", *args, "--no-wait")
    assert out.returncode == 2, out.stderr
    assert f"Invalid value for {named}: {says}" in out.stderr


def test_a_refused_input_is_named_by_the_flag_that_gave_it(
    env: dict[str, str], files: dict[str, Path], tmp_path: Path
) -> None:
    first, bad_png = str(files["first"]), str(files["bad_png"])
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"prompt": "x", "width": 100}))
    cases = [
        (["wan22-fast-i2v", "--image", bad_png], "--image"),
        (["wan22-fast-i2v", "--image", first, "--last-image", bad_png], "--last-image"),
        (["wan22-fast-i2v", "--image", first, "-i", f"second_image_uri={bad_png}"],
         "-i second_image_uri"),
        (["wan22-s2v-fast", "--image", first, "--audio", str(files["bad_wav"])], "--audio"),
        (["hunyuan-foley", "--video", str(files["bad_mp4"])], "--video"),
        (["wan22-fast-t2v", "-p", "x", "--width", "100"], "--width"),
        (["wan22-fast-t2v", "-p", "x", "--duration", "99"], "--duration"),
        (["wan22-fast-i2v", "--image", first, "-i", "new_resolution=5x5"], "-i new_resolution"),
        (["wan22-fast-t2v", "--json", str(spec)], f"width (--json {spec})"),
        (["wan22-fast-i2v", "-p", "no image"], "--image/--video"),
    ]  # fmt: skip
    for args, named in cases:
        out = run_cli(env, "submit", *args, "--no-wait")
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.startswith(f"error: HTTP 422: {named}: "), (args, out.stderr)
        wire = {"data_uri", "second_image_uri", "audio_uri"} & set(out.stderr.split())
        assert not wire, (args, out.stderr)


def test_an_unknown_model_id_gets_a_suggestion(server: Stack, env: dict[str, str]) -> None:
    for extra in ([], ["-i", "seed=1"]):  # with -i, the schema of no model types it
        out = run_cli(env, "submit", "wan22-fast-tv2", "-p", "a fox", *extra)
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
