"""Tools a test needs from the machine (node, chromium, jq, PostgreSQL's binaries, ...).

Locally a missing tool skips the test with a reason that says what to install (``-rs``,
in pyproject's addopts, prints it). In CI (``CI`` set to anything but ``0``/``false``,
as ``.ci/run`` does) a missing tool fails the test instead: a CI run that skipped what it
was meant to check is not a pass. The conftest turns any other skip into a failure in CI
too.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """Whether this run is CI's (``CI`` set, and not to 0/false/no)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class ToolMissing(RuntimeError):
    """A program a test needs is not installed; the message says how to get it."""


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) the current test because ``reason``."""
    if in_ci():
        pytest.fail(f"missing in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def require(tool: str, why: str) -> str:
    """The path of ``tool`` on PATH; else skip or fail (``missing``), saying ``why``."""
    found = shutil.which(tool)
    if found is None:
        missing(f"{tool} not found on PATH: {why}")
    return found
