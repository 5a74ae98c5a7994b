"""Languages: every message translated in every language, the reader's choice, and no English left over."""

import re
from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from websupport import add_captain, app_for, everywhere, login, make_block, until

from node.catalog import DIRECTORY, LANGUAGES, po_file
from node.protocol.alerts import State

ROOT = Path(__file__).parent.parent
TRANSLATED = [lang for lang in LANGUAGES if lang != "en"]  # English is the source language
PLACEHOLDER = re.compile(r"%\((\w+)\)s")


def source_messages() -> set[str]:
    with (DIRECTORY / "babel.cfg").open() as fh:
        method_map, options_map = parse_mapping_cfg(fh)
    messages = set()
    for folder in ("web", "node"):  # the page, and the node's announcements and text alerts
        for _file, _line, message, _comments, _context in extract_from_dir(str(ROOT / folder), method_map, options_map):
            messages.update(message if isinstance(message, tuple) else [message])
    return {m for m in messages if m}


def catalog(lang: str):
    with po_file(lang).open("rb") as fh:
        return read_po(fh)


def test_the_sources_have_messages_to_translate():
    assert len(source_messages()) > 80


@pytest.mark.parametrize("lang", TRANSLATED)
def test_every_message_is_translated(lang):
    messages = source_messages()
    po = catalog(lang)
    missing = [m for m in messages if po.get(m) is None or not po.get(m).string]
    assert not missing, f"{lang}: untranslated: {missing}"
    fuzzy = [m.id for m in po if m.id and m.fuzzy]
    assert not fuzzy, f"{lang}: fuzzy: {fuzzy}"
    stale = [m.id for m in po if m.id and m.id not in messages]
    assert not stale, f"{lang}: no longer in the sources: {stale}"
    for message in po:
        if message.id:
            assert set(PLACEHOLDER.findall(message.string)) == set(PLACEHOLDER.findall(message.id)), (
                f"{lang}: {message.id!r} and {message.string!r} use different placeholders")


def test_the_template_for_translators_is_current():
    with (DIRECTORY / "messages.pot").open("rb") as fh:
        template = {m.id for m in read_po(fh) if m.id}
    assert template == source_messages(), "run the pybabel extract line at the top of node/translations/babel.cfg"


# -- the reader's language ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = make_block(tmp_path_factory.mktemp("i18n"))
    alert = b.nodes[1].report()
    until(b, lambda: everywhere(b, alert.id, State.REPORTED))
    b.nodes[2].act("confirm", alert.id)
    until(b, lambda: everywhere(b, alert.id, State.CONFIRMED))
    add_captain(b, 3, "ana")
    yield b
    b.stop()


@pytest.fixture
def app(block):
    return app_for(block, 3, LANGUAGES=["es", "en"], HOTLINE="555 0100")


def h1(html: str) -> str:
    return " ".join(re.search(r"<h1>(.*?)</h1>", html, re.S)[1].split())


BANNERS = {"en": "RAID CONFIRMED at Building 1", "es": "REDADA CONFIRMADA en Building 1",
           "ko": "단속 확인됨: Building 1", "tl": "KUMPIRMADONG RAID sa Building 1"}


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_banner_in_each_language(app, lang):
    html = app.test_client().get(f"/?lang={lang}").get_data(as_text=True)
    assert f'<html lang="{lang}">' in html
    assert h1(html) == BANNERS[lang]


@pytest.mark.parametrize(("header", "lang"), [
    ("es-MX,es;q=0.9,en;q=0.8", "es"), ("ko-KR,ko;q=0.9", "ko"), ("fil-PH", "tl"), ("tl", "tl"),
    ("en-US,en;q=0.9", "en"), ("de-DE,fr;q=0.5", "es"),  # none offered: the node's first language
    ("", "es")])
def test_accept_language_comes_first(app, header, lang):
    html = app.test_client().get("/", headers={"Accept-Language": header}).get_data(as_text=True)
    assert f'<html lang="{lang}">' in html


def test_the_one_tap_switch_is_remembered_in_a_cookie(app):
    client = app.test_client()
    response = client.get("/?lang=ko", headers={"Accept-Language": "es"})
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("lang=ko;") and "SameSite=Lax" in cookie and "Max-Age=31536000" in cookie
    again = client.get("/", headers={"Accept-Language": "es"}).get_data(as_text=True)
    assert h1(again) == BANNERS["ko"]  # the cookie wins over the browser's language
    live = client.get("/api/live").get_json()
    assert "단속 확인됨" in live["html"]
    links = re.findall(r'<a href="\?lang=(\w+)" hreflang="\w+" lang="\w+"( aria-current="true")?>', again)
    assert [code for code, _ in links] == list(LANGUAGES)
    assert [code for code, current in links if current] == ["ko"]
    assert client.get("/?lang=xx").headers.get("Set-Cookie") is None  # unknown languages are ignored


def test_a_wrong_language_cookie_is_ignored(app):
    client = app.test_client()
    client.set_cookie("lang", "<script>")
    html = client.get("/", headers={"Accept-Language": "ko"}).get_data(as_text=True)
    assert '<html lang="ko">' in html


# -- every route, every role, every language -----------------------------------------------------

PAGES = ["/", "/captain/login", "/captain", "/captain/actions", "/captain/alerts/{alert}", "/nope"]
# Words that may stay in English on a translated page: names, codes and data.
ALLOWED = {"Silbato", "Building", "CAP", "Password", "hotline", "Hotline",
           "Live", "console", "block", "node", "raid", "RAID", "observer", "checksum", "session", "alarma",
           "lugar", "Lugar", "warrant", "expire", "EXPIRE", "reload", "update", "download", "save", "TEST", "log",
           "captain", "radyo", "kapitan", "alerto", "insidente", "bundle"}


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style|nav)[^>]*>.*?</\1>", " ", html, flags=re.S)  # nav: each language in itself
    html = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"&\w+;|&#\d+;", " ", html)


@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("role", ["neighbor", "captain"])
def test_every_page_for_every_role_in_every_language(app, block, lang, role):
    client = app.test_client()
    if role == "captain":
        assert login(client, "ana").status_code == 303
    alert = block.nodes[3].store.active_alerts()[0].id
    for path in PAGES:
        url = path.format(alert=alert)
        response = client.get(url, headers={"Accept-Language": lang})
        needs_login = url.startswith("/captain/") and not url.startswith("/captain/login") or url == "/captain"
        if role == "neighbor" and needs_login:
            assert response.status_code == 302 and "/captain/login" in response.headers["Location"], url
            continue
        assert response.status_code == (404 if url == "/nope" else 200), url
        html = response.get_data(as_text=True)
        if "<html" in html:
            assert f'<html lang="{lang}">' in html, url
        if lang in ("ko",):
            # Korean is the easiest to check for English left over: any English word is suspect.
            words = set(re.findall(r"[A-Za-z]{4,}", visible_text(html))) - ALLOWED
            assert not words, f"{url}: English words on the Korean page: {sorted(words)}"
