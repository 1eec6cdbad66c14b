"""`/docs` (Swagger UI) and `/redoc` on a machine with no network: a real browser whose
every request beyond the server is refused renders both pages from the server alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Route, expect, sync_playwright

from tests.acceptance.test_webapp import _chromium
from tests.support.processes import Server, serve

pytestmark = pytest.mark.timeout(900)  # the first browser test may install chromium


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("docs") / "data", workers=0) as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=_chromium())
        yield b
        b.close()


def test_the_doc_pages_refer_only_to_this_server(server: Server) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(server.url + path)
        assert page.status_code == 200, path
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        urls = [u for pair in assets for u in pair if u]
        assert urls, f"{path} refers to no script"
        for url in urls:
            assert url.startswith("/"), f"{path} loads {url} from elsewhere"
            assert httpx.get(server.url + url).status_code == 200, url


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")],
)
def test_the_doc_pages_render_offline(
    server: Server, browser: Browser, path: str, shown: str, tmp_path: Path
) -> None:
    refused: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("**/*", offline)
        page.goto(server.url + path)
        expect(page.locator(shown).first).to_contain_text("vidq", timeout=30_000)
        # an operation of the API is listed: the page read /openapi.json
        expect(page.get_by_text("/queue/{model_id}").first).to_be_visible()
        page.screenshot(path=tmp_path / f"{path.strip('/')}.png")
    finally:
        context.close()
    assert refused == [], f"{path} reached beyond the server: {refused}"
