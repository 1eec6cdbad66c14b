"""docs/configuration.md is generated from the settings classes and kept current."""

from __future__ import annotations

from tests.support.processes import ROOT
from vidq.config import GROUPS
from vidq.config_doc import REGENERATE, render, setting_infos


def test_configuration_page_is_current() -> None:
    page = ROOT / "docs" / "configuration.md"
    assert page.exists(), f"docs/configuration.md is missing; run `{REGENERATE}`"
    assert page.read_text() == render(), f"docs/configuration.md is stale; run `{REGENERATE}`"


def test_every_setting_and_group_is_described() -> None:
    for info in setting_infos():
        assert info.description.endswith("."), f"{info.env} needs a description (a sentence)"
        assert info.env in render()
    for name, group in GROUPS.items():
        assert (group.__doc__ or "").strip(), f"settings group {name} needs a docstring"
