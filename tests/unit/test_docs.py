"""The manual points only at things that exist.

Every relative Markdown link in README.md and docs/ resolves to a file (and its
``#anchor`` to a heading of that file), and every repository path written in backticks
(``src/vidq/...``, ``tests/...``, ``bench/...``, ``deploy/...``, ``docs/...``) exists.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [
    "README.md",
    "CONTRIBUTING.md",
    "docs/README.md",
    "docs/api.md",
    "docs/inputs.md",
    "docs/clients.md",
    "docs/webhooks.md",
    "docs/webapp.md",
    "docs/deployment.md",
    "docs/architecture.md",
    "docs/engines/wan.md",
    "docs/engines/comfyui.md",
    "docs/configuration.md",
    "docs/models.md",
    "docs/spec/video-generation-api.md",
]
README_MAX_LINES = 150

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
_REPO_PATH = re.compile(
    r"(?<![\w./$~-])(?:src/vidq|tests|bench|deploy|docs|requirements)/[\w.*/-]*"
)


def markdown_files(root: Path) -> list[Path]:
    return [root / "README.md", root / "CONTRIBUTING.md", *sorted((root / "docs").rglob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a file's headings (GitHub numbers repeated ones: x, x-1, x-2)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in _HEADING.findall(_FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(page: Path, root: Path) -> list[str]:
    """Relative links of ``page`` whose file or heading does not exist."""
    text = _CODE_SPAN.sub("", _FENCE.sub("", page.read_text()))
    problems = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:, ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        rel = dest.relative_to(root).as_posix() if dest.is_relative_to(root) else str(dest)
        if not dest.exists():
            problems.append(f"{target}: no file {rel}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            problems.append(f"{target}: no heading #{anchor} in {rel}")
    return problems


def path_problems(page: Path, root: Path) -> list[str]:
    """Repository paths in backticks (code spans and code blocks) that do not exist."""
    text = page.read_text()
    snippets = [m.group(0) for m in _FENCE.finditer(text)]
    snippets += [m.group(2) for m in _CODE_SPAN.finditer(_FENCE.sub("", text))]
    problems = []
    for snippet in snippets:
        for path in _REPO_PATH.findall(snippet):
            path = path.rstrip(".")
            if not (any(root.glob(path)) if "*" in path else (root / path).exists()):
                problems.append(f"`{path}` does not exist")
    return problems


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("page", markdown_files(ROOT), ids=_rel)
def test_links_resolve(page: Path) -> None:
    assert link_problems(page, ROOT) == []


@pytest.mark.parametrize("page", markdown_files(ROOT), ids=_rel)
def test_repository_paths_exist(page: Path) -> None:
    assert path_problems(page, ROOT) == []


def test_every_page_of_the_manual_exists() -> None:
    missing = [p for p in PAGES if not (ROOT / p).is_file()]
    assert missing == []


def test_readme_is_a_quickstart() -> None:
    text = (ROOT / "README.md").read_text()
    assert "make serve" in text
    assert "make test" in text
    assert len(text.splitlines()) <= README_MAX_LINES


def test_the_checks_catch_broken_links_anchors_and_paths(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## The `x` part: y\n")
    (tmp_path / "README.md").write_text(
        "[ok](docs/a.md#the-x-part-y) [self](#intro) [web](https://example.com/nowhere)\n"
        "[gone](docs/b.md) [bad anchor](docs/a.md#nope)\n"
        "`docs/a.md` `tests/nowhere.py` and `batch/src/routes/x.ts`\n\n"
        "```bash\npython bench/missing.py\n```\n\n## Intro\n"
    )
    page = tmp_path / "README.md"
    assert link_problems(page, tmp_path) == [
        "docs/b.md: no file docs/b.md",
        "docs/a.md#nope: no heading #nope in docs/a.md",
    ]
    assert sorted(path_problems(page, tmp_path)) == [
        "`bench/missing.py` does not exist",
        "`tests/nowhere.py` does not exist",
    ]
