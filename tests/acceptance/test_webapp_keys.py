"""The web app's API keys page in Debian's chromium (Playwright) against the in-process
stack: a key created from the page works against the API, is revoked from the page and is
then refused by the API; the user's limits and today's and this week's usage; an admin sees
and revokes every user's keys; phone width in dark mode; the keyboard alone. The routes
under the page: tests/integration/api/test_tokens_api.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Route, expect

from tests.acceptance.test_webapp import PHONE, browser, page, shots, sign_in
from tests.support.stack import Stack, stack
from tests.support.wait import wait_status

__all__ = ["browser", "page", "shots"]  # the fixtures this module borrows

T2V = "wan22-fast-t2v"
SMALL = {"prompt": "a kite over the dunes", "width": 128, "height": 128, "duration": 1}
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("keys") / "data"
    with stack(data, preview_step_seconds=0.05) as s:
        yield s


def status_with(s: Stack, secret: str) -> int:
    with httpx.Client(base_url=s.url, timeout=30) as c:
        c.headers["Authorization"] = f"Bearer {secret}"
        return c.get("/requests").status_code


def open_keys(page: Page, *, loaded: bool = True) -> None:
    """The API keys page, once its usage, limits and keys have loaded (``loaded``): each
    replaces a "Loading…" line and moves what is below it, so a click before then (on a
    loaded machine) can land where a button was."""
    page.get_by_role("link", name="API keys").click()
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    if loaded:
        expect(page.get_by_text("Loading…")).to_have_count(0)


def test_create_use_and_revoke_a_key_from_the_page(page: Page, server: Stack, shots: Path) -> None:
    token = server.token("kim", max_priority=9, max_queued=5, daily_video_seconds=120)
    with httpx.Client(base_url=server.url, timeout=30) as http:  # usage to show
        http.headers["Authorization"] = f"Bearer {token}"
        rid = http.post(f"/queue/{T2V}", json=SMALL).json()["request_id"]
        wait_status(http, T2V, rid, {"COMPLETED"})
    sign_in(page, server, token)
    open_keys(page)

    usage = page.locator("table.usage")
    expect(usage.locator("tbody tr").first).to_contain_text("Today (UTC)")
    expect(usage.locator("tbody tr").first.locator("td").first).to_have_text("1")
    expect(usage.locator("tbody tr").nth(1).locator("td").first).to_have_text("1")
    limits = page.locator("dl.limits")
    expect(limits).to_contain_text("Requests waiting at once")
    expect(limits).to_contain_text("0 of 5")  # the finished request waits no more
    expect(limits).to_contain_text("of 120")  # video seconds today, of the limit
    expect(limits.locator("dd").nth(1)).to_have_text("no limit (0 now)")  # max_running
    expect(limits).to_contain_text("Highest priority9")

    page.get_by_label("Name").fill("ci runner")
    page.get_by_label("Expires after (days)").fill("30")
    page.get_by_role("button", name="Create key").click()
    secret_box = page.get_by_label("New API key")
    expect(secret_box).to_be_visible()
    expect(page.locator(".new-key")).to_contain_text("it will not be shown again")
    expect(secret_box).to_be_focused()
    secret = secret_box.input_value()
    assert secret.startswith("vq_") and secret != token
    page.get_by_role("button", name="Copy").click()
    expect(page.locator(".new-key [role=status]")).not_to_be_empty()
    page.screenshot(path=shots / "10-api-keys-new.png", full_page=True)

    # the new key works against the API, with kim's limits
    assert status_with(server, secret) == 200
    row = page.locator("table.tokens tbody tr", has_text="ci runner")
    expect(row).to_contain_text("Active")
    assert row.locator("td").nth(1).inner_text() != "never"  # it expires
    page.get_by_role("button", name="Done").click()
    expect(page.locator(".new-key")).to_be_hidden()
    assert secret not in page.content()  # shown once: gone from the page

    # revoke, with a confirm step; "Keep" backs out
    row.get_by_role("button", name="Revoke ci runner").click()
    expect(row.get_by_role("group", name="Revoke ci runner?")).to_be_visible()
    row.get_by_role("button", name="Keep").click()
    assert status_with(server, secret) == 200
    row.get_by_role("button", name="Revoke ci runner").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(page.locator("table.tokens tbody tr", has_text="ci runner")).to_contain_text("Revoked")
    assert status_with(server, secret) == 401  # refused at once
    # the page still works with the signed-in key
    expect(page.locator("table.tokens tbody tr", has_text="this session")).to_contain_text("Active")
    assert all(u.startswith(server.url) for u in page.urls)  # type: ignore[attr-defined]
    page.screenshot(path=shots / "11-api-keys.png", full_page=True)


def test_a_bad_name_is_said_next_to_its_field_and_revoking_this_key_signs_out(
    page: Page, server: Stack
) -> None:
    sign_in(page, server, server.token("lou"))
    open_keys(page)
    page.get_by_role("button", name="Create key").click()
    name = page.get_by_label("Name")
    expect(name).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#key-name-error")).to_have_text(
        "Give the key a name, to tell it from your others."
    )
    expect(name).to_be_focused()
    name.fill("x")
    page.get_by_label("Expires after (days)").fill("0")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#key-days-error")).to_contain_text("1 to 3650")
    assert page.locator("table.tokens tbody tr").count() == 1  # nothing created

    this = page.locator("table.tokens tbody tr", has_text="this session")
    this.get_by_role("button", name="Revoke").click()
    expect(this).to_contain_text("revoking it signs you out")
    this.get_by_role("button", name="Yes, revoke").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("no longer accepted")


def test_admins_see_and_revoke_every_users_keys(page: Page, server: Stack) -> None:
    ann = server.token("ann-keys")
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.headers["Authorization"] = f"Bearer {ann}"
        r = http.post("/tokens", json={"name": "ann's laptop"})
        assert r.status_code == 201, r.text
        laptop = r.json()["token"]
    sign_in(page, server, server.token("dan"))
    open_keys(page)
    expect(page.get_by_role("heading", name="Every user's keys")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()

    sign_in(page, server, server.admin_token)
    open_keys(page)
    expect(page.get_by_role("heading", name="Every user's keys")).to_be_visible()
    page.get_by_label("User", exact=True).fill("ann-keys")
    page.get_by_role("button", name="Show").click()
    table = page.locator(".user-filter + div table.tokens")
    expect(table.locator("tbody tr")).to_have_count(2)
    row = table.locator("tbody tr", has_text="ann's laptop")
    expect(row.locator("td").first).to_have_text("ann-keys")
    assert status_with(server, laptop) == 200
    row.get_by_role("button", name="Revoke ann's laptop").click()
    row.get_by_role("button", name="Yes, revoke").click()
    expect(table.locator("tbody tr", has_text="ann's laptop")).to_contain_text("Revoked")
    assert status_with(server, laptop) == 401


def test_a_late_answer_to_the_first_listing_does_not_replace_a_filtered_one(
    page: Page, server: Stack
) -> None:
    """The admin's list of every user's keys loads as the page opens; a filter asks again.
    The first answer, held back here until the filtered one is shown, must not replace it
    when it comes (a slow network or a busy server; seen in a full run with 6 xdist
    workers on 2 cores)."""
    server.token("bea-keys")
    held: list[Route] = []

    def hold_the_unfiltered(route: Route) -> None:
        if "user=" in route.request.url:
            route.continue_()
        else:
            held.append(route)

    sign_in(page, server, server.admin_token)
    page.route("**/admin/tokens*", hold_the_unfiltered)
    open_keys(page, loaded=False)  # every user's keys: held back, "Loading…" until the end
    expect(page.get_by_text("Loading…")).to_have_count(1)  # the rest of the page has loaded
    page.get_by_label("User", exact=True).fill("bea-keys")
    page.get_by_role("button", name="Show").click()
    rows = page.locator(".user-filter + div table.tokens tbody tr")
    expect(rows).to_have_count(1)
    assert len(held) == 1, held  # the first listing, not answered yet
    with page.expect_response(lambda r: r.url.endswith("/admin/tokens")) as late:
        held[0].continue_()
    assert late.value.ok
    page.evaluate("() => new Promise((done) => setTimeout(done, 200))")  # its handler ran
    assert rows.count() == 1
    expect(rows.first.locator("td").first).to_have_text("bea-keys")


def test_keyboard_only(page: Page, server: Stack) -> None:
    """Create and revoke a key with the keyboard alone: Tab to each control, Enter."""
    sign_in(page, server, server.token("kay"))
    page.get_by_role("link", name="API keys").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="API keys", exact=True)).to_be_visible()
    expect(page.locator("table.tokens")).to_be_visible()
    page.get_by_label("Name").focus()
    page.keyboard.type("from the keyboard")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Expires after (days)")).to_be_focused()
    page.keyboard.type("2")
    page.keyboard.press("Enter")  # submits the form
    secret = page.get_by_label("New API key")
    expect(secret).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Copy")).to_be_focused()
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Done")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Name")).to_be_focused()

    row = page.locator("table.tokens tbody tr", has_text="from the keyboard")
    row.get_by_role("button", name="Revoke from the keyboard").focus()
    page.keyboard.press("Enter")
    expect(row.get_by_role("button", name="Yes, revoke")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("table.tokens tbody tr", has_text="from the keyboard")).to_contain_text(
        "Revoked"
    )


def test_phone_width_in_dark_mode(browser: Browser, server: Stack, shots: Path) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=1, is_mobile=True, color_scheme="dark"
    )
    page = context.new_page()
    try:
        sign_in(page, server, server.admin_token)
        open_keys(page)
        page.get_by_label("Name").fill("a phone key with a rather long name to wrap")
        page.get_by_role("button", name="Create key").click()
        expect(page.get_by_label("New API key")).to_be_visible()
        expect(page.locator(".user-filter + div table.tokens")).to_be_visible()
        row = page.locator("table.tokens tbody tr", has_text="rather long name").first
        row.get_by_role("button", name="Revoke").click()  # the confirm step, its widest
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], width
        background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 20, 24)", background  # the dark palette
        page.screenshot(path=shots / "12-phone-api-keys.png", full_page=True)
    finally:
        context.close()
