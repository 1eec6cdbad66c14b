"""The locks in requirements/ pin what the repository installs: this venv holds exactly the
dev lock's packages at its versions, every lock fits pyproject.toml's ranges, the server and
GPU locks agree with the dev lock, and every package that src/ imports is declared.

Marked ``lock``: `make deps-latest` runs the suite on the newest versions instead, where
these must not hold."""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.lock

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ROOT / "requirements"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# Each lock and the extras it was compiled from (the Makefile's `lock` target).
EXTRAS = {"dev.txt": ("server", "test", "wan"), "server.txt": ("server",)}
EXTRAS["gpu.txt"] = ("server", "wan", "fp8")


def pins(name: str) -> dict[str, str]:
    """A lock's ``name==version`` lines, by canonical name."""
    found: dict[str, str] = {}
    for line in (LOCKS / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        assert "==" in line and not line.startswith("-"), f"{name}: not a pin: {line!r}"
        package, version = line.split("==", 1)
        found[canonicalize_name(package.split("[")[0])] = version.strip()
    return found


def declared(extras: tuple[str, ...], python: str = "3.11") -> list[Requirement]:
    """pyproject.toml's requirements for the base and ``extras`` (its own extras expanded),
    with environment markers evaluated for Linux and ``python``."""
    project = PYPROJECT["project"]
    optional = project["optional-dependencies"]
    todo, seen, out = list(project["dependencies"]), set(), []
    for extra in extras:
        todo += optional[extra]
    env = {"python_version": python, "sys_platform": "linux", "platform_system": "Linux"}
    while todo:
        req = Requirement(todo.pop())
        if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
            continue
        if canonicalize_name(req.name) == "vidq":
            todo += [r for e in req.extras for r in optional[e] if r not in seen]
            seen.update(todo)
            continue
        out.append(req)
    return out


def test_the_venv_holds_exactly_the_dev_lock() -> None:
    """Nothing unpinned, nothing at another version, nothing missing: a fresh install of the
    lock is what the tests ran on."""
    lock = pins("dev.txt")
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in md.distributions()
        if canonicalize_name(d.metadata["Name"]) != "vidq"
    }
    unpinned = sorted(set(installed) - set(lock))
    assert not unpinned, f"installed but not in requirements/dev.txt: {unpinned} (make lock)"
    # == without a local label also matches a local build: 2.13.0 pins torch 2.13.0+cpu
    drifted = {
        name: (version, lock[name])
        for name, version in installed.items()
        if not SpecifierSet(f"=={lock[name]}").contains(version, prereleases=True)
    }
    assert not drifted, f"installed (venv, lock) versions differ: {drifted} (make install)"
    missing = sorted(set(lock) - set(installed))
    assert not missing, f"in requirements/dev.txt but not installed: {missing} (make install)"


@pytest.mark.parametrize("lock", sorted(EXTRAS))
def test_each_lock_fits_the_ranges_of_pyproject(lock: str) -> None:
    """`make lock` was run after the last change of pyproject.toml: every declared package
    of the lock's extras is pinned at a version its range allows."""
    python = "3.12" if lock == "gpu.txt" else "3.11"
    locked = pins(lock)
    for req in declared(EXTRAS[lock], python):
        name = canonicalize_name(req.name)
        assert name in locked, f"{lock} does not pin {req.name} (make lock)"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{lock} pins {req.name}=={locked[name]}, outside {req} (make lock)"
        )


@pytest.mark.parametrize("lock", ["server.txt", "gpu.txt"])
def test_the_other_locks_take_the_dev_locks_versions(lock: str) -> None:
    """A package shared with the dev lock has the version the tests ran on (torch: the same
    release, PyPI's CUDA build for the GPU image)."""
    dev = pins("dev.txt")
    differ = {
        n: (v, dev[n])
        for n, v in pins(lock).items()
        if n in dev and not SpecifierSet(f"=={v}").contains(dev[n], prereleases=True)
    }
    assert not differ, f"{lock} and dev.txt differ: {differ} (make lock)"


def _imports(path: Path) -> set[str]:
    """The top-level modules a file imports (absolute imports only)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.partition(".")[0])
    return found


def test_every_package_src_imports_is_declared() -> None:
    """A package that vidq imports but only gets through another's dependencies can change
    or vanish with that other package's next release: each one is declared in pyproject."""
    names = {canonicalize_name(r.name) for r in declared(("server", "wan", "fp8", "test"))}
    dists = md.packages_distributions()
    undeclared = {}
    for path in (ROOT / "src" / "vidq").rglob("*.py"):
        for module in _imports(path) - set(sys.stdlib_module_names) - {"vidq", "__future__"}:
            # a module of an extra not installed here (torchao) is named as its package
            owners = {canonicalize_name(d) for d in dists.get(module, [module])}
            if not owners & names:
                undeclared[module] = str(path.relative_to(ROOT))
    assert not undeclared, f"imported by src/ but not declared in pyproject.toml: {undeclared}"
