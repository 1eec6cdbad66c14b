"""The playground's live panel and form in a real browser (issue 27): Cancel for a queued
or running request, the result's facts, a refused submit that keeps the last panel, size
presets, the image families' Advanced fields, files checked on choice and the preview
engine's banner; at phone width and with the keyboard. Playwright drives Debian's
chromium against the in-process stack (fixtures from tests/acceptance/test_webapp.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.acceptance.test_webapp import (
    PHONE,
    SMALL,
    browser,
    fill_form,
    page,
    shots,
    sign_in,
)
from tests.support.media import encode_image, picture
from tests.support.stack import Stack, stack
from tests.support.wait import eventually

__all__ = ["browser", "page", "shots"]  # the fixtures this module uses, imported

pytestmark = pytest.mark.timeout(900)
T2V = "wan22-fast-t2v"
I2V = "wan22-fast-i2v"


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One worker whose preview engine takes 1 s a step (4 steps), and whose heartbeat
    (a third of the lease) sees a cancel within half a second."""
    data = tmp_path_factory.mktemp("panel") / "data"
    with stack(data, preview_step_seconds=1.0, lease_seconds=1.5, reaper_interval=0.2) as s:
        yield s


def posts(page: Page) -> list[str]:
    """The POSTs the page sent so far."""
    return page.sent_posts  # type: ignore[attr-defined,no-any-return]


def watch_posts(page: Page) -> None:
    page.sent_posts = []  # type: ignore[attr-defined]
    page.on("request", lambda r: page.sent_posts.append(r.url) if r.method == "POST" else None)  # type: ignore[attr-defined]


def test_cancel_a_running_request_from_the_panel(page: Page, slow: Stack, shots: Path) -> None:
    token = slow.token("panel-cancel")
    sign_in(page, slow, token)
    fill_form(page, T2V, {**SMALL, "Duration": "5"})
    page.get_by_role("button", name="Generate").click()
    panel = page.locator(".run")
    expect(panel.locator(".counts")).to_have_text(re.compile(r"^[1-9]\d*/\d+$"), timeout=60_000)
    request_id = panel.locator("h2").inner_text().removeprefix("Request ")
    cancel = panel.get_by_role("button", name="Cancel", exact=True)
    expect(cancel).to_be_visible()
    page.screenshot(path=shots / "panel-running.png")
    cancel.click()
    expect(panel.locator(".state")).to_contain_text("Cancelled", timeout=20_000)
    expect(cancel).to_be_hidden()
    expect(panel.locator("video")).to_have_count(0)
    with slow.client(token) as api:
        assert api.get(f"/requests/{request_id}").json()["status"] == "CANCELLED"


def test_cancel_a_queued_request_with_the_keyboard(page: Page, tmp_path: Path) -> None:
    with stack(tmp_path / "data", workers=0) as s:
        token = s.token("panel-queued")
        sign_in(page, s, token)
        fill_form(page, T2V, SMALL)
        page.get_by_role("button", name="Generate").click()
        panel = page.locator(".run")
        expect(panel.locator(".state")).to_contain_text("Position in queue: 0")
        request_id = panel.locator("h2").inner_text().removeprefix("Request ")
        cancel = panel.get_by_role("button", name="Cancel", exact=True)
        cancel.focus()
        page.keyboard.press("Enter")
        expect(panel.locator(".state")).to_contain_text("Cancelled", timeout=20_000)
        with s.client(token) as api:
            assert api.get(f"/requests/{request_id}").json()["status"] == "CANCELLED"


def test_a_completed_request_says_what_its_video_is(page: Page, slow: Stack, shots: Path) -> None:
    sign_in(page, slow, slow.token("panel-facts"))
    fill_form(page, T2V, {**SMALL, "Width": "160", "Height": "128", "Seed": "1234"})
    page.get_by_role("button", name="Generate").click()
    facts = page.locator(".run .result-facts")
    expect(facts).to_be_visible(timeout=60_000)
    shown = dict(
        zip(
            facts.locator("dt").all_inner_texts(),
            facts.locator("dd").all_inner_texts(),
            strict=True,
        )
    )
    assert shown["Seed"] == "1234"
    assert shown["Size"] == "160 × 128"
    assert shown["Frame rate"] == "16 fps"
    assert shown["Length"] == "1.06 s (17 frames)"
    assert re.fullmatch(r"\d+ KB|\d+ B", shown["File size"]), shown
    assert re.fullmatch(r"\d+(\.\d)? s", shown["Run time"]), shown
    assert shown["GPU time"].endswith(" on cpu"), shown
    # the player plays what the facts say
    page.wait_for_function(
        "() => { const v = document.querySelector('.run video'); return v && v.readyState >= 1 }"
    )
    size = page.evaluate("() => { const v = document.querySelector('.run video');"
                         " return [v.videoWidth, v.videoHeight] }")  # fmt: skip
    assert size == [160, 128]
    page.screenshot(path=shots / "panel-facts.png", full_page=True)


def test_a_refused_submit_keeps_the_last_panel_and_says_why_in_one_line(
    page: Page, slow: Stack
) -> None:
    sign_in(page, slow, slow.token("panel-limited", rate_per_minute=1))
    fill_form(page, T2V, SMALL)
    page.get_by_role("button", name="Generate").click()
    panel = page.locator(".run")
    expect(panel.locator("h2")).to_have_text(re.compile(r"^Request \d+$"))
    first = panel.locator("h2").inner_text()
    page.get_by_role("button", name="Generate").click()  # the second this minute: 429
    line = page.locator("form .form-error")
    expect(line).to_be_visible()
    text = line.inner_text()
    assert re.fullmatch(
        r"Not sent: this token may send 1 request a minute; try again in \d+ s\.",
        text,
    ), text
    # one line above the button, at desktop width
    box, height = (
        line.bounding_box(),
        line.evaluate("e => parseFloat(getComputedStyle(e).lineHeight)"),
    )
    assert box is not None and box["height"] < 2 * height, (box, height)
    expect(panel.locator("h2")).to_have_text(first)  # the last request's panel stays
    expect(panel.locator(".state .badge")).to_be_visible()


def test_presets_fill_the_size_and_image_sizing_is_advanced(
    page: Page, slow: Stack, shots: Path
) -> None:
    sign_in(page, slow, slow.token("panel-presets"))
    fill_form(page, T2V, {"Prompt": "a kite"})
    presets = page.get_by_role("group", name="Common sizes")
    portrait = presets.get_by_role("button", name="9:16 · 720×1280")
    expect(portrait).to_have_attribute("aria-pressed", "false")
    portrait.click()
    expect(page.get_by_label("Width", exact=True)).to_have_value("720")
    expect(page.get_by_label("Height", exact=True)).to_have_value("1280")
    expect(portrait).to_have_attribute("aria-pressed", "true")
    # with the keyboard: Tab to a preset, Space presses it
    square = presets.get_by_role("button", name="1:1 · 960×960")
    portrait.focus()
    while page.evaluate("() => document.activeElement.textContent") != "1:1 · 960×960":
        page.keyboard.press("Tab")
    page.keyboard.press("Space")
    expect(page.get_by_label("Width", exact=True)).to_have_value("960")
    expect(square).to_have_attribute("aria-pressed", "true")
    expect(portrait).to_have_attribute("aria-pressed", "false")
    # every preset fits the schema: multiples of 16 within 128..1920
    for label in presets.get_by_role("button").all_inner_texts():
        w, h = map(int, label.split(" · ")[1].split("×"))
        assert w % 16 == h % 16 == 0 and 128 <= min(w, h) and max(w, h) <= 1920, label

    page.get_by_label("Model").select_option(I2V)
    advanced = page.locator("details.advanced")
    expect(advanced).to_have_js_property("open", False)
    for label in ("Height", "Min Height", "Use Best Resolution", "New Resolution"):
        expect(page.get_by_label(label, exact=True)).to_be_hidden()
    expect(page.get_by_label("Prompt", exact=True)).to_be_visible()
    advanced.locator("summary").focus()
    page.keyboard.press("Enter")  # a summary opens with the keyboard
    for label in ("Height", "Min Height", "Use Best Resolution", "New Resolution"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    advanced.get_by_role("button", name="720p").click()
    page.screenshot(path=shots / "panel-i2v-advanced.png", full_page=True)
    expect(page.get_by_label("Height", exact=True)).to_have_value("720")
    # the help is written for people: no markdown, no spec jargon
    help_text = " ".join(page.locator(".fields .hint").all_inner_texts())
    for jargon in ("`", "as in the spec", "SSRF", "**"):
        assert jargon not in help_text, (jargon, help_text)


def test_an_error_in_an_advanced_field_opens_it_without_framework_words(
    page: Page, slow: Stack
) -> None:
    sign_in(page, slow, slow.token("panel-advanced-error"))
    fill_form(page, I2V, {"Prompt": "a wave"})
    page.locator("[data-field=data_uri] input[type=file]").set_input_files(
        {
            "name": "small.png",
            "mimeType": "image/png",
            "buffer": encode_image(picture(64, 64), "PNG"),
        }
    )
    expect(page.locator(".chosen .file-name")).to_contain_text("small.png")
    page.locator("details.advanced summary").click()
    page.get_by_label("Height", exact=True).fill("500")
    page.locator("details.advanced summary").click()  # closed again
    page.get_by_role("button", name="Generate").click()
    error = page.locator("[data-field=height] .field-error")
    expect(error).to_have_text("height must be a multiple of 16 (got 500)")
    expect(page.locator("details.advanced")).to_have_js_property("open", True)
    expect(page.get_by_label("Height", exact=True)).to_be_focused()


def test_a_wrong_file_is_refused_on_choice_without_a_request(page: Page, slow: Stack) -> None:
    watch_posts(page)
    sign_in(page, slow, slow.token("panel-files"))
    fill_form(page, I2V, {"Prompt": "a wave"})
    picker = page.locator("[data-field=data_uri] input[type=file]")
    error = page.locator("[data-field=data_uri] .field-error")
    # a text file, even one that says it is an image: its bytes are not one
    picker.set_input_files(
        {"name": "notes.png", "mimeType": "image/png", "buffer": b"hello\n" * 50}
    )
    expect(error).to_have_text(
        "notes.png is not an image (PNG, JPEG or WEBP): choose another file."
    )
    expect(picker).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".chosen .file-name")).to_have_count(0)
    # a WAV where an image goes
    wav = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(28)
    picker.set_input_files({"name": "sound.wav", "mimeType": "audio/wav", "buffer": wav})
    expect(error).to_contain_text("sound.wav is not an image")
    assert not [u for u in posts(page) if "/queue/" in u], posts(page)
    # an image whose browser type is unknown is taken: its bytes say what it is
    png = encode_image(picture(64, 64), "PNG")
    picker.set_input_files({"name": "frame", "mimeType": "", "buffer": png})
    expect(error).to_be_hidden()
    expect(page.locator(".chosen .file-name")).to_contain_text("frame")
    expect(picker).not_to_have_attribute("aria-invalid", "true")


def test_the_preview_engine_is_said_above_the_form(page: Page, slow: Stack) -> None:
    sign_in(page, slow, slow.token("panel-banner"))
    banner = page.get_by_role("note")
    expect(banner).to_have_text(
        "This server runs the preview engine for this model: videos are placeholders made "
        "on the CPU, no AI model is loaded."
    )
    # above the form, for every model of a preview pool
    above = page.evaluate(
        "() => document.querySelector('.engine-banner').getBoundingClientRect().bottom"
        " <= document.querySelector('#model').getBoundingClientRect().top"
    )
    assert above
    page.get_by_label("Model").select_option(I2V)
    expect(banner).to_be_visible()


def test_the_panel_and_form_at_phone_width(browser: Browser, slow: Stack, shots: Path) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=1, is_mobile=True, color_scheme="dark"
    )
    phone = context.new_page()
    phone.set_default_timeout(20_000)
    try:
        sign_in(phone, slow, slow.token("panel-phone"))
        fill_form(phone, T2V, SMALL)
        phone.get_by_role("button", name="Generate").click()
        expect(phone.locator(".run .result-facts")).to_be_visible(timeout=60_000)

        def fits() -> bool:
            return bool(
                phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
            )

        eventually(fits, 5, what="the page to fit a phone's width")
        phone.screenshot(path=shots / "panel-phone-result.png", full_page=True)
        phone.get_by_label("Model").select_option(I2V)
        phone.locator("details.advanced summary").click()
        expect(phone.get_by_label("New Resolution", exact=True)).to_be_visible()
        expect(phone.get_by_role("note")).to_be_visible()
        eventually(fits, 5, what="the I2V form to fit a phone's width")
        phone.screenshot(path=shots / "panel-phone-i2v.png", full_page=True)
    finally:
        context.close()
