"""The API-only install stays light: no torch or diffusers unless the wan engine runs."""

from __future__ import annotations

import subprocess
import sys

from tests.support.processes import ROOT


def test_cli_api_and_layout_do_not_import_torch() -> None:
    code = (
        "import sys; import vidq.cli.main, vidq.api, vidq.worker, vidq.engines.base, "
        "vidq.engines.wan_layout; "
        "heavy = sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules); "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
