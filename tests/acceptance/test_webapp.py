"""The web app at `/` and the API's doc pages in a real browser: Playwright driving
Debian's chromium (the process under test) against the in-process stack (preview engine).
Screenshots of every page are kept under a temporary folder (or ``WEBAPP_SCREENSHOTS``)
and their path is printed. Without chromium (and no way to install it) the tests skip
locally, saying so, and fail in CI (tests/support/tools.py)."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, Playwright, Route, expect, sync_playwright

from tests.support.media import encode_image, picture
from tests.support.stack import Stack, stack
from tests.support.tools import missing
from tests.support.wait import wait_status
from vidq.jobs import NewJob, WorkerState

SMALL = {"Prompt": "a paper boat on a pond", "Width": "128", "Height": "128", "Duration": "1"}
XSS = '<img src=x onerror="window.__xss = 1; alert(1)">'
FRAMES_1S = 17  # 16 fps * 1 s + 1
PHONE = {"width": 390, "height": 844}
# The first test may install chromium with apt-get (minutes on a fresh machine).
pytestmark = pytest.mark.timeout(900)


def _chromium() -> str:
    """Debian's chromium; installed with apt when missing (as root, or with sudo).

    Every browser module of every xdist worker may get here at once on a fresh machine, and
    apt-get refuses to run while another holds dpkg's lock: one lock file for all of them
    makes the first install and the others wait, then find it on PATH."""
    found = shutil.which("chromium")
    if found:
        return found
    lock = Path(tempfile.gettempdir()) / "vidq-tests-chromium-install.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        return shutil.which("chromium") or _install_chromium()


def _install_chromium() -> str:
    sudo: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            missing("chromium is missing and cannot be installed: run `apt-get install chromium`")
        sudo = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run([*sudo, *cmd], check=False, env=env, timeout=900, capture_output=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stderr.decode()[-2000:]}"
    found = shutil.which("chromium")
    assert found, "apt-get installed chromium, but it is not on PATH"
    return found


# Module scope: Playwright's sync API keeps an event loop running in this thread until it
# stops, and later tests (asyncio.run) must not find one.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = _launch(pw)
        yield b
        b.close()


def _launch(pw: Playwright) -> Browser:
    return pw.chromium.launch(executable_path=_chromium(), args=["--mute-audio"])


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    own = os.environ.get("WEBAPP_SCREENSHOTS")
    folder = Path(own) if own else tmp_path_factory.mktemp("webapp-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb app screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("web") / "data"
    with stack(data, logs=True, preview_step_seconds=0.25) as s:
        yield s


@pytest.fixture(scope="module")
def idle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A server without workers: what is submitted there stays queued."""
    with stack(tmp_path_factory.mktemp("idle") / "data", workers=0, max_body_bytes=20_000) as s:
        yield s


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.dialogs = []  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
    pg.urls = []  # type: ignore[attr-defined]
    pg.on("request", lambda r: pg.urls.append(r.url))  # type: ignore[attr-defined]
    yield pg
    context.close()


def user_token(server: Stack, user: str) -> str:
    """A user's token, made in the server's job store."""
    return server.token(user)


def sign_in(page: Page, server: Stack, token: str) -> None:
    response = page.goto(server.url + "/")
    assert response is not None and response.ok
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()


def fill_form(page: Page, model: str, fields: dict[str, str]) -> None:
    page.get_by_label("Model").select_option(model)
    expect(page.locator("#field-prompt")).to_be_visible()
    for label, value in fields.items():
        control = page.get_by_label(label, exact=True)
        closed = page.locator("details.advanced:not([open])")
        if control.is_hidden() and closed.count():  # a sizing field, under "Advanced"
            closed.locator("summary").click()
        control.fill(value)


def generate_and_play(page: Page) -> dict[str, Any]:
    """Click Generate; follow the progress text; wait for a playable video."""
    page.evaluate("""() => {
        window.__seen = [];
        new MutationObserver(() => {
            const c = document.querySelector('.run .counts');
            const q = document.querySelector('.run .state');
            for (const t of [c && c.textContent, q && q.textContent])
                if (t && window.__seen.at(-1) !== t) window.__seen.push(t);
        }).observe(document.querySelector('.run'), {subtree: true, childList: true,
                                                     characterData: true});
    }""")
    heading = page.locator(".run h2")
    before = heading.inner_text() if heading.count() else None
    page.get_by_role("button", name="Generate").click()
    if before is not None:  # the panel keeps the last request until the new one is queued
        expect(heading).not_to_have_text(before, timeout=30_000)
    video = page.locator(".run video")
    expect(video).to_be_visible(timeout=60_000)
    page.wait_for_function(
        "() => { const v = document.querySelector('.run video'); return v && v.readyState >= 1 }"
    )
    # Seek into the clip: a decodable frame there means the browser can play it.
    page.evaluate("() => { document.querySelector('.run video').currentTime = 0.5 }")
    page.wait_for_function(
        "() => { const v = document.querySelector('.run video'); return v.readyState >= 2 }"
    )
    info: dict[str, Any] = page.evaluate("""() => {
        const v = document.querySelector('.run video');
        return {duration: v.duration, width: v.videoWidth, height: v.videoHeight,
                error: v.error && v.error.code, seen: window.__seen,
                download: document.querySelector('.run a[download]').href,
                src: v.currentSrc};
    }""")
    assert info["error"] is None
    return info


def test_sign_in_generate_history_and_sign_out(
    page: Page, server: Stack, shots: Path, tmp_path: Path
) -> None:
    page.goto(server.url + "/")
    expect(page.get_by_role("navigation", name="Main")).to_be_hidden()  # not signed in
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    page.screenshot(path=shots / "01-sign-in.png")
    page.get_by_label("API token").fill("vq_wrong")
    page.keyboard.press("Enter")  # the keyboard is enough
    expect(page.get_by_text("That token was not accepted.")).to_be_visible()

    token = user_token(server, "alice")
    sign_in(page, server, token)
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Playground")).to_be_visible()
    expect(nav.get_by_role("link", name="History")).to_be_visible()
    expect(nav.get_by_role("link", name="Dashboard")).to_be_hidden()

    # The form comes from the schema: labels, defaults and limits.
    page.get_by_label("Model").select_option("wan22-fast-t2v")
    width = page.get_by_label("Width", exact=True)
    expect(width).to_have_value("1280")
    expect(width).to_have_attribute("max", "1920")
    for label in ("Prompt", "Height", "Duration", "Priority", "Seed", "Negative Prompt"):
        expect(page.get_by_label(label, exact=True)).to_be_visible()
    groups = page.locator("#model optgroup")
    assert groups.count() == 4
    expect(page.locator("#model option[value=wan22-fast-t2v-premium]")).to_have_text(
        "wan22-fast-t2v-premium (premium)"
    )

    # T2V: the progress moves, the video plays with the requested duration.
    fill_form(page, "wan22-fast-t2v", SMALL)
    page.get_by_text("Copy as code").click()
    curl = page.locator(".snippet pre").first.inner_text()
    assert '"width": 128' in curl and "$VIDQ_TOKEN" in curl and token not in curl
    # the status line polls the request the first line submitted, by its captured id
    assert curl.startswith("REQUEST_ID=$(curl") and "/requests/$REQUEST_ID/status" in curl
    sdk = page.locator(".snippet pre").nth(1).inner_text()
    assert 'client.submit("wan22-fast-t2v"' in sdk and '"prompt": "a paper boat on a pond"' in sdk
    t2v = generate_and_play(page)
    assert abs(t2v["duration"] - FRAMES_1S / 16) < 0.1, t2v
    assert (t2v["width"], t2v["height"]) == (128, 128)
    steps = [s for s in t2v["seen"] if "/" in s and s[0].isdigit()]
    assert any(s.split("/")[0] != s.split("/")[1] for s in steps), t2v["seen"]  # k/n, k < n
    done, total = steps[-1].split("/")
    assert done == total and int(total) > 1, t2v["seen"]  # ... and ends at n/n
    body = httpx.get(t2v["download"], timeout=10)  # the download link is a signed URL
    assert body.status_code == 200 and body.content[4:8] == b"ftyp"
    page.screenshot(path=shots / "02-playground-t2v.png", full_page=True)

    # I2V with an uploaded PNG.
    png = tmp_path / "first frame.png"
    png.write_bytes(encode_image(picture(320, 192), "PNG"))
    page.get_by_label("Model").select_option("wan22-fast-i2v")
    page.get_by_label("Image", exact=True).set_input_files(png)
    expect(page.locator(".chosen .file-name")).to_contain_text("first frame.png")
    fill_form(page, "wan22-fast-i2v", {"Prompt": "the boat sails", "Duration": "1",
                                       "Height": "128"})  # fmt: skip
    code = page.locator(".snippet pre").nth(1).inner_text()
    assert 'vidq.encode_file("first_frame.png")' in code and "base64," not in code
    i2v = generate_and_play(page)
    assert abs(i2v["duration"] - FRAMES_1S / 16) < 0.1, i2v
    assert i2v["height"] == 128 and i2v["width"] >= 128
    page.screenshot(path=shots / "03-playground-i2v.png", full_page=True)

    # Both in the history, newest first; one opens with its inputs and result.
    page.get_by_role("link", name="History").click()
    rows = page.locator(".requests > li")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".prompt")).to_have_text("the boat sails")
    expect(rows.nth(1).locator(".prompt")).to_have_text("a paper boat on a pond")
    expect(rows.nth(0).locator("img.poster")).to_have_count(1)  # a still, no player
    page.wait_for_function("() => [...document.querySelectorAll('.requests img.poster')]"
                           ".every(i => i.complete && i.naturalWidth > 0)")  # fmt: skip
    page.screenshot(path=shots / "04-history.png", full_page=True)
    rows.nth(1).get_by_role("link").click()
    expect(page.locator(".inputs")).to_contain_text("a paper boat on a pond")
    expect(page.locator(".run video")).to_be_visible()
    page.screenshot(path=shots / "05-request.png", full_page=True)
    page.get_by_role("button", name="Use these settings again").click()
    expect(page.get_by_label("Model")).to_have_value("wan22-fast-t2v")
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("a paper boat on a pond")
    expect(page.get_by_label("Width", exact=True)).to_have_value("128")

    # The progress came from the status stream; the token never appears in a URL.
    assert any(u.endswith("/status/stream?previews=true") for u in page.urls)  # type: ignore[attr-defined]
    assert not [u for u in page.urls if token in u]  # type: ignore[attr-defined]
    # Signing out forgets the token.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API token")).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0
    assert token not in (server.data_dir / "serve.log").read_text()


def test_invalid_input_is_shown_next_to_its_field(page: Page, server: Stack) -> None:
    sign_in(page, server, user_token(server, "bob"))
    fill_form(page, "wan22-fast-t2v", {**SMALL, "Width": "100"})
    page.get_by_role("button", name="Generate").click()
    error = page.locator("[data-field=width] .field-error")
    expect(error).to_contain_text("greater than or equal to 128")
    expect(page.get_by_label("Width", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator("form .form-error")).to_contain_text("Some inputs are not valid")
    page.get_by_label("Width", exact=True).fill("200")  # a model-level rule: still the field
    page.get_by_role("button", name="Generate").click()
    expect(error).to_contain_text("multiple of 16")
    expect(page.locator(".run")).to_be_empty()  # nothing was queued
    # loras is typed as JSON; a LoRA on a loopback address is refused next to its field
    page.get_by_label("Width", exact=True).fill("208")
    page.get_by_label("Loras", exact=True).fill('[{"path": "https://127.0.0.1/a.safetensors"}]')
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("[data-field=loras] .field-error")).to_contain_text("not a public address")
    expect(page.locator(".run")).to_be_empty()


def test_a_hostile_prompt_is_text(page: Page, server: Stack, shots: Path) -> None:
    token = user_token(server, "mallory")
    sign_in(page, server, token)
    # No status stream here (a proxy that buffers it, say): the page falls back to polling.
    page.route(re.compile(r"/status/stream(\?|$)"), lambda route: route.abort())
    fill_form(page, "wan22-fast-t2v", {**SMALL, "Prompt": XSS})
    played = generate_and_play(page)
    assert abs(played["duration"] - FRAMES_1S / 16) < 0.1
    polls = [u for u in page.urls if re.search(r"/requests/\d+$", u) and "/queue/" not in u]  # type: ignore[attr-defined]
    assert polls, page.urls  # type: ignore[attr-defined]
    page.get_by_role("link", name="History").click()
    prompt = page.locator(".requests .prompt").first
    expect(prompt).to_have_text(XSS)
    assert prompt.locator("img").count() == 0
    prompt.locator("xpath=../..").get_by_role("link").click()
    expect(page.locator(".inputs")).to_contain_text(XSS)
    assert page.locator("main img").count() == 0
    assert page.evaluate("() => window.__xss") is None
    assert page.dialogs == []  # type: ignore[attr-defined]
    # The page's own answers: a CSP without inline scripts, revalidated with an ETag.
    answer = httpx.get(server.url + "/", timeout=10)
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    again = httpx.get(
        server.url + "/app/main.js", headers={"If-None-Match": answer.headers["etag"]}
    )
    assert again.status_code == 200 and "javascript" in again.headers["content-type"]
    same = httpx.get(server.url + "/app/main.js", headers={"If-None-Match": again.headers["etag"]})
    assert same.status_code == 304


def drop_file(page: Page, selector: str, name: str, data: bytes, kind: str) -> None:
    """Drop a file on an element, as a user dragging it from their desktop would."""
    page.evaluate(
        """([selector, name, bytes, kind]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], name, {type: kind}));
            document.querySelector(selector).dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        [selector, name, list(data), kind],
    )


def test_drop_a_file_too_large_then_cancel_a_queued_request(
    page: Page, idle: Stack, shots: Path
) -> None:
    sign_in(page, idle, user_token(idle, "carol"))
    fill_form(page, "wan22-fast-i2v", {"Prompt": "noise", "Duration": "1"})
    noise = Image.frombytes("RGB", (160, 160), os.urandom(160 * 160 * 3))
    drop_file(page, "[data-field=data_uri] .drop", "noise.png", encode_image(noise, "PNG"),
              "image/png")  # fmt: skip
    # Over what a 20 kB body can carry: refused on choice, next to its field, never sent.
    error = page.locator("[data-field=data_uri] .field-error")
    expect(error).to_contain_text("noise.png is too large")
    expect(page.locator(".chosen .file-name")).to_have_count(0)
    page.get_by_role("button", name="Generate").click()  # without the image: 422, not 413
    expect(error).to_be_visible()
    expect(page.locator(".run")).to_be_empty()  # nothing was queued

    small = encode_image(picture(64, 64), "PNG")
    drop_file(page, "[data-field=data_uri] .drop", "small.png", small, "image/png")
    expect(page.locator(".chosen .file-name")).to_contain_text("small.png")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator(".run .state")).to_contain_text("Position in queue: 0")
    page.get_by_role("link", name="History").click()
    page.locator(".requests > li").first.get_by_role("link").click()
    expect(page.locator(".facts").first).to_contain_text("Queued")
    expect(page.locator(".inputs")).to_contain_text("(an uploaded file)")
    page.screenshot(path=shots / "06-queued.png", full_page=True)
    page.get_by_role("button", name="Cancel request").click()
    expect(page.locator(".facts").first).to_contain_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel request")).to_have_count(0)


def test_a_paused_queue_is_said_with_no_eta_and_the_seed_is_shown(
    page: Page, idle: Stack, shots: Path
) -> None:
    """A request in a queue an operator paused says so, live, and shows no ETA (nor does
    one of a pool without history served by the preview engine); its seed is shown from
    the start."""
    with httpx.Client(base_url=idle.url, timeout=30) as ops:
        ops.headers["Authorization"] = f"Bearer {idle.admin_token}"
        assert ops.post("/admin/pools/wan22-t2v/pause").json()["paused"] is True
        try:
            token = user_token(idle, "frank")
            sign_in(page, idle, token)
            fill_form(page, "wan22-fast-t2v", SMALL)
            page.get_by_role("button", name="Generate").click()
            expect(page.locator(".run .state")).to_contain_text("Position in queue: 0")
            hold = page.locator(".run .hold")
            expect(hold).to_have_text("Paused by an operator: it starts once the queue is resumed")
            rid = page.locator(".run h2").inner_text().split()[-1]
            mine = httpx.get(f"{idle.url}/requests/{rid}", timeout=10,
                             headers={"Authorization": f"Bearer {token}"}).json()  # fmt: skip
            assert mine["hold"] == "PAUSED" and isinstance(mine["seed"], int)
            expect(page.locator(".run .seed")).to_have_text(f"Seed {mine['seed']}")
            expect(page.locator(".run .eta")).to_be_empty()
            page.screenshot(path=shots / "09-paused.png", full_page=True)

            page.get_by_role("link", name="History").click()
            page.locator(".requests > li").first.get_by_role("link").click()
            expect(page.locator(".facts").first).to_contain_text("Paused by an operator")
            expect(page.locator(".inputs")).to_contain_text(str(mine["seed"]))
            expect(hold).to_be_visible()
            # Resumed: the page says so by itself; still no ETA (no history, no estimate).
            assert ops.post("/admin/pools/wan22-t2v/resume").json()["paused"] is False
            expect(hold).to_be_hidden()
            expect(page.locator(".run .state")).to_contain_text("Position in queue: 0")
            expect(page.locator(".run .eta")).to_be_empty()
            # Using these settings again makes the same video: the drawn seed is filled in.
            page.get_by_role("button", name="Use these settings again").click()
            expect(page.get_by_label("Seed", exact=True)).to_have_value(str(mine["seed"]))
        finally:
            ops.post("/admin/pools/wan22-t2v/resume")


def test_dashboard_for_admins_only(page: Page, server: Stack, shots: Path) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        http.headers["Authorization"] = f"Bearer {server.admin_token}"
        rid = http.post("/queue/wan22-fast-t2v", json={"prompt": "x", "width": 128,
                                                       "height": 128, "duration": 1})  # fmt: skip
        wait_status(http, "wan22-fast-t2v", rid.json()["request_id"], {"COMPLETED"})
    # A failure, recorded the way a worker records one (a pool no worker here serves).
    store = server.store
    failing = NewJob("erin", "wan22-fast-t2v", "web-test-pool", 0, 0, {"prompt": "x"})
    store.enqueue(failing)
    claimed = store.claim(["web-test-pool"], "test-worker", 30)
    assert claimed is not None and claimed.lease_token
    store.fail(claimed.job.id, claimed.lease_token, XSS, "engine", retry=False)
    # A worker whose engine is down, as it says so (its reason shown as text).
    store.register_worker(
        "gpu-down", ["hunyuan-foley"], {"hunyuan-foley": "comfyui"},
        state=WorkerState.ENGINE_DOWN, reason=f"engine comfyui down: {XSS}",
    )  # fmt: skip
    sign_in(page, server, user_token(server, "dave"))
    expect(page.get_by_role("link", name="Dashboard")).to_be_hidden()
    page.goto(server.url + "/#/dashboard")
    expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    assert page.get_by_role("heading", name="Dashboard").count() == 0

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, server.admin_token)
    page.get_by_role("link", name="Dashboard").click()
    table = page.locator(".dashboard table.pools")
    expect(table).to_be_visible()
    row = table.locator("tbody tr", has=page.locator("th", has_text="wan22-t2v")).first
    cells = row.locator("td")
    expect(cells.nth(2)).to_have_text("1")  # one live worker
    assert int(cells.nth(5).inner_text()) >= 1  # completed in the last hour
    assert cells.nth(4).inner_text() != "–"  # a median run time
    expect(page.locator(".dashboard .hint").first).to_contain_text("Updated")
    # Each worker with what it is doing: the stack's worker finished its job and waits.
    worker = page.locator(".dashboard table.workers tbody tr", has_text=server.workers[0].name)
    expect(worker.locator(".badge")).to_have_text("idle")
    down = page.locator(".dashboard table.workers tbody tr", has_text="gpu-down")
    expect(down.locator(".badge")).to_have_text("engine down")
    expect(down.locator(".error-text")).to_have_text(f" engine comfyui down: {XSS}")
    failure = page.locator(".failures li").first
    expect(failure.locator(".error-text")).to_have_text(XSS)  # as text
    expect(failure).to_contain_text(f"#{claimed.job.id}")
    assert page.locator(".dashboard img").count() == 0 and page.dialogs == []  # type: ignore[attr-defined]
    first = page.locator(".dashboard .hint").first.inner_text()
    page.wait_for_function(  # it refreshes by itself
        "(t) => document.querySelector('.dashboard .hint').textContent !== t",
        arg=first,
        timeout=12_000,
    )
    page.screenshot(path=shots / "07-dashboard.png", full_page=True)


def test_the_live_panel_shows_the_preview_moving_then_the_video(
    page: Page, tmp_path: Path, shots: Path
) -> None:
    """The playground's live panel shows the running job's preview (the status stream's
    preview events), a later step replaces it, and the player takes its place at the end;
    under the page's CSP, with no request beyond this server."""
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    with stack(tmp_path / "data", preview_step_seconds=0.6, preview_interval=0.5) as s:
        sign_in(page, s, s.token("alice"))
        fill_form(page, "wan22-fast-t2v", {**SMALL, "Duration": "2"})
        page.get_by_role("button", name="Generate").click()
        preview = page.locator(".run .live-preview")
        expect(preview).to_be_visible(timeout=60_000)
        image = preview.get_by_role("img", name="Live preview of the video so far")
        page.wait_for_function(
            "() => { const i = document.querySelector('.run .live-preview img');"
            " return i && i.complete && i.naturalWidth > 0 }"
        )
        first = preview.locator("figcaption").inner_text()
        assert re.fullmatch(r"Preview at step \d+", first), first
        src = image.get_attribute("src") or ""
        assert src.startswith(s.url + "/files/") and "/previews/" in src
        page.screenshot(path=shots / "09-live-preview.png")
        expect(preview.locator("figcaption")).not_to_have_text(first, timeout=30_000)
        expect(page.locator(".run video")).to_be_visible(timeout=60_000)
        expect(preview).to_be_hidden()
        assert all(u.startswith(s.url) or u.startswith("data:") for u in page.urls)  # type: ignore[attr-defined]
    assert not [e for e in errors if "Content Security Policy" in e], errors


def test_phone_width_has_no_horizontal_scroll(browser: Browser, server: Stack, shots: Path) -> None:
    context = browser.new_context(  # a phone in dark mode
        viewport=PHONE, device_scale_factor=1, is_mobile=True, color_scheme="dark"
    )
    page = context.new_page()
    try:
        sign_in(page, server, server.admin_token)
        for name in ("Playground", "History", "Dashboard"):
            page.get_by_role("link", name=name).click()
            expect(page.get_by_role("heading", name=name)).to_be_visible()
            page.wait_for_timeout(300)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= PHONE["width"], (name, width)
            background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
            assert background == "rgb(17, 20, 24)", background  # the dark palette
            page.screenshot(path=shots / f"08-phone-{name.lower()}.png", full_page=True)
    finally:
        context.close()


# -- /docs and /redoc, offline --------------------------------------------------------------
def test_the_doc_pages_refer_only_to_this_server(idle: Stack) -> None:
    for path in ("/docs", "/redoc"):
        page = httpx.get(idle.url + path)
        assert page.status_code == 200, path
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
        urls = [u for pair in assets for u in pair if u]
        assert urls, f"{path} refers to no script"
        for url in urls:
            assert url.startswith("/"), f"{path} loads {url} from elsewhere"
            assert httpx.get(idle.url + url).status_code == 200, url


@pytest.mark.parametrize(
    ("path", "shown"),
    [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")],
)
def test_the_doc_pages_render_offline(
    idle: Stack, browser: Browser, path: str, shown: str, tmp_path: Path
) -> None:
    refused: list[str] = []

    def offline(route: Route) -> None:
        if route.request.url.startswith(idle.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    context = browser.new_context()
    try:
        page = context.new_page()
        page.route("**/*", offline)
        page.goto(idle.url + path)
        expect(page.locator(shown).first).to_contain_text("vidq", timeout=30_000)
        # an operation of the API is listed: the page read /openapi.json
        expect(page.get_by_text("/queue/{model_id}").first).to_be_visible()
        page.screenshot(path=tmp_path / f"{path.strip('/')}.png")
    finally:
        context.close()
    assert refused == [], f"{path} reached beyond the server: {refused}"
