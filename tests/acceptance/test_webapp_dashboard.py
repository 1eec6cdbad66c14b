"""The operators' Dashboard in Debian's chromium (issue 27): the last hour's charts drawn
from real jobs (the preview engine's, run by a burst worker) with the very figures of
``GET /admin/history``, pausing and resuming a pool and retrying a failed request from the
page with the keyboard only, and the page at phone width in dark mode. Fixtures and helpers
come from tests/acceptance/test_webapp.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.acceptance.test_webapp import PHONE, browser, page, shots, sign_in
from tests.support.api_calls import submit
from tests.support.stack import Stack, stack
from tests.support.wait import eventually

__all__ = ["browser", "page", "shots"]  # the fixtures, used by name

T2V, POOL = "wan22-fast-t2v", "wan22-t2v"
SMALL = {"prompt": "a lighthouse at dusk", "width": 128, "height": 128, "duration": 1}
SERIES = ("queued", "completed", "failed", "wait_p50_s", "wait_p95_s")
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server without worker threads: jobs run when the test drains the queue."""
    with stack(tmp_path_factory.mktemp("dash") / "data", workers=0) as s:
        yield s


@pytest.fixture(scope="module")
def ran(dash: Stack) -> list[str]:
    """Three requests run to the end by a burst worker on the preview engine."""
    with dash.client(dash.token("alice")) as alice:
        ids = [submit(alice, T2V, SMALL) for _ in range(3)]
    assert dash.drain() == 3
    return ids


def _drawn(page: Page, pool: str) -> dict[str, list[tuple[float, float]]]:
    """Each series of the pool's charts as drawn: the points of its polylines, (bucket
    index, value) (a dot is one point given twice)."""
    points: dict[str, list[list[str]]] = page.evaluate(
        """(pool) => {
            const out = {};
            const section = document.querySelector(`.pool-history[data-pool="${pool}"]`);
            for (const line of section.querySelectorAll("polyline[data-series]")) {
                const pts = line.getAttribute("points").trim().split(/\\s+/);
                (out[line.dataset.series] ??= []).push(...new Set(pts));
            }
            return out;
        }""",
        pool,
    )
    return {
        name: [(float(x), 0.0 - float(y)) for x, y in (p.split(",") for p in pts)]  # not -0.0
        for name, pts in points.items()
    }


def _answer(dash: Stack, pool: str) -> dict[str, list[tuple[float, float]]]:
    """The same series from the route: (bucket index, value) of every known value."""
    with dash.client(dash.admin_token) as admin:
        figures = admin.get("/admin/history").json()["pools"][pool]
    return {
        name: [(float(i), float(v)) for i, v in enumerate(figures[name]) if v is not None]
        for name in SERIES
    }


def _tab_to(page: Page, name: str, limit: int = 80) -> None:
    """Press Tab until the control named ``name`` has the focus (the keyboard only)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement?.getAttribute('aria-label')") == name:
            assert page.evaluate("() => document.activeElement.matches(':focus-visible')")
            return
    raise AssertionError(f"{name!r} is not reached with Tab")


def test_charts_are_drawn_from_real_jobs(
    page: Page, dash: Stack, ran: list[str], shots: Path
) -> None:
    sign_in(page, dash, dash.admin_token)
    page.get_by_role("link", name="Dashboard").click()
    section = page.locator(f'.pool-history[data-pool="{POOL}"]')
    expect(section).to_be_visible()
    # Every series' points are the route's figures, bucket by bucket (retried: a page
    # refresh and the route's answer may straddle a minute's turn).
    seen: dict[str, Any] = {}

    def same() -> bool:
        seen["drawn"], seen["answer"] = _drawn(page, POOL), _answer(dash, POOL)
        return bool(seen["drawn"] == seen["answer"])

    eventually(same, 20, what="the charts' points equal to the route's figures")
    drawn = seen["drawn"]
    assert len(drawn["queued"]) == len(drawn["completed"]) == 60  # one point a minute
    assert sum(v for _, v in drawn["completed"]) == 3 and sum(v for _, v in drawn["failed"]) == 0
    assert drawn["wait_p50_s"], "the three jobs started: a wait is drawn"
    throughput = section.locator("svg.chart").nth(1)
    latest = f"{drawn['completed'][-1][1]:g}"
    summary = f"{POOL}, jobs finished per min over the last 60 min: 3 completed, 0 failed; "
    expect(throughput).to_have_attribute("aria-label", f"{summary}latest min: {latest} "
                                         "completed, 0 failed")  # fmt: skip
    expect(section.locator("svg.chart title").first).to_contain_text("queue depth")
    # A pool that ran nothing is named, not drawn.
    expect(page.locator('.pool-history[data-pool="wan22-i2v"]')).to_have_count(0)
    expect(page.locator(".history > .hint")).to_contain_text("wan22-i2v")
    assert all(u.startswith(dash.url) for u in page.urls), page.urls  # type: ignore[attr-defined]
    page.screenshot(path=shots / "dashboard-charts.png", full_page=True)


def test_pause_resume_and_retry_from_the_page_with_the_keyboard(
    page: Page, dash: Stack, ran: list[str], shots: Path
) -> None:
    # A failed request, failed the way a worker fails one: it can run again.
    with dash.client(dash.token("bob")) as bob:
        doomed = submit(bob, T2V, SMALL)
    claimed = dash.store.claim([POOL], "test-worker", 30)
    assert claimed is not None and str(claimed.job.id) == doomed
    assert dash.store.fail(claimed.job.id, claimed.lease_token, "engine <b>crashed</b>",
                           "engine", retry=False)  # fmt: skip
    admin = dash.client(dash.admin_token)

    sign_in(page, dash, dash.admin_token)
    page.get_by_role("link", name="Dashboard").click()
    failure = page.locator(".failures li", has_text=f"#{doomed}")
    expect(failure.locator(".error-text")).to_have_text("engine <b>crashed</b>")

    _tab_to(page, f"Pause {POOL}")
    page.keyboard.press("Enter")
    outcome = page.get_by_role("status")
    expect(outcome).to_contain_text(f"Paused {POOL}: its workers start none of its requests")
    assert admin.get("/admin/queues").json()["pools"][POOL]["paused"] is True
    row = page.locator("table.pools tbody tr", has=page.locator("th", has_text=POOL)).first
    expect(row.locator(".badge")).to_have_text("paused")
    resume = page.get_by_role("button", name=f"Resume {POOL}")
    expect(resume).to_be_focused()  # the same control, after the tables were rebuilt
    page.keyboard.press("Enter")
    expect(outcome).to_contain_text(f"Resumed {POOL}")
    assert admin.get("/admin/queues").json()["pools"][POOL]["paused"] is False
    expect(row.locator(".badge")).to_have_count(0)

    _tab_to(page, f"Retry request #{doomed}")
    page.keyboard.press("Enter")
    expect(outcome).to_contain_text(f"Request #{doomed} is queued again")
    expect(outcome).to_be_focused()
    expect(failure).to_have_count(0)  # no longer failed
    queued = admin.get("/admin/requests", params={"user": "bob"}).json()["requests"][0]
    assert queued["status"] == "IN_QUEUE", queued
    assert dash.drain() == 1  # it runs again, to the end
    done = admin.get("/admin/requests", params={"user": "bob"}).json()["requests"][0]
    assert (done["request_id"], done["status"]) == (doomed, "COMPLETED"), done
    admin.close()
    page.screenshot(path=shots / "dashboard-actions.png", full_page=True)


def test_dashboard_at_phone_width_in_dark_mode(
    browser: Browser, dash: Stack, ran: list[str], shots: Path
) -> None:
    context = browser.new_context(
        viewport=PHONE, device_scale_factor=1, is_mobile=True, color_scheme="dark"
    )
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        sign_in(page, dash, dash.admin_token)
        page.goto(dash.url + "/#/dashboard")
        chart = page.locator(f'.pool-history[data-pool="{POOL}"] svg.chart').first
        expect(chart).to_be_visible()
        assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
        box = chart.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        # The dark palette: the page's background and the queue line's stroke (a class).
        colours = page.evaluate("""() => [
            getComputedStyle(document.body).backgroundColor,
            getComputedStyle(document.querySelector('polyline[data-series=queued]')).stroke]""")
        assert colours == ["rgb(17, 20, 24)", "rgb(122, 162, 255)"], colours
        page.screenshot(path=shots / "dashboard-phone-dark.png", full_page=True)
    finally:
        context.close()
