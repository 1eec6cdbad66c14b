"""The History gallery in a real browser (Debian's chromium through Playwright) against
the in-process stack running real preview jobs: a grid of poster frames (images that
loaded, no video players), filters by status and model and a search by prompt (the
server's), Delete from the page with its confirm step (the API then says the request is
deleted), Open plays the video, "Use these settings again" fills the Playground (from the
Open view and from the grid), at phone width in dark mode and with the keyboard only."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.acceptance import test_webapp as web
from tests.support.stack import Stack, stack
from tests.support.wait import wait_status
from vidq.jobs import NewJob

T2V = "wan22-fast-t2v"
PRO = "wan22-fast-t2v-pro"
PHONE = web.PHONE
pytestmark = pytest.mark.timeout(900)

# The browser, the screenshots folder and a fresh page per test, as test_webapp.py has them.
browser = web.browser
shots = web.shots
page = web.page


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with stack(tmp_path_factory.mktemp("gallery") / "data", preview_step_seconds=0.02) as s:
        yield s


def make_requests(server: Stack, user: str, prompts: list[tuple[str, str]]) -> dict[str, str]:
    """Each (model, prompt) submitted as ``user`` and run to COMPLETED; prompt -> id."""
    ids: dict[str, str] = {}
    with server.client(server.token(user)) as http:
        for model, prompt in prompts:
            body = {"prompt": prompt, "width": 224, "height": 128, "duration": 1}
            r = http.post(f"/queue/{model}", json=body)
            assert r.status_code == 200, r.text
            ids[prompt] = r.json()["request_id"]
        for (model, _), rid in zip(prompts, ids.values(), strict=True):
            wait_status(http, model, rid, {"COMPLETED"})
    return ids


def cancelled_request(server: Stack, user: str, prompt: str) -> str:
    """A request cancelled while queued (in a pool no worker here serves)."""
    job = server.store.enqueue(NewJob(user, T2V, "gallery-test-pool", 0, 0, {"prompt": prompt}))
    with server.client(server.token(user)) as http:
        assert http.put(f"/queue/{T2V}/requests/{job.id}/cancel").is_success
    return str(job.id)


def api_get(server: Stack, token: str, path: str) -> httpx.Response:
    return httpx.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def cards(page: Page) -> Any:
    return page.locator(".requests > li")


def card_of(page: Page, prompt: str) -> Any:
    return cards(page).filter(has=page.locator(".prompt", has_text=prompt))


def posters_loaded(page: Page, count: int) -> None:
    page.wait_for_function(
        """(n) => { const imgs = [...document.querySelectorAll('.requests img.poster')];
            return imgs.length === n && imgs.every(i => i.complete && i.naturalWidth > 0) }""",
        arg=count,
    )


def test_the_gallery_filters_searches_deletes_opens_and_reuses(
    page: Page, gallery: Stack, shots: Path
) -> None:
    token = gallery.token("gina")
    ids = make_requests(gallery, "gina", [
        (T2V, "a red kite over the dunes"), (PRO, "a blue whale"), (T2V, "100% pure_joy"),
    ])  # fmt: skip
    cancelled = cancelled_request(gallery, "gina", "a cancelled one")
    make_requests(gallery, "hank", [(T2V, "a red kite of hank's")])
    web.sign_in(page, gallery, token)
    page.get_by_role("link", name="History").click()

    # A grid of posters: images that loaded, no video players; the cancelled one has none.
    expect(cards(page)).to_have_count(4)
    posters_loaded(page, 3)
    expect(page.locator(".requests video")).to_have_count(0)
    expect(card_of(page, "a cancelled one").locator(".badge")).to_have_text("Cancelled")
    expect(card_of(page, "a cancelled one").locator("img")).to_have_count(0)
    size = page.evaluate("() => document.querySelector('.requests img.poster').naturalWidth")
    assert size == 224  # the poster's own width (at most 480)
    page.screenshot(path=shots / "gallery-grid.png", full_page=True)

    # Filters by status and model, and a search by prompt: each asks the server.
    page.get_by_label("Status").select_option("COMPLETED")
    expect(cards(page)).to_have_count(3)
    page.get_by_label("Status").select_option("CANCELLED")
    expect(cards(page)).to_have_count(1)
    expect(cards(page).locator(".prompt")).to_have_text("a cancelled one")
    page.get_by_label("Status").select_option("")
    expect(page.locator("#f-model option[value='wan22-fast-t2v-pro']")).to_have_count(1)
    page.get_by_label("Model", exact=True).select_option(PRO)
    expect(cards(page)).to_have_count(1)
    expect(cards(page).locator(".prompt")).to_have_text("a blue whale")
    page.get_by_label("Model", exact=True).select_option("")
    page.get_by_label("Search prompts").fill("RED KITE")
    page.get_by_label("Search prompts").press("Enter")
    expect(cards(page)).to_have_count(1)  # gina's kite, never hank's
    expect(cards(page).locator(".prompt")).to_have_text("a red kite over the dunes")
    page.get_by_label("Search prompts").fill("%")
    page.get_by_role("button", name="Search").click()
    expect(cards(page)).to_have_count(1)
    expect(cards(page).locator(".prompt")).to_have_text("100% pure_joy")
    assert any("/requests?" in u and "q=%25" in u for u in page.urls)  # type: ignore[attr-defined]
    page.get_by_label("Search prompts").fill("no such words")
    page.get_by_label("Search prompts").press("Enter")
    expect(page.get_by_text("No requests match these filters.")).to_be_visible()
    page.get_by_label("Search prompts").fill("")
    page.get_by_label("Search prompts").press("Enter")
    expect(cards(page)).to_have_count(4)

    # Delete from the page: a confirm step (Keep undoes it), then the card is gone.
    joy = ids["100% pure_joy"]
    card = card_of(page, "100% pure_joy")
    card.get_by_role("button", name=f"Delete request {joy}").click()
    expect(page.get_by_role("button", name="Keep")).to_be_focused()
    page.get_by_role("button", name="Keep").click()
    expect(card.get_by_role("button", name=f"Delete request {joy}")).to_be_focused()
    card.get_by_role("button", name=f"Delete request {joy}").click()
    page.get_by_role("button", name="Delete for good").click()
    expect(page.get_by_text(f"Request {joy} was deleted.")).to_be_visible()
    expect(cards(page)).to_have_count(3)
    deleted = api_get(gallery, token, f"/requests/{joy}").json()
    assert deleted["deleted"] is True and deleted["poster_url"] is None
    listed = api_get(gallery, token, "/requests").json()["requests"]
    assert joy not in [r["request_id"] for r in listed] and cancelled in [
        r["request_id"] for r in listed
    ]
    assert api_get(gallery, token, f"/queue/{T2V}/requests/{joy}").status_code == 410

    # Open plays the video; "Use these settings again" fills the Playground.
    card_of(page, "a red kite over the dunes").get_by_role("link", name="Open").click()
    video = page.locator(".run video")
    expect(video).to_be_visible()
    assert video.get_attribute("poster")
    page.evaluate("() => { const v = document.querySelector('.run video'); v.muted = true; "
                  "return v.play() }")  # fmt: skip
    page.wait_for_function("() => document.querySelector('.run video').currentTime > 0.1")
    assert page.evaluate("() => document.querySelector('.run video').error") is None
    page.screenshot(path=shots / "gallery-open.png", full_page=True)
    page.get_by_role("button", name="Use these settings again").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    expect(page.get_by_label("Model", exact=True)).to_have_value(T2V)
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a red kite over the dunes")
    expect(page.get_by_label("Width", exact=True)).to_have_value("224")
    # ... and from the grid.
    page.get_by_role("link", name="History").click()
    whale = ids["a blue whale"]
    page.get_by_role("button", name=f"Use again: the settings of request {whale}").click()
    expect(page.get_by_label("Model", exact=True)).to_have_value(PRO)
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a blue whale")
    # Nothing was fetched beyond vidq's own origin.
    assert all(u.startswith(gallery.url) for u in page.urls), page.urls  # type: ignore[attr-defined]


def test_the_gallery_at_phone_width_with_the_keyboard(
    browser: Browser, gallery: Stack, shots: Path
) -> None:
    token = gallery.token("ivy")
    ids = make_requests(gallery, "ivy", [(T2V, "a lantern at night"), (T2V, "a paper moon")])
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=1, is_mobile=True, color_scheme="dark"
    )
    page = context.new_page()
    page.set_default_timeout(20_000)
    try:
        web.sign_in(page, gallery, token)
        page.get_by_role("link", name="History").click()
        expect(cards(page)).to_have_count(2)
        posters_loaded(page, 2)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        box = cards(page).first.bounding_box()
        assert box is not None and box["width"] <= PHONE["width"] - 20  # one column
        page.screenshot(path=shots / "gallery-phone.png", full_page=True)

        # The keyboard only: search, reach Delete with Tab, confirm with Enter.
        page.get_by_label("Search prompts").focus()
        page.keyboard.type("MOON")
        page.keyboard.press("Enter")
        expect(cards(page)).to_have_count(1)
        moon = ids["a paper moon"]
        target = f"Delete request {moon}"
        for _ in range(20):
            page.keyboard.press("Tab")
            if page.evaluate("() => document.activeElement.getAttribute('aria-label')") == target:
                break
        else:
            raise AssertionError("Tab never reached the card's Delete button")
        page.keyboard.press("Enter")
        expect(page.get_by_role("button", name="Keep")).to_be_focused()
        page.keyboard.press("Escape")  # keeps it
        expect(page.get_by_role("button", name=target)).to_be_focused()
        page.keyboard.press("Enter")
        page.keyboard.press("Shift+Tab")
        expect(page.get_by_role("button", name="Delete for good")).to_be_focused()
        page.keyboard.press("Enter")
        expect(cards(page)).to_have_count(0)
        expect(page.get_by_text(f"Request {moon} was deleted.")).to_be_visible()
        assert api_get(gallery, token, f"/requests/{moon}").json()["deleted"] is True
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
    finally:
        context.close()
