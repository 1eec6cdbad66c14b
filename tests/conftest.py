"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_vidq_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's VIDQ_* settings."""
    for name in list(os.environ):
        if name.startswith("VIDQ_"):
            monkeypatch.delenv(name, raising=False)
    yield
