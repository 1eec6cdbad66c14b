"""The web app's files (``src/vidq/web/``) and how the API serves them: everything ships
in the package and is served from this origin with a strict CSP; the scripts never parse
data as HTML and never fetch anything from elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient

from vidq.api import web

WEB = Path(__file__).resolve().parents[2] / "src" / "vidq" / "web"


def client() -> TestClient:
    app = FastAPI()
    app.include_router(web.router(web.WebFiles()))
    return TestClient(app, base_url="http://localhost")


def test_every_file_is_served_with_a_csp_and_an_etag() -> None:
    files = sorted(p.name for p in WEB.iterdir())
    assert {"index.html", "main.js", "app.css"} <= set(files)
    with client() as http:
        page = http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert page.headers["cache-control"] == "no-cache"
        for name in files:
            r = http.get(f"/app/{name}")
            assert r.status_code == 200, name
            assert r.headers["x-content-type-options"] == "nosniff"
            again = http.get(f"/app/{name}", headers={"If-None-Match": r.headers["etag"]})
            assert again.status_code == 304 and again.content == b""
        assert http.get("/app/main.js").headers["content-type"].startswith("text/javascript")
        for missing in ("/app/nope.js", "/app/../__init__.py", "/app/", "/app/%2e%2e/cli.py"):
            assert http.get(missing).status_code == 404, missing


def test_scripts_build_the_page_from_text_only() -> None:
    """No HTML parsing of data, no inline handlers, nothing fetched from another origin."""
    for path in WEB.iterdir():
        text = path.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in text, (path.name, banned)
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path.name
        assert not re.search(r"\son[a-z]+=", text) or path.suffix != ".html", path.name
    index = (WEB / "index.html").read_text()
    assert "<script>" not in index and 'type="module"' in index  # no inline script
