"""The engine registry: a table of lazily imported engines, each built from its own
settings group sent as JSON."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from vidq.config import PreviewSettings, Settings
from vidq.engines import ENGINES, create_engine, engine_options
from vidq.engines.estimates import ESTIMATES
from vidq.errors import EngineUnavailable


def test_an_unknown_engine_names_the_known_ones() -> None:
    with pytest.raises(EngineUnavailable) as err:
        create_engine("sora", engine_options(None))
    assert err.value.message == "unknown engine 'sora'; known: preview, wan, ltx2, comfyui"


def test_an_engine_whose_dependencies_are_missing_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(ENGINES, "ghost", ("vidq_no_such_module.engine", "GhostEngine"))
    with pytest.raises(EngineUnavailable) as err:
        create_engine("ghost", engine_options(None))
    assert "needs the Python package 'vidq_no_such_module'" in err.value.message


def test_an_engine_is_built_from_its_settings_sent_as_json() -> None:
    options = json.loads(json.dumps(engine_options(PreviewSettings(step_seconds=0.25))))
    engine = create_engine("preview", options)
    assert engine.name == "preview"
    assert engine.step_seconds == 0.25  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_each_entry_names_an_engine_that_takes_its_settings_group(name: str) -> None:
    if name in ("wan", "ltx2"):
        pytest.importorskip("diffusers")
    module, class_name = ENGINES[name]
    cls = getattr(importlib.import_module(module), class_name)
    assert cls.name == name
    assert cls.settings_type is type(Settings().engine_settings()[name])


def test_engine_modules_are_imported_only_when_created() -> None:
    code = (
        "import sys; import vidq.engines.base, vidq.worker; "
        "from vidq.config import PreviewSettings; "
        "from vidq.engines import create_engine, engine_options; "
        "before = sorted(m for m in sys.modules if m.startswith('vidq.engines.')); "
        "create_engine('preview', engine_options(PreviewSettings())); "
        "after = sorted(m for m in sys.modules if m.startswith('vidq.engines.')"
        " or m in ('torch', 'diffusers', 'websockets')); "
        "print(before); print(after)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    before, after = proc.stdout.splitlines()
    assert before == "['vidq.engines.base']"
    assert after == (
        "['vidq.engines.base', 'vidq.engines.preview', 'vidq.engines.preview_media', "
        "'vidq.engines.previews']"
    )


def test_every_engine_has_an_estimate_the_api_reads_without_importing_engines() -> None:
    """The API's ETAs before a pool has history come from the engines' estimates table
    (engines/estimates.py), which loads no engine module (no torch in the API)."""
    assert set(ESTIMATES) == set(ENGINES)
    code = (
        "import sys; import vidq.api.app; "
        "print(sorted(m for m in sys.modules if m.startswith('vidq.engines.')"
        " or m in ('torch', 'diffusers', 'websockets')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.strip() == "['vidq.engines.base', 'vidq.engines.estimates']"


def test_an_ltx2_engine_without_its_weights_is_refused_before_torch_is_imported(
    tmp_path: Path,
) -> None:
    """The ltx2 engine's preflight (engines/ltx2_layout.py) refuses missing weights, no
    models folder and a weights folder outside it before its module and torch load."""
    code = textwrap.dedent("""
        import json, sys
        from vidq.engines import create_engine
        from vidq.errors import EngineError
        for settings in json.loads(sys.argv[1]):
            try:
                create_engine("ltx2", {"settings": settings})
            except EngineError as exc:
                print(type(exc).__name__, exc.message.splitlines()[0])
        print(sorted(m for m in ("torch", "diffusers", "vidq.engines.ltx2") if m in sys.modules))
    """)
    cases = [{"models_dir": str(tmp_path)}, {}, {"models_dir": str(tmp_path), "weights": "../x"}]
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(cases)],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout.splitlines() == [
        f"EngineUnavailable weights for LTX-2 in {tmp_path / 'LTX-2'} are incomplete",
        "EngineUnavailable the ltx2 engine needs model weights: set VIDQ_MODELS_DIR",
        "EngineError ltx2 weights folder '../x' must be a folder name under the models dir",
        "[]",
    ]
