"""The models file: the shipped one reproduces the catalog as it was in code (a fixture
dumped from that code before the file replaced it), and each bad file is refused at start
with its file, entry and field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidq import catalog
from vidq.api.fal import catalog as fal_catalog
from vidq.catalog import input_schema, load, schema_json
from vidq.cli.main import app
from vidq.compose import load_models, worker_options
from vidq.config import Settings
from vidq.errors import CannotStart
from vidq.models_file import ModelsFileError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "catalog_before_models_file.json"
SRC = Path(__file__).parents[2] / "src"


def test_the_shipped_file_reproduces_the_catalog_that_was_code() -> None:
    before = json.loads(FIXTURE.read_text())
    models = load()
    assert list(models)[:16] == before["order"]
    for mid, want in before["models"].items():
        m = models[mid]
        got = {
            "family": m.family.value,
            "tier": int(m.tier),
            "pool": m.pool,
            "variant": m.variant,
            "steps": m.steps,
            "steps_hq": m.steps_hq,
            "eta_seconds": m.eta_seconds,
            "output_name": m.output_name,
            "schema": schema_json(m),
        }
        assert got == want, mid
        assert input_schema(m) is catalog.INPUT_SCHEMAS[m.family]  # the very class, unchanged
    aliases = {a.endpoint: (m.id, a.schema) for m in models.values() for a in m.fal}
    fal = {
        eid: (e["model"], fal_catalog.SCHEMAS[schema].__name__, e["schema_json"])
        for eid, (mid, schema) in aliases.items()
        if (e := before["fal"].get(eid)) and e["model"] == mid
        for _ in [0]
    }
    assert set(fal) == set(before["fal"])  # the 8 aliases, both /lora endpoints among them
    for eid, (mid, cls, schema) in fal.items():
        assert (mid, cls) == (before["fal"][eid]["model"], before["fal"][eid]["schema"])
        assert fal_catalog.SCHEMAS[aliases[eid][1]].model_json_schema() == schema
    assert sorted(before["pools"]) == sorted({m.pool for m in models.values() if not m.opt_in})


def test_ltx2_entries_are_opt_in_with_their_contract() -> None:
    models = load()
    t2v, i2v = models["ltx2-t2v"], models["ltx2-i2v"]
    assert (t2v.family.value, t2v.pool, t2v.engine) == ("t2v", "ltx2-t2v", "ltx2")
    assert (i2v.family.value, i2v.pool, i2v.engine) == ("i2v", "ltx2-i2v", "ltx2")
    assert [a.endpoint for a in t2v.fal] == ["fal-ai/ltx-2/text-to-video"]
    assert [a.endpoint for a in i2v.fal] == ["fal-ai/ltx-2/image-to-video"]
    assert t2v.opt_in and i2v.opt_in and t2v.fps == 24 and t2v.frame_rule == "8k+1"
    # what reaches the engine as EngineJob.options (the contract with the ltx2 engine)
    assert t2v.options == {"pipeline": "LTX2Pipeline", "fps": 24}
    assert i2v.options == {"pipeline": "LTX2ImageToVideoPipeline", "fps": 24}
    schema = input_schema(t2v)
    assert schema(prompt="a").width == 1280 and schema(prompt="a").height == 704
    with pytest.raises(ValueError, match="multiple of 32"):
        schema(prompt="a", width=720)


def test_a_default_worker_leaves_the_opt_in_pools_and_a_named_one_serves_them() -> None:
    load_models(Settings())
    assert set(worker_options(Settings()).pools) == {
        "hunyuan-foley", "wan22-i2v", "wan22-i2v-fp8", "wan22-s2v", "wan22-t2v", "wan22-t2v-fp8",
    }  # fmt: skip
    named = worker_options(Settings(), pools=["ltx2-t2v", "ltx2-i2v"])
    assert named.pools == ("ltx2-t2v", "ltx2-i2v")


GOOD = """
[[model]]
id = "acme-t2v"
family = "t2v"
pool = "acme"
"""

BAD = {
    "unknown family": (
        GOOD.replace('family = "t2v"', 'family = "t2a"'),
        "#1 (acme-t2v)",
        "family",
        "unknown family 't2a'",
    ),
    "unknown engine option": (
        GOOD + 'engine = "ltx2"\noptions = { steps = 8, sampler = "euler" }\n',
        "#1 (acme-t2v)",
        "options.sampler",
        "the ltx2 engine has no option 'sampler'",
    ),
    "template input naming a missing node": (
        GOOD
        + 'engine = "comfyui"\n[model.options]\ntemplate = "t2v"\n'
        + '[[model.options.inputs]]\nname = "style_strength"\ntype = "float"\ndefault = 1.0\n'
        + 'node = "999"\ninput = "strength_model"\n',
        "#1 (acme-t2v)",
        "options.inputs[0].node",
        "the template has no node '999'",
    ),
    "duplicate id": (GOOD + GOOD, "#2 (acme-t2v)", "id", "duplicate id 'acme-t2v'"),
    "duplicate alias": (
        GOOD.replace("[[model]]", "[[model]]\nfal = [{ endpoint = 'acme/a', schema = 'foley' }]")
        + GOOD.replace("acme-t2v", "acme-b").replace(
            "[[model]]", "[[model]]\nfal = [{ endpoint = 'Acme/A', schema = 'foley' }]"
        ),
        "#2 (acme-b)",
        "fal[0].endpoint",
        "duplicate alias 'Acme/A'",
    ),
    "unknown field": (GOOD + "colour = 'red'\n", "#1 (acme-t2v)", "colour", "unknown field"),
    "a pace the engine cannot make": (
        GOOD + "fps = 24\n",
        "#1 (acme-t2v)",
        "fps",
        "the preview engine makes videos at 16 fps of 4k+1 frames",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_each_bad_file_is_refused_with_its_place(case: str, tmp_path: Path) -> None:
    text, entry, field, message = BAD[case]
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(ModelsFileError) as caught:
        load(path)
    assert (caught.value.file, caught.value.entry, caught.value.field) == (str(path), entry, field)
    assert message in str(caught.value)
    # at start: the composition root's CannotStart (exit 2), and the catalog as it was
    before = list(catalog.MODELS)
    with pytest.raises(CannotStart) as start:
        load_models(Settings(models_file=path))
    assert str(path) in start.value.message and field in start.value.message
    assert list(catalog.MODELS) == before
    # `vidq models check FILE`: the same words, exit 2
    result = CliRunner().invoke(app, ["models", "check", str(path)])
    assert result.exit_code == 2
    assert f"{path}: entry {entry} {field}: " in result.output


def test_models_check_lists_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(app, ["models", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "acme-t2v: t2v, pool acme, engine preview" in result.output
    missing = CliRunner().invoke(app, ["models", "check", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "cannot read it" in missing.output


def test_vidq_serve_refuses_a_bad_file_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(BAD["unknown family"][0])
    env = {
        **os.environ,
        "PYTHONPATH": str(SRC),
        "VIDQ_MODELS_FILE": str(path),
        "VIDQ_DATA_DIR": str(tmp_path / "data"),
    }
    done = subprocess.run(
        [sys.executable, "-c", "from vidq.console import main; main()", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"{path}: entry #1 (acme-t2v) family: unknown family 't2a'" in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_the_inputs_page_lists_every_id_and_alias_of_the_shipped_file() -> None:
    page = (Path(__file__).parents[2] / "docs" / "inputs.md").read_text()
    models_table = page.split("## Models", 1)[1].split("\n## ", 1)[0]
    fal_table = page.split("## fal endpoint ids", 1)[1].split("\n## ", 1)[0]
    for m in load().values():
        assert f"`{m.id}`" in models_table and f"`{m.pool}`" in models_table, m.id
        for alias in m.fal:
            assert f"| `{alias.endpoint}` | `{m.id}` |" in fal_table, alias.endpoint


def test_a_template_input_of_the_wrong_kind_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "models.toml"
    path.write_text(
        BAD["template input naming a missing node"][0]
        .replace('node = "999"', 'node = "3"')
        .replace('type = "float"', 'type = "str"')
    )
    with pytest.raises(ModelsFileError) as caught:
        load(path)
    assert caught.value.field == "options.inputs[0]"
    assert "the default 1.0 is not of type str" in str(caught.value)
