"""How `vidq submit` reads its inputs, run in the test's process (typer's ``CliRunner``, the
command's own code) against the in-process stack without workers: any input of a model's
schema (`-i KEY=VALUE`, `--json FILE`), its errors worded with the user's flags rather than
the wire fields, and the "did you mean" of an unknown model id; what was submitted is read
back from `GET /requests/{id}`. The client commands as processes, following a request to
its download, are tests/acceptance/test_cli_client.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Outcome, invoke
from tests.support.media import encode_image, picture
from tests.support.stack import Stack, stack


# -- `vidq submit` with any input of a model's schema ---------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("cli-inputs") / "data", workers=0) as srv:
        yield srv


@pytest.fixture
def env(server: Stack, tmp_path: Path) -> dict[str, str]:
    return {
        "VIDQ_URL": server.url,
        "VIDQ_TOKEN": server.token("erin"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "COLUMNS": "400",  # rich wraps usage errors at the width: keep them on one line
    }


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


def submitted(server: Stack, env: dict[str, str], out: Outcome) -> Any:
    """What the server holds of the request ``out`` submitted."""
    assert out.returncode == 0, out.stderr
    rid = out.stdout.split()[1]
    with server.client(env["VIDQ_TOKEN"]) as c:
        r = c.get(f"/requests/{rid}")
    assert r.status_code == 200, r.text
    return r.json()


def test_i_gives_any_input_typed_by_the_schema(
    server: Stack, env: dict[str, str], files: dict[str, Path]
) -> None:
    out = invoke(
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
    out = invoke(env, "submit", "wan22-fast-i2v", "--image", str(files["first"]), "--no-wait",
                  "-i", "new_resolution=720")  # fmt: skip
    assert submitted(server, env, out)["inputs"]["new_resolution"] == 720


def test_json_file_with_i_and_flags_on_top(
    server: Stack, env: dict[str, str], tmp_path: Path
) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"prompt": "from the file", "width": 160, "height": 128,
                                "duration": 2, "seed": 1, "negative_prompt": "file"}))  # fmt: skip
    out = invoke(env, "submit", "wan22-fast-t2v", "--json", str(spec), "-i", "seed=2",
                  "--width", "192", "--no-wait")  # fmt: skip
    inputs = submitted(server, env, out)["inputs"]
    assert {k: inputs[k] for k in ("prompt", "width", "height", "duration", "seed")} == {
        "prompt": "from the file", "width": 192, "height": 128, "duration": 2, "seed": 2,
    }  # fmt: skip
    assert inputs["negative_prompt"] == "file"
    out = invoke(env, "submit", "wan22-fast-t2v", "--json", str(spec), "-p", "the flag",
                  "-i", "prompt=the -i", "--no-wait")  # fmt: skip
    assert submitted(server, env, out)["inputs"]["prompt"] == "the flag"

    spec.write_text("[1, 2]")
    out = invoke(env, "submit", "wan22-fast-t2v", "--json", str(spec))
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
    out = invoke(env, "submit", "wan22-fast-t2v", "-p", "a fox", *args, "--no-wait")
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
        out = invoke(env, "submit", *args, "--no-wait")
        assert out.returncode == 1, (args, out.stderr)
        assert out.stderr.startswith(f"error: HTTP 422: {named}: "), (args, out.stderr)
        wire = {"data_uri", "second_image_uri", "audio_uri"} & set(out.stderr.split())
        assert not wire, (args, out.stderr)


def test_an_unknown_model_id_gets_a_suggestion(server: Stack, env: dict[str, str]) -> None:
    for extra in ([], ["-i", "seed=1"]):  # with -i, the schema of no model types it
        out = invoke(env, "submit", "wan22-fast-tv2", "-p", "a fox", *extra)
        assert out.returncode == 1
        assert out.stderr == (
            "error: HTTP 404: Unknown model 'wan22-fast-tv2'; did you mean 'wan22-fast-t2v'?\n"
        )
    out = invoke(env, "submit", "no-such-model", "-p", "a fox")
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
