"""The package `vidq` (no extra) is the SDK and the client CLI, nothing of the server.

The wheel is built from this checkout with this environment's setuptools, and installed into
a fresh virtual environment next to its base dependencies only, taken from this environment
(no package index is used): there, without FastAPI or any database driver, the SDK and the
client commands work against a loopback server, and a server command says how to get the
server instead of failing with a traceback.
"""

from __future__ import annotations

import email.parser
import importlib.metadata
import json
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.loopback import loopback_http
from tests.support.processes import ROOT
from vidq.console import INSTALL_SERVER

BASE = {"httpx", "typer", "rich"}
SERVER = {
    "fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "boto3", "av", "pillow", "numpy",
    "websockets", "pydantic", "pydantic-settings",
}  # fmt: skip
# Modules of the server's dependencies that must not be importable next to the SDK alone
# (pydantic is not listed: typer itself may depend on it).
SERVER_MODULES = ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "boto3", "av", "PIL",
                  "numpy", "websockets", "pydantic_settings")  # fmt: skip


def documented(start: str) -> list[str]:
    """The words after ``pip`` of the line of docs/clients.md#installing-the-sdk that starts
    with ``start``."""
    page = (ROOT / "docs" / "clients.md").read_text()
    block = page.split("### Installing the SDK", 1)[1].split("```bash", 1)[1].split("```")[0]
    (line,) = [ln for ln in block.splitlines() if ln.startswith(start)]
    return shlex.split(line.split("#")[0])[1:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built as docs/clients.md says (offline here: this
    environment's setuptools, no index) from a copy (the build writes next to it)."""
    tree = tmp_path_factory.mktemp("tree")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", tree / "src", ignore=ignore)
    dist = tmp_path_factory.mktemp("dist")
    words = documented("pip wheel ")
    assert words[-1] == "/path/to/vidq" and "dist" in words, words
    words = [str(tree) if w == "/path/to/vidq" else str(dist) if w == "dist" else w for w in words]
    offline = ["-q", "--no-build-isolation", "--no-index"]
    subprocess.run([sys.executable, "-m", "pip", *words, *offline], check=True, timeout=180)
    (built,) = dist.glob("vidq-*.whl")
    # the documented install line names the file this build makes
    assert documented("pip install dist/")[-1] == f"dist/{built.name}", "docs/clients.md"
    return built


def metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as whl:
        name = next(n for n in whl.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(whl.read(name).decode())


def requirements(meta: Message, extra: str = "") -> list[Requirement]:
    """What ``pip install vidq`` (extra "") or ``vidq[extra]`` asks for."""
    found = []
    for line in meta.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is None or req.marker.evaluate({"extra": extra}):
            found.append(req)
    return found


def names(reqs: list[Requirement]) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def test_the_wheel_declares_the_sdk_and_the_server_apart(wheel: Path) -> None:
    meta = metadata(wheel)
    assert set(meta.get_all("Provides-Extra") or []) >= {"server", "wan", "fp8", "test"}
    base = names(requirements(meta))
    assert base == BASE
    assert names(requirements(meta, "server")) - base >= SERVER
    wan = requirements(meta, "wan")
    assert {"torch", "diffusers"} <= names(wan)
    assert any(r.name == "vidq" and r.extras == {"server"} for r in wan)  # a wan worker
    assert "torchao" in names(requirements(meta, "fp8"))
    with zipfile.ZipFile(wheel) as whl:
        entry_points = next(n for n in whl.namelist() if n.endswith("entry_points.txt"))
        assert "vidq = vidq.console:main" in whl.read(entry_points).decode()
        # The web app ships inside the package: every file of src/vidq/web.
        web = {p.name for p in (ROOT / "src" / "vidq" / "web").iterdir()}
        assert {"index.html", "main.js", "app.css"} <= web
        assert {
            n.removeprefix("vidq/web/") for n in whl.namelist() if n.startswith("vidq/web/")
        } == web


def base_distributions(meta: Message) -> dict[str, importlib.metadata.Distribution]:
    """The installed distributions that ``pip install vidq`` needs: the base requirements
    and theirs, transitively, markers evaluated for this interpreter."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = requirements(meta)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found[name] = dist = importlib.metadata.distribution(name)
        for line in dist.requires or []:
            sub = Requirement(line)
            wanted = ["", *req.extras]
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append(sub)
    return found


def link_into(dist: importlib.metadata.Distribution, site: Path) -> None:
    """Make ``dist`` (with its .dist-info) importable in another environment's ``site``."""
    home = Path(str(dist.locate_file("")))
    tops = {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}
    for top in tops:
        if not (site / top).exists():
            (site / top).symlink_to(home / top)


@pytest.fixture(scope="module")
def sdk_env(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment holding the wheel and its base dependencies, nothing else."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_path('purelib'))"
    site = Path(subprocess.check_output([python, "-c", purelib], text=True).strip())
    for dist in base_distributions(metadata(wheel)).values():
        link_into(dist, site)
    # pip checks the wheel's base requirements against what is there: a base dependency
    # missing from the metadata's closure would fail here (no index to fetch it from).
    install = ["--python", python, "install", "-q", "--no-index", "--no-cache-dir", wheel]
    subprocess.run([sys.executable, "-m", "pip", *install], check=True, timeout=180)
    yield venv


def isolated(venv: Path, tmp_path: Path) -> dict[str, str]:
    """An environment for the venv's programs: no PYTHONPATH pointing at this checkout."""
    return {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8"}


def test_the_sdk_works_without_the_server(sdk_env: Path, tmp_path: Path) -> None:
    page = {"requests": [{"request_id": "7"}], "next_before": None}
    routes = {"/requests": (200, {"Content-Type": "application/json"}, json.dumps(page).encode())}
    code = (
        "import importlib.util, json, sys, vidq\n"
        "with vidq.Client(sys.argv[1], 't') as client:\n"
        "    page = client.requests()\n"
        f"missing = [m for m in {SERVER_MODULES!r} if importlib.util.find_spec(m) is None]\n"
        "print(json.dumps({'file': vidq.__file__, 'page': page, 'missing': missing,"
        " 'exports': sorted(vidq.__all__)}))\n"
    )
    with loopback_http(routes) as (url, hits):
        out = subprocess.run(
            [sdk_env / "bin" / "python", "-c", code, url],
            env=isolated(sdk_env, tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    seen = json.loads(out.stdout)
    assert seen["file"].startswith(str(sdk_env))  # the wheel's vidq, not this checkout's
    assert seen["page"] == page and hits == ["/requests?limit=20"]
    assert seen["missing"] == list(SERVER_MODULES)
    assert {"Client", "AsyncClient", "RetryPolicy", "verify_webhook"} <= set(seen["exports"])


def test_the_client_cli_works_and_a_server_command_says_what_to_install(
    sdk_env: Path, wheel: Path, tmp_path: Path
) -> None:
    env = isolated(sdk_env, tmp_path)
    vidq_cmd = [os.fspath(sdk_env / "bin" / "vidq")]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*vidq_cmd, *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    helped = run("--help")
    assert helped.returncode == 0, helped.stderr
    assert "submit" in helped.stdout and INSTALL_SERVER in " ".join(helped.stdout.split())
    version = run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout == f"vidq {metadata(wheel)['Version']}\n"
    page = {"requests": [{"request_id": 7, "model_id": "m", "status": "IN_QUEUE",
                          "created_at": 0}], "next_before": None}  # fmt: skip
    routes = {"/requests": (200, {"Content-Type": "application/json"}, json.dumps(page).encode())}
    with loopback_http(routes) as (url, _):
        listed = run("requests", "--url", url, "--token", "t")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split("\t") == ["REQUEST_ID", "MODEL_ID", "STATUS", "CREATED"]
    assert row.split("\t")[:3] == ["7", "m", "IN_QUEUE"]
    for command in ("serve", "token"):
        refused = run(command, "--help")
        assert refused.returncode == 2
        assert f"vidq {command}: not a client command" in refused.stderr
        assert INSTALL_SERVER in refused.stderr
        assert "Traceback" not in refused.stderr + refused.stdout
