"""What a module loads: the API-only install has no torch or diffusers unless the wan engine
runs, and the ``vidq`` command loads the server's parts only for a server command, so that
a client command (``vidq status``) starts in a fraction of a second; the ``vidq token``
commands (``vidq.api.auth``) load no web framework either, and neither they nor a local
worker load an HTTP client; an engine's fork server (one per worker process) loads what
engine children share and nothing of the worker loop."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT


def _loaded(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_api_and_layout_do_not_import_torch() -> None:
    code = (
        "import sys; import vidq.cli.main, vidq.api.app, vidq.worker, vidq.engines.base, "
        "vidq.engines.wan_layout; "
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = _loaded(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("imported", "absent"),
    [
        # the vidq command loads the server's parts only when a server command runs
        ("vidq.cli.main", ("fastapi", "starlette", "uvicorn", "alembic", "sqlalchemy", "av",
                           "boto3", "pydantic_settings")),
        # the vidq token commands (vidq.api.auth) load no web framework
        ("vidq.cli.main, vidq.api.auth", ("fastapi", "starlette", "uvicorn", "av")),
        # a server command or a local worker (the composition root) loads no HTTP client:
        # the SDK, rich's tables, the worker protocol's client and the LoRA fetcher's wait
        # for the command, the remote worker or the first LoRA that needs them
        ("vidq.console, vidq.cli.main, vidq.compose",
         ("httpx", "vidq.client", "vidq.worker.remote", "vidq.media.fetch", "rich.table")),
        # an engine's fork server: the child's module and the preview engine's, without the
        # SDK (httpx) or the worker loop, its store ports and metrics
        ("vidq.worker.child, vidq.engines.preview",
         ("httpx", "vidq.client", "vidq.worker.runner", "prometheus_client", "sqlalchemy")),
    ],
    ids=["the command", "the token commands", "a local worker", "the fork server"],
)  # fmt: skip
def test_a_command_loads_no_server_part_it_does_not_run(
    imported: str, absent: tuple[str, ...]
) -> None:
    code = (
        f"import sys; import {imported}; print(sorted(m for m in {absent!r} if m in sys.modules))"
    )
    proc = _loaded(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


HEAVY = {"torch", "diffusers", "transformers"}  # and safetensors.torch, which imports torch


def _top_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports when it is imported: its module-level imports (those
    under ``if TYPE_CHECKING:`` left out)."""
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_collecting_the_tests_imports_no_torch() -> None:
    """Every xdist worker imports every test module to collect it: a module-level import
    that loads torch (directly, or through a module of vidq or tests/support that does)
    costs each of them about 1.5 CPU-s. Tests import such modules inside themselves."""
    modules = {
        ".".join(path.relative_to(base).with_suffix("").parts): path
        for base, top in ((ROOT / "src", "vidq"), (ROOT, "tests"))
        for path in (base / top).rglob("*.py")
        if "node_modules" not in path.parts
    }
    imports = {name: _top_level_imports(path) for name, path in modules.items()}
    heavy: set[str] = set()
    changed = True
    while changed:  # a module is heavy when it imports torch or a heavy module
        changed = False
        for name, imported in imports.items():
            if name not in heavy and any(
                m in heavy or m.split(".")[0] in HEAVY or m == "safetensors.torch" for m in imported
            ):
                heavy.add(name)
                changed = True
    assert "vidq.engines.wan_pipeline" in heavy  # the check sees a module that does
    collected = sorted(
        n for n in heavy
        if n.startswith("tests.") and (n.rsplit(".", 1)[-1].startswith("test_")
                                       or n.endswith("conftest"))
    )  # fmt: skip
    assert not collected, f"these test modules import torch when collected: {collected}"
