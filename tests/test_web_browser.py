"""A real browser (Debian's chromium, driven by Playwright) on the pages of a running simulated block.

The block runs in real time with its pages served by waitress, as ``silbato sim`` does.
These tests fail, never skip, when chromium is missing: ``.ci/setup`` installs it.
"""

from __future__ import annotations

import os
import re
import socket
from contextlib import closing
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Page, expect, sync_playwright
from websupport import add_captain, app_for

from node.sim import Block
from web.server import Server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
LIVE_TEXT = "Live: this page updates by itself."


@pytest.fixture(autouse=True, scope="module")
def patient_expect():
    """``expect`` waits up to 20 s, like the pages' own default, not Playwright's 5 s: the block
    runs in real time, and on a busy machine a page's live update can come a few seconds late
    (its event stream dropped and reconnecting). It costs nothing when the update comes at once.
    CI once saw a watcher's ALL CLEAR miss the 5 s, with a dropped connection in the server log."""
    expect.set_options(timeout=20_000)
    yield
    expect.set_options(timeout=None)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def free_port_base(count: int) -> int:
    """A port p such that p .. p+count-1 are free on 127.0.0.1 now."""
    for base in range(21000 + os.getpid() % 500 * 20, 60000, 20):
        try:
            for port in range(base, base + count):
                with closing(socket.socket()) as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise RuntimeError("no free ports")


@pytest.fixture
def block(tmp_path):
    b = Block(tmp_path / "block", 4, "line", scale=1.0, hold_time=0.05,
              overrides={"node.languages": "en,es,ko,tl", "web.hotline": "555-0100"}).start()
    b.port_base = free_port_base(5)
    try:
        b.serve(b.port_base)
        yield b
    finally:
        b.stop()


def url(block: Block, i: int, path: str = "/") -> str:
    return f"http://127.0.0.1:{block.port_base + i}{path}"


@pytest.fixture
def context(browser):
    context = browser.new_context()
    context.set_default_timeout(20_000)
    yield context
    context.close()


def watch_requests(page: Page) -> list[str]:
    """Every URL the page asks for; anything not on this machine is refused, and counted."""
    seen: list[str] = []

    def route(route):
        seen.append(route.request.url)
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    page.route("**/*", route)
    return seen


def confirmed_raid(block: Block) -> str:
    """Node 1 reports, node 2 confirms once the report has reached it."""
    alert = block.nodes[1].report()
    node = block.nodes[2]
    assert node.wait_for(lambda: node.store.get_alert(alert.id) is not None, timeout=20)
    node.act("confirm", alert.id)
    return alert.id


def open_live(page: Page, address: str) -> None:
    page.goto(address)
    expect(page.locator("#conn")).to_have_text(LIVE_TEXT)  # the event stream is open


def test_an_alert_raised_on_node_1_appears_on_node_4_without_a_reload(context, block):
    page = context.new_page()
    requests = watch_requests(page)
    open_live(page, url(block, 4))
    expect(page.locator(".banner h1")).to_have_text("ALL QUIET")
    page.evaluate("window.stillTheSamePage = true")

    block.nodes[1].report()  # four hops away, over the simulated air

    expect(page.locator(".banner h1")).to_have_text("RAID REPORTED, NOT YET CONFIRMED")
    expect(page.locator("#announce")).to_have_text("RAID REPORTED, NOT YET CONFIRMED")  # aria-live
    expect(page.locator("li.alert .place")).to_have_text("Building 1")
    assert page.evaluate("window.stillTheSamePage") is True, "the page was reloaded"
    assert page.title().startswith("RAID REPORTED")
    hosts = {urlsplit(u).netloc for u in requests}
    assert hosts == {f"127.0.0.1:{block.port_base + 4}"}, requests


def test_the_banner_in_spanish_and_korean(browser, block):
    confirmed_raid(block)
    spanish = browser.new_context(locale="es-ES")
    try:
        page = spanish.new_page()
        page.goto(url(block, 4))
        expect(page.locator("html")).to_have_attribute("lang", "es")
        expect(page.locator(".banner h1")).to_have_text("REDADA CONFIRMADA en Building 1", timeout=20_000)
        expect(page.locator("#rights")).to_have_attribute("open", "")
        expect(page.locator("#rights li").first).to_have_text("Tiene derecho a guardar silencio.")
        page.get_by_role("link", name="한국어").click()  # the one-tap switch
        expect(page.locator(".banner h1")).to_have_text("단속 확인됨: Building 1")
        page.goto(url(block, 4))  # remembered
        expect(page.locator("html")).to_have_attribute("lang", "ko")
        expect(page.locator(".banner h1")).to_have_text("단속 확인됨: Building 1")
    finally:
        spanish.close()


def test_the_captain_logs_in_confirms_and_clears_with_real_form_posts(context, block):
    add_captain(block, 3, "ana", "a long password")
    watcher = context.new_page()
    open_live(watcher, url(block, 4))
    alert = block.nodes[1].report()

    page = context.new_page()
    requests = watch_requests(page)
    page.goto(url(block, 3, "/captain"))
    expect(page).to_have_url(re.compile(r"/captain/login"))
    page.get_by_label("Name").fill("ana")
    page.get_by_label("Password").fill("a long password")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(url(block, 3, "/captain"))
    expect(page.locator("#conn")).to_have_text(LIVE_TEXT)

    confirm = page.get_by_role("button", name="Confirm: I see agents there")
    expect(confirm).to_be_visible()  # the console saw node 1's report arrive
    confirm.click()
    expect(page.locator("li.request").first).to_contain_text("Confirm · " + alert.id)
    expect(page.locator("li.request .status").first).to_have_text("sent to the block")
    expect(watcher.locator(".banner h1")).to_have_text("RAID CONFIRMED at Building 1")

    page.get_by_role("button", name="All clear").click()
    expect(page.locator("li.request .status").first).to_have_text("sent to the block")
    expect(watcher.locator(".banner h1")).to_contain_text("ALL CLEAR since")
    expect(page.locator(".banner h1")).to_contain_text("ALL CLEAR since")
    assert {urlsplit(u).hostname for u in requests} == {"127.0.0.1"}


def test_with_javascript_off_the_page_refreshes_itself(browser, block):
    server = Server(app_for(block, 4, REFRESH=1, TESTING=False), "127.0.0.1", 0, live_clients=2).start()
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{server.port}/")
        expect(page.locator(".banner h1")).to_have_text("ALL QUIET")
        expect(page.locator("#conn")).to_have_text("This page reloads itself every 1 seconds.")
        block.nodes[1].report()
        expect(page.locator(".banner h1")).to_have_text("RAID REPORTED, NOT YET CONFIRMED", timeout=20_000)
    finally:
        context.close()
        server.shutdown()


@pytest.mark.parametrize("width", [320, 360])
def test_readable_on_a_narrow_phone(browser, block, tmp_path, width):
    confirmed_raid(block)
    context = browser.new_context(viewport={"width": width, "height": 760}, locale="es-ES",
                                  device_scale_factor=1, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(url(block, 4))
        expect(page.locator(".banner h1")).to_have_text("REDADA CONFIRMADA en Building 1")
        expect(page.locator(".todo a[href^='tel:']")).to_have_text("555-0100")
        assert page.evaluate("document.documentElement.scrollWidth") <= width, "no sideways scrolling"
        sizes = page.evaluate("""() => ({
            body: parseFloat(getComputedStyle(document.body).fontSize),
            banner: parseFloat(getComputedStyle(document.querySelector('.banner h1')).fontSize),
            link: document.querySelector('.langs a').getBoundingClientRect().height})""")
        assert sizes["body"] >= 18 and sizes["banner"] >= 28 and sizes["link"] >= 44, sizes
        shot = tmp_path / f"page-es-{width}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        keep = os.environ.get("SILBATO_SCREENSHOT_DIR")  # to refresh the README's picture (360 px)
        if keep and width == 360:
            Path(keep, shot.name).write_bytes(shot.read_bytes())
    finally:
        context.close()


def test_a_large_video_cut_off_at_60_percent_resumes_at_360px_in_spanish(browser, block):
    """Sent in pieces by web/static/evidence.js; the piece past 60% loses its connection once, and
    the upload goes on from the confirmed offset (not from the start); the item opens to the same bytes."""
    import pyrage

    identity = pyrage.x25519.Identity.generate()
    raid = confirmed_raid(block)
    node = block.nodes[4]
    assert node.wait_for(lambda: node.store.get_alert(raid) is not None, timeout=20)
    folder = block.files.configs[3].evidence_dir
    server = Server(app_for(block, 4, TESTING=False, EVIDENCE_RECIPIENTS=str(identity.to_public())),
                    "127.0.0.1", 0, live_clients=2).start()
    context = browser.new_context(viewport={"width": 360, "height": 760}, locale="es-ES", is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(30_000)
    video = bytes(range(256)) * (5_300_000 // 256)
    pieces: list[tuple[int, str]] = []  # (offset, "sent" or "cut")

    def route(route):
        request = route.request
        if request.method != "PUT":
            route.continue_()
            return
        offset = int(re.search(r"offset=(\d+)", request.url)[1])
        if offset >= 0.6 * len(video) and not any(kind == "cut" for _, kind in pieces):
            pieces.append((offset, "cut"))
            route.abort("connectionreset")  # the phone walked out of the Wi-Fi's range
        else:
            pieces.append((offset, "sent"))
            route.continue_()

    try:
        page = context.new_page()
        page.route("**/uploads/**", route)
        page.goto(f"http://127.0.0.1:{server.port}/alerts/{raid}")
        expect(page.locator("#evidence")).to_have_text("Envía fotos, video o un testimonio de lo que viste")
        assert page.evaluate("document.documentElement.scrollWidth") <= 360, "no sideways scrolling"
        expect(page.locator("#form-limit")).to_be_hidden()  # with the script, the larger limit applies
        page.set_input_files("#file", files=[{"name": "clip.mp4", "mimeType": "video/mp4", "buffer": video}])
        page.get_by_role("button", name="Enviar").click()
        expect(page.locator(".sent")).to_contain_text("1", timeout=60_000)
    finally:
        context.close()
        server.shutdown()
    cut = next(offset for offset, kind in pieces if kind == "cut")
    after = [offset for offset, kind in pieces[pieces.index((cut, "cut")) + 1:]]
    assert after and after[0] == cut and 0 not in after  # resumed where it stopped, not from the start
    sealed = [p for p in folder.glob("*.age") if not p.name.endswith(".meta.age")]
    assert [pyrage.decrypt(p.read_bytes(), [identity]) for p in sealed] == [video]
