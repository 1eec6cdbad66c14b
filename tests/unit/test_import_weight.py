"""What a module loads: the API-only install has no torch or diffusers unless the wan engine
runs, and the ``vidq`` command loads the server's parts only for a server command, so that
a client command (``vidq status``) starts in a fraction of a second; the ``vidq token``
commands (``vidq.api.auth``) load no web framework either."""

from __future__ import annotations

import subprocess
import sys

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


def test_the_command_loads_no_server_part_until_a_server_command_runs() -> None:
    server = ("fastapi", "starlette", "uvicorn", "alembic", "sqlalchemy", "av", "boto3")
    code = (
        "import sys; import vidq.cli.main; "
        f"print(sorted(m for m in {server!r} if m in sys.modules))"
    )
    proc = _loaded(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout


def test_the_token_commands_load_no_web_framework() -> None:
    web = ("fastapi", "starlette", "uvicorn", "av")
    code = (
        "import sys; import vidq.cli.main, vidq.api.auth; "
        f"print(sorted(m for m in {web!r} if m in sys.modules))"
    )
    proc = _loaded(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
