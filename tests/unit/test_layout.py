"""The repository's own module names leave the standard library's visible.

Python puts a script's folder first on ``sys.path``: a helper run as a script
(tests/support/fal_py_driver.py) imports a sibling ``http.py`` in place of the standard
library's ``http``, and every import of httpx then fails in that process only. tests/ and
bench/ hold such scripts; src/ is imported as the package ``vidq``, never run by path."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_no_module_of_the_repository_is_named_like_a_standard_library_module() -> None:
    stdlib = set(sys.stdlib_module_names)
    clashes = sorted(
        str(path.relative_to(ROOT))
        for top in ("tests", "bench")
        for path in (ROOT / top).rglob("*.py")
        if path.stem in stdlib and "node_modules" not in path.parts
    )
    assert not clashes, f"named like a standard-library module: {clashes}"
