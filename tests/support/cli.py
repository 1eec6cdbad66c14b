"""The ``vidq`` command run in the test's own process (typer's ``CliRunner`` over the
command's ``app``): for the tests of what a command reads and prints. What needs the
command as a process (its data folder found from its working directory, signals, the
installed entry point) is ``processes.run_cli``'s."""

from __future__ import annotations

import dataclasses

from typer.testing import CliRunner

from vidq.cli.main import app


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one ``vidq`` command did: its exit status and output (as ``run_cli``'s)."""

    returncode: int
    stdout: str
    stderr: str


def invoke(env: dict[str, str], *args: str) -> Outcome:
    """``vidq ARGS`` with ``env`` on top of this process's environment (the tests run
    without the developer's ``VIDQ_*``: tests/conftest.py); an exception other than the
    command's exit is raised."""
    result = CliRunner().invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Outcome(result.exit_code, result.stdout, result.stderr)
