"""The neighbors' page and the public API, read from a node's real SQLite store in a simulated block."""

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from websupport import app_for, everywhere, make_block, until

from node import __version__
from node.protocol.alerts import Kind, State
from node.errors import StoreError
from node.store import WEB_TABLES, Store
from web import create_app

STATIC = Path(__file__).parent.parent / "web" / "static"


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = make_block(tmp_path_factory.mktemp("web"))
    first = b.nodes[1].report()
    until(b, lambda: everywhere(b, first.id, State.REPORTED))
    b.nodes[2].act("confirm", first.id)
    test = b.nodes[3].report(Kind.TEST, location=103)
    until(b, lambda: everywhere(b, first.id, State.CONFIRMED) and everywhere(b, test.id, State.REPORTED))
    # Until node 3 has news of every building (B1 two hops away: through B2's heartbeats)
    until(b, lambda: {p["status"] for p in b.nodes[3].store.peers() if p["node_id"] != 3} == {"ok"})
    yield b
    b.stop()


@pytest.fixture
def client(block):
    return app_for(block, 3, HOTLINE="555 0100").test_client()


@pytest.fixture
def fresh(tmp_path):
    """A block of its own, for tests that change alerts."""
    b = make_block(tmp_path / "block")
    yield b
    b.stop()


def banner(html: str) -> str:
    match = re.search(r'<section class="banner (\w+)">\s*<h1>(.*?)</h1>', html, re.S)
    assert match, html[:500]
    return f"{match[1]}: {' '.join(match[2].split())}"


# -- the API ------------------------------------------------------------------------------------

def test_api_lists_alerts_with_the_promised_fields(client, block):
    rows = client.get("/api/alerts").get_json()
    assert len(rows) == 2
    by_kind = {r["kind"]: r for r in rows}
    raid = by_kind["raid"]
    assert raid["state"] == "confirmed" and raid["place"] == "Building 1" and raid["origin"] == 1
    assert raid["id"] == block.nodes[1].store.active_alerts()[0].id
    assert raid["received_at"].startswith("2027-")  # the sim's virtual epoch, as ISO 8601
    assert by_kind["test"]["state"] == "reported" and by_kind["test"]["place"] == "Building 3"
    for row in rows:
        assert {"id", "kind", "state", "place", "origin", "received_at", "age_seconds", "buildings"} <= row.keys()


def test_api_gives_one_alert_with_its_event_log(client, block):
    alert_id = block.nodes[1].store.active_alerts()[0].id
    body = client.get(f"/api/alerts/{alert_id}").get_json()
    assert [(e["state"], e["signer"], e["source"]) for e in body["events"] if e["outcome"] != "duplicate"] == [
        ("reported", 1, "air"), ("confirmed", 2, "air")]
    assert client.get("/api/alerts/9-999").status_code == 404
    assert client.get("/api/alerts/<script>").get_json() == {"error": "no such alert"}


def test_api_lists_buildings_with_their_health(client):
    nodes = client.get("/api/nodes").get_json()
    assert [(n["id"], n["name"], n["place"], n["health"], n["this_node"]) for n in nodes] == [
        (1, "B1", "Building 1", "ok", False), (2, "B2", "Building 2", "ok", False),
        (3, "B3", "Building 3", "ok", True)]
    health = client.get("/api/health").get_json()
    assert health["status"] == "ok" and health["banner"] == "confirmed" and health["live_slots"] == 200
    assert health["version"] == __version__  # Silbato's, not the live document's
    assert health["live_version"] == client.get("/api/live").get_json()["version"]
    assert client.get("/api/troubles").get_json() == {}


def test_a_building_is_silent_or_in_trouble(fresh):
    fresh.scheduler.run_for(10)
    now = fresh.clock()
    store = Store(fresh.files.configs[2].db_file)
    store.set_peer_status(1, "silent", now - 7200, 0)  # the daemon's supervision verdicts
    store.set_peer_status(2, "trouble", now - 10, 1)
    store.set_trouble("radio", "radio unplugged", now)  # this node's own
    store.close()
    client = app_for(fresh, 3).test_client()
    health = {n["id"]: n["health"] for n in client.get("/api/nodes").get_json()}
    assert health == {1: "silent", 2: "trouble", 3: "trouble"}
    html = client.get("/").get_data(as_text=True)
    assert "radio unplugged" in html and 'class="health-silent"' in html
    assert client.get("/api/health").get_json()["status"] == "trouble"


def test_before_the_daemon_judges_a_building_it_is_silent_if_not_heard_for_long(fresh):
    now = fresh.clock()
    store = Store(fresh.files.configs[2].db_file)
    store.db.execute("UPDATE peers SET status = NULL, last_heard = ?, remote_troubles = 0 WHERE node_id = 1",
                     [now - 4000])
    store.db.execute("UPDATE peers SET status = NULL, last_heard = ?, remote_troubles = 0 WHERE node_id = 2",
                     [now - 10])
    store.close()
    client = app_for(fresh, 3, SILENT_AFTER=3600).test_client()
    health = {n["id"]: n["health"] for n in client.get("/api/nodes").get_json()}
    assert health[1] == "silent" and health[2] == "ok"


# -- the banner ----------------------------------------------------------------------------------

def test_the_banner_through_a_raid_s_whole_life(fresh):
    client = app_for(fresh, 3, HOTLINE="555 0100").test_client()
    assert banner(client.get("/").get_data(as_text=True)) == "quiet: ALL QUIET"

    alert = fresh.nodes[1].report()
    until(fresh, lambda: everywhere(fresh, alert.id, State.REPORTED))
    html = client.get("/").get_data(as_text=True)
    assert banner(html) == "reported: RAID REPORTED, NOT YET CONFIRMED"
    assert "At Building 1. Responders are checking now." in html
    assert '<details id="rights" class="rights">' in html  # one tap away, closed

    fresh.nodes[2].act("confirm", alert.id)
    until(fresh, lambda: everywhere(fresh, alert.id, State.CONFIRMED))
    html = client.get("/").get_data(as_text=True)
    assert banner(html) == "confirmed: RAID CONFIRMED at Building 1"
    assert "What to do now:" in html and 'href="tel:5550100"' in html
    assert '<details id="rights" class="rights" open>' in html  # shown expanded
    for point in ("You have the right to remain silent.", "Do not open the door.",
                  "Agents need a warrant signed by a judge", "slip it under the door", "Do not sign anything.",
                  "Ask for a lawyer."):
        assert point in html

    fresh.nodes[1].act("all_clear", alert.id)
    until(fresh, lambda: everywhere(fresh, alert.id, State.ALL_CLEAR))
    html = client.get("/").get_data(as_text=True)
    assert re.fullmatch(r"all_clear: ALL CLEAR since \S+( \S+)?", banner(html)), banner(html)
    assert "The raid at Building 1 is over." in html


def test_a_false_alarm_returns_to_all_quiet_and_a_test_never_changes_the_banner(fresh):
    client = app_for(fresh, 3).test_client()
    alert = fresh.nodes[1].report()
    until(fresh, lambda: everywhere(fresh, alert.id, State.REPORTED))
    fresh.nodes[1].act("cancel", alert.id)
    test = fresh.nodes[2].report(Kind.TEST)
    until(fresh, lambda: everywhere(fresh, alert.id, State.CANCELLED) and everywhere(fresh, test.id, State.REPORTED))
    html = client.get("/").get_data(as_text=True)
    assert banner(html) == "quiet: ALL QUIET"
    assert "A TEST is running. This is only a test." in html
    assert "CANCELLED (false alarm)" in html  # in the history


def test_an_empty_store_says_all_quiet(tmp_path):
    Store(tmp_path / "empty.db").close()
    client = create_app({"DATABASE": str(tmp_path / "empty.db")}).test_client()
    assert "ALL QUIET" in client.get("/").get_data(as_text=True)
    assert client.get("/api/alerts").get_json() == []


def test_a_missing_database_is_a_503_not_a_crash(tmp_path):
    client = create_app({"DATABASE": str(tmp_path / "nope.db")}).test_client()
    for url in ("/", "/api/alerts", "/api/live", "/api/nodes", "/api/events"):
        response = client.get(url)
        assert response.status_code == 503, url
        assert "Retry-After" in response.headers


def test_before_the_daemon_has_started_the_page_says_so_and_logs_it_once(tmp_path, caplog):
    """Not "busy": the node daemon never made its database (not started, or starting)."""
    client = create_app({"DATABASE": str(tmp_path / "db" / "silbato.db")}).test_client()
    with caplog.at_level("INFO"):
        for _ in range(3):
            page = client.get("/")
            assert page.status_code == 503 and page.headers["Retry-After"] == "10"
            html = page.get_data(as_text=True)
            assert "This node is not running yet, or is still starting." in html and "busy" not in html
            assert '<meta http-equiv="refresh" content="10">' in html  # it does try again, without script
            api = client.get("/api/alerts")
            assert api.status_code == 503 and "not running yet" in api.get_json()["error"]
            assert client.get("/captain/login").status_code == 200  # a form that needs no database yet
    told = [r for r in caplog.records if "silbato.db" in r.getMessage()]
    assert len(told) == 1 and "is silbato-node running?" in told[0].getMessage(), [r.getMessage() for r in told]


# -- offline, light and safe -------------------------------------------------------------------

def test_the_page_works_without_javascript_and_loads_nothing_from_elsewhere(client):
    html = client.get("/").get_data(as_text=True)
    assert re.search(r'<noscript><meta http-equiv="refresh" content="\d+"></noscript>', html)
    assert 'aria-live="assertive"' in html
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all("src=" in attrs for attrs in scripts), "no inline script"
    assert "style=" not in html and "<style" not in html, "no inline style (the CSP forbids it)"
    for url in re.findall(r'(?:href|src|action)="([^"]*)"', html):
        assert url.startswith(("/", "?", "#", "tel:")), f"{url} leaves this node"


def test_the_whole_page_weighs_under_30_kb(client, block):
    page = client.get("/?lang=es")  # Spanish with a confirmed alert: the longest page
    size = len(page.data)
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)"', page.get_data(as_text=True)):
        response = client.get(asset)
        assert response.status_code == 200
        size += len(response.data)
    print(f"page weight: {size} bytes (HTML + CSS + JS, uncompressed)")
    assert size <= 30 * 1024


def test_a_long_history_keeps_the_page_under_30_kb(fresh):
    from node.protocol.alerts import Alert
    from node.protocol.alerts import State as S

    store = Store(fresh.files.configs[2].db_file)
    now = fresh.clock()
    for i in range(60):
        store.save_alert(Alert(id=f"1-{1000 + i}", kind=Kind.RAID, location=101, reporter=1, state=S.CANCELLED,
                               signer=1, opened_at=now - 3600 + i, updated_at=now - 3000 + i,
                               last_report_at=now - 3600 + i))
    store.close()
    client = app_for(fresh, 3, HOTLINE="555 0100").test_client()
    page = client.get("/?lang=tl")
    assert page.get_data(as_text=True).count('class="alert state-cancelled') == 20
    size = len(page.data) + sum(len(client.get(a).data) for a in re.findall(r'(?:href|src)="(/static/[^"]+)"',
                                                                              page.get_data(as_text=True)))
    assert size <= 30 * 1024, size
    assert len(client.get("/api/alerts").get_json()) == 60


SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@pytest.mark.parametrize("url", ["/", "/?lang=ko", "/api/alerts", "/api/openapi.json", "/static/silbato.css",
                                 "/static/silbato.js", "/captain", "/captain/login", "/nope", "/generate_204"])
def test_every_response_carries_the_security_headers(client, url):
    response = client.get(url)
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (url, name)


def test_all_output_is_escaped(fresh):
    evil = '<script>alert("x")</script>'
    store = Store(fresh.files.configs[2].db_file)
    store.db.execute("UPDATE peers SET place = ?, name = ? WHERE node_id = 1", [evil, "<b>B1"])
    store.close()
    alert = fresh.nodes[1].report()
    until(fresh, lambda: everywhere(fresh, alert.id, State.REPORTED))
    client = app_for(fresh, 3).test_client()
    for url in ("/", "/api/live"):
        body = client.get(url).get_data(as_text=True)
        assert "<script>alert" not in body and "<b>B1" not in body, url
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in client.get("/").get_data(as_text=True)
    assert client.get("/api/alerts").get_json()[0]["place"] == evil  # JSON carries it as data


def test_error_pages_reveal_nothing(block):
    app = app_for(block, 3)

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret detail in /var/lib/silbato/silbato.db")

    client = app.test_client()
    response = client.get("/boom")
    body = response.get_data(as_text=True)
    assert response.status_code == 500
    assert "secret" not in body and "Traceback" not in body and "silbato.db" not in body
    assert "Something went wrong" in body
    for url in ("/nope", "/api/nope"):
        body = client.get(url).get_data(as_text=True)
        assert client.get(url).status_code == 404 and "Traceback" not in body and "werkzeug" not in body.lower()


def test_a_flood_from_one_address_gets_429_and_the_sim_s_own_pages_are_never_limited(block):
    client = app_for(block, 3, RATE_LIMIT=(5, 60.0), EXEMPT_LOOPBACK=True).test_client()
    remote = {"REMOTE_ADDR": "192.0.2.7"}
    codes = [client.get("/api/alerts", environ_base=remote).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    limited = client.get("/", environ_base=remote)
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    assert client.get("/", environ_base={"REMOTE_ADDR": "192.0.2.8"}).status_code == 200  # another phone
    assert client.get("/static/silbato.css", environ_base=remote).status_code == 200  # cached assets
    assert all(client.get("/api/alerts").status_code == 200 for _ in range(10))  # 127.0.0.1 in the sim
    node = app_for(block, 3, RATE_LIMIT=(5, 60.0)).test_client()  # a node's settings: loopback counts too
    assert [node.get("/api/alerts").status_code for _ in range(7)] == [200] * 5 + [429] * 2


def test_an_overloaded_server_answers_503_at_once(block):
    from types import SimpleNamespace

    from werkzeug.test import Client

    from web.server import MAX_QUEUE, Server, shed_when_overloaded

    shedding = [True]
    client = Client(shed_when_overloaded(app_for(block, 3), lambda: shedding[0]))
    response = client.get("/")
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    shedding[0] = False
    assert client.get("/").status_code == 200

    def overloaded(queued: int, busy: int, threads: int = 10) -> bool:
        dispatcher = SimpleNamespace(queue=[None] * queued, active_count=busy, threads=set(range(threads)))
        return Server.overloaded(SimpleNamespace(_server=SimpleNamespace(task_dispatcher=dispatcher)))

    assert not overloaded(MAX_QUEUE + 1, busy=3), "a queue while threads are idle is a burst, not overload"
    assert not overloaded(MAX_QUEUE, busy=10)
    assert overloaded(MAX_QUEUE + 1, busy=10)


def test_a_broken_web_table_is_a_503(fresh):
    from websupport import add_captain, login

    add_captain(fresh, 3, "ana")
    client = app_for(fresh, 3).test_client()
    login(client, "ana")
    store = Store(fresh.files.configs[2].db_file)
    store.db.execute("DROP TABLE requests")
    store.close()
    token = client.get("/api/session").get_json()["csrf_token"]
    response = client.post("/api/requests", json={"action": "raise", "location": 101},
                           headers={"X-CSRFToken": token})
    assert response.status_code == 503 and "Retry-After" in response.headers


def test_the_captive_portal_checks_lead_to_the_page(client):
    for path in ("/generate_204", "/gen_204", "/hotspot-detect.html", "/library/test/success.html",
                 "/connecttest.txt", "/ncsi.txt", "/redirect", "/canonical.html", "/success.txt"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"] == "/", path


def test_an_unchanged_page_is_a_304(client):
    first = client.get("/")
    assert first.headers["ETag"] and "no-cache" in first.headers["Cache-Control"]
    again = client.get("/", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    live = client.get("/api/live")
    assert client.get("/api/live", headers={"If-None-Match": live.headers["ETag"]}).status_code == 304


# -- live updates -------------------------------------------------------------------------------

def read_event(lines) -> dict:
    """The next ``state`` event from a server-sent event stream (an iterator of lines)."""
    event = {}
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            if event.get("event") == "state":
                return json.loads(event["data"])
            event = {}
        elif not line.startswith(":") and ":" in line:
            key, _, value = line.partition(":")
            event[key] = value.lstrip(" ")
    raise AssertionError("the stream ended before a state event")


def sse_lines(response):
    buffer = ""
    for chunk in response.response:
        buffer += chunk.decode() if isinstance(chunk, bytes) else chunk
        while "\n" in buffer:
            line, buffer = buffer.split("\n", 1)
            yield line + "\n"


def test_the_event_stream_sends_the_state_now_and_after_a_change(fresh):
    app = app_for(fresh, 3, STREAM_SECONDS=30.0, KEEPALIVE=0.05, LIVE_POLL=0.02)
    response = app.test_client().get("/api/events?lang=es", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    lines = sse_lines(response)
    first = read_event(lines)
    assert first["state"] == "quiet" and "TODO EN CALMA" in first["html"]
    alert = fresh.nodes[1].report()
    until(fresh, lambda: everywhere(fresh, alert.id, State.REPORTED))
    second = read_event(lines)
    assert second["state"] == "reported" and second["version"] != first["version"]
    assert "REDADA REPORTADA" in second["html"]
    response.close()
    assert app.extensions["silbato.live"].clients == 0


def test_live_slots_are_bounded_and_the_next_page_gets_503(block):
    app = app_for(block, 3, LIVE_CLIENTS=1, STREAM_SECONDS=30.0)
    client = app.test_client()
    held = client.get("/api/events", buffered=False)
    assert held.status_code == 200
    refused = client.get("/api/events", buffered=False)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "15"
    held.close()  # the reader left: its slot frees
    again = client.get("/api/events", buffered=False)
    assert again.status_code == 200
    again.close()


def test_a_stream_ends_by_itself_so_the_browser_reconnects(block):
    app = app_for(block, 3, STREAM_SECONDS=1.0, KEEPALIVE=0.05)
    body = app.test_client().get("/api/events").get_data(as_text=True)
    assert body.startswith("retry: 3000\n\n") and body.count("event: state") == 1 and ": keepalive" in body
    assert app.extensions["silbato.live"].clients == 0


def test_a_reconnect_with_the_current_version_gets_no_repeat(block):
    app = app_for(block, 3, STREAM_SECONDS=0.2, KEEPALIVE=0.05)
    client = app.test_client()
    version = client.get("/api/live").get_json()["version"]
    body = client.get("/api/events", headers={"Last-Event-ID": version}).get_data(as_text=True)
    assert "event: state" not in body


# -- boundaries -----------------------------------------------------------------------------------

def test_the_web_s_store_can_write_its_own_tables_only(tmp_path):
    Store(tmp_path / "node.db").close()
    web = Store(tmp_path / "node.db", writes=WEB_TABLES)
    web.add_request("raise", captain="ana", now=1.0, location=101)
    web.add_note("1-1", "ana", "two vans", 2.0)
    for sql in ("INSERT INTO alerts (id, kind) VALUES ('9-9', 1)", "DELETE FROM events", "UPDATE peers SET place = 'x'",
                "INSERT INTO outbox (frame, created_at) VALUES (x'00', 1)", "DROP TABLE notes",
                "CREATE TABLE evil (x)", "PRAGMA journal_mode = DELETE", "ATTACH ':memory:' AS other"):
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            web.db.execute(sql)
    web.close()
    with pytest.raises(StoreError):
        Store(tmp_path / "missing.db", writes=WEB_TABLES)  # never creates a database


def test_no_get_changes_the_node_s_state(fresh):
    """Every GET route, as a captain, leaves every table as it was."""
    from websupport import add_captain, login

    alert = fresh.nodes[1].report()
    until(fresh, lambda: everywhere(fresh, alert.id, State.REPORTED))
    add_captain(fresh, 3, "ana")
    app = app_for(fresh, 3, STREAM_SECONDS=0.1, KEEPALIVE=0.05)
    client = app.test_client()
    login(client, "ana")
    db = fresh.files.configs[2].db_file

    def dump():
        conn = sqlite3.connect(db)
        try:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return {t: conn.execute(f"SELECT * FROM [{t}]").fetchall() for t in tables}
        finally:
            conn.close()

    before = dump()
    seen = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        url = re.sub(r"<[^>]*request_id>", "1", rule.rule.replace("<alert_id>", alert.id)).replace(
            "<path:filename>", "silbato.css").replace("<upload_id>", "no-such-upload")
        assert "<" not in url, url
        assert client.get(url).status_code < 500, url
        seen += 1
    assert seen >= 20
    assert dump() == before


def test_web_never_imports_radio_hardware_or_daemon():
    code = ("import sys, web; web.create_app({'DATABASE': 'x'}); import web.server; "
            "bad = [m for m in ('node.radio', 'node.hardware', 'node.daemon', 'gpiozero', 'meshtastic') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# -- readable -------------------------------------------------------------------------------------

HEX = r"#[0-9a-f]{3}(?:[0-9a-f]{3})?\b"


def _luminance(hex_colour: str) -> float:
    if len(hex_colour) == 4:
        hex_colour = "#" + "".join(c * 2 for c in hex_colour[1:])
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_banners_and_text_meet_wcag_aa_contrast():
    css = (STATIC / "silbato.css").read_text()
    pairs = 0
    for selector, body in re.findall(r"([^{}]+)\{([^}]*)\}", css):
        background = re.search(rf"background:({HEX})", body)
        colour = re.search(rf"(?<![-\w])color:({HEX})", body)
        if background and colour:
            ratio = contrast(background[1], colour[1])
            assert ratio >= 4.5, f"{selector.strip()}: {ratio:.2f}"
            pairs += 1
        elif colour and "banner" not in selector:
            ratio = contrast(colour[1], "#ffffff")
            assert ratio >= 4.5, f"{selector.strip()} on white: {ratio:.2f}"
    assert pairs >= 5
    # the banners that inherit white text
    for state in ("quiet", "error"):
        background = re.search(rf"\.banner\.{state}\{{background:({HEX})", css)[1]
        assert contrast(background, "#ffffff") >= 4.5
