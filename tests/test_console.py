"""The captains' console: accounts, login and its throttle, CSRF, and requests that the node daemon acts on."""

import re
import time

import pytest
from click.testing import CliRunner
from websupport import PASSWORD, add_captain, app_for, csrf_token, everywhere, login, make_block, settle, until
from werkzeug.security import check_password_hash

from node.protocol.alerts import State
from node.cli import cli
from node.store import REQUEST_TTL, Store
from web.auth import Throttle


@pytest.fixture
def block(tmp_path):
    b = make_block(tmp_path / "block")
    add_captain(b, 3, "ana")
    add_captain(b, 3, "bob")
    add_captain(b, 1, "cruz")
    yield b
    b.stop()


@pytest.fixture
def app(block):
    return app_for(block, 3)


@pytest.fixture
def ana(app):
    client = app.test_client()
    assert login(client, "ana").status_code == 303
    return client


def act(client, action, **fields):
    token = csrf_token(client, "/captain")
    return client.post("/captain/act", data={"action": action, "csrf_token": token, **fields})


def statuses(client) -> list[str]:
    html = client.get("/captain/actions").get_data(as_text=True)
    return [" ".join(s.split()) for s in re.findall(r'<span class="status">(.*?)</span>', html, re.S)]


# -- accounts on the node ----------------------------------------------------------------------------

def test_captain_add_remove_and_list(tmp_path):
    from node.sim import provision

    files = provision(tmp_path, 1)
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{files.configs[0].state_dir}"\n')
    runner = CliRunner()

    def run(*args, stdin=None):
        return runner.invoke(cli, ["--config", str(toml), "captain", *args], input=stdin)

    result = run("add", "ana", stdin="short\nshort\n")
    assert result.exit_code != 0 and "at least 8 characters" in result.output
    result = run("add", "ana", stdin=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    store = Store(files.configs[0].db_file)
    row = store.captain("ana")
    store.close()
    assert row["password_hash"].startswith("scrypt:") and check_password_hash(row["password_hash"], PASSWORD)
    assert "exists" in run("add", "ana", stdin=f"{PASSWORD}\n{PASSWORD}\n").output
    assert run("add", "ana", "--replace", stdin="new password 1\nnew password 1\n").exit_code == 0
    assert run("add", "not a name").exit_code != 0
    assert run("list").output.split() == ["ana"]
    assert run("remove", "ana").exit_code == 0
    assert run("remove", "ana").exit_code != 0
    assert run("list").output == ""


# -- logging in ---------------------------------------------------------------------------------------

def test_the_console_needs_a_login(app):
    client = app.test_client()
    response = client.get("/captain")
    assert response.status_code == 302 and response.headers["Location"].startswith("/captain/login")
    for url in ("/captain/actions", "/captain/alerts/1-1"):
        assert client.get(url).status_code == 302
    assert client.get("/api/requests").status_code == 401
    assert client.get("/api/session").get_json() == {"captain": None, "csrf_token": None}


def test_a_login_sets_a_safe_session_cookie(app):
    client = app.test_client()
    assert login(client, "ana", "wrong password").status_code == 401
    response = login(client, "ana")
    assert response.status_code == 303 and response.headers["Location"] == "/captain"
    cookies = {c.split("=", 1)[0]: c for c in response.headers.getlist("Set-Cookie")}
    session = cookies["silbato_session"]
    assert "HttpOnly" in session and "SameSite=Lax" in session
    assert "HttpOnly" in cookies["silbato_device"] and "SameSite=Lax" in cookies["silbato_device"]
    assert client.get("/captain").status_code == 200
    assert client.get("/api/session").get_json()["captain"] == "ana"


def test_login_never_redirects_to_another_site(app):
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        client = app.test_client()
        response = client.post("/captain/login", data={"name": "ana", "password": PASSWORD, "next": target,
                                                       "csrf_token": csrf_token(client)})
        assert response.headers["Location"] == "/captain", target


def test_logging_out_and_removing_a_captain_end_the_session(app, ana, block):
    bob = app.test_client()
    login(bob, "bob")
    token = csrf_token(ana, "/captain")
    assert ana.post("/captain/logout", data={"csrf_token": token}).status_code == 303
    assert ana.get("/captain").status_code == 302
    store = Store(block.files.configs[2].db_file)
    store.remove_captain("bob")
    store.close()
    assert bob.get("/captain").status_code == 302  # at the next click


def test_a_new_password_ends_the_old_sessions(app, ana, block):
    add_captain(block, 3, "ana-2")
    store = Store(block.files.configs[2].db_file)
    store.add_captain("ana", store.captain("ana-2")["password_hash"], 0.0, replace=True)
    store.close()
    assert ana.get("/captain").status_code == 302


# -- the throttle -------------------------------------------------------------------------------------

class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def attempt(app, name, password, address, client=None):
    client = client or app.test_client()
    token = csrf_token(client)
    return client.post("/captain/login", data={"name": name, "password": password, "csrf_token": token},
                       environ_base={"REMOTE_ADDR": address})


def test_ten_wrong_tries_lock_an_account_for_new_browsers_but_never_its_captain(app):
    clock = Clock()
    app.extensions["silbato.throttle"] = Throttle(clock=clock)
    captain_browser = app.test_client()
    assert attempt(app, "ana", PASSWORD, "192.0.2.1", captain_browser).status_code == 303  # known device
    for i in range(10):  # an attacker on ten addresses
        assert attempt(app, "ana", f"guess {i}", f"198.51.100.{i}").status_code == 401
    locked = attempt(app, "ana", PASSWORD, "203.0.113.5")  # the right password, from a new browser
    assert locked.status_code == 429 and int(locked.headers["Retry-After"]) > 800
    assert "Too many tries" in locked.get_data(as_text=True)
    # the captain's own browser still gets in
    assert attempt(app, "ana", PASSWORD, "192.0.2.1", captain_browser).status_code == 303
    assert attempt(app, "bob", PASSWORD, "203.0.113.5").status_code == 303  # other accounts are not touched
    clock.now += 15 * 60
    assert attempt(app, "ana", PASSWORD, "203.0.113.5").status_code == 303  # and the lock passes


def test_ten_wrong_tries_from_one_address_lock_that_address(app):
    clock = Clock()
    app.extensions["silbato.throttle"] = Throttle(clock=clock)
    for i in range(10):
        assert attempt(app, f"name{i}", "whatever", "198.51.100.9").status_code == 401
    assert attempt(app, "ana", PASSWORD, "198.51.100.9").status_code == 429
    assert attempt(app, "ana", PASSWORD, "198.51.100.10").status_code == 303


def test_the_throttle_keeps_bounded_memory():
    clock = Clock()
    throttle = Throttle(clock=clock, max_keys=100)
    for i in range(1000):
        throttle.failed(f"name{i}", f"10.0.{i // 256}.{i % 256}", trusted=False)
    assert len(throttle._failures) <= 100
    clock.now += 15 * 60
    throttle.failed("late", "10.9.9.9", trusted=False)
    assert len(throttle._failures) <= 2


# -- CSRF ----------------------------------------------------------------------------------------------

def test_every_state_changing_request_needs_a_csrf_token(app, ana, block):
    alert = block.nodes[1].report()
    until(block, lambda: everywhere(block, alert.id, State.REPORTED))
    bad = {"csrf_token": "forged"}
    assert app.test_client().post("/captain/login", data={"name": "ana", "password": PASSWORD}).status_code == 403
    assert ana.post("/captain/act", data={"action": "confirm", "alert": alert.id}).status_code == 403
    assert ana.post("/captain/act", data={"action": "confirm", "alert": alert.id, **bad}).status_code == 403
    assert ana.post(f"/captain/alerts/{alert.id}/notes", data={"text": "x"}).status_code == 403
    assert ana.post("/captain/logout").status_code == 403
    assert ana.post("/api/requests", json={"action": "cancel", "alert": alert.id}).status_code == 403
    assert ana.post("/api/requests", json={"action": "cancel", "alert": alert.id},
                    headers={"X-CSRFToken": "forged"}).status_code == 403
    assert ana.post(f"/api/alerts/{alert.id}/notes", json={"text": "x"}).status_code == 403
    store = Store(block.files.configs[2].db_file)
    assert store.requests() == [] and store.notes(alert.id) == []
    store.close()
    forbidden = ana.post("/captain/act", data={"action": "confirm", "alert": alert.id})
    assert "log in again" in forbidden.get_data(as_text=True)


# -- requests the daemon acts on -------------------------------------------------------------------------

def test_a_raise_from_the_console_is_sent_to_the_block(ana, block):
    response = act(ana, "raise", location="102")
    assert response.status_code == 303 and "req=1" in response.headers["Location"]
    assert statuses(ana) == ["waiting for the node…"]
    page = ana.get("/captain?req=1").get_data(as_text=True)
    assert '<meta http-equiv="refresh" content="2">' in page  # without JavaScript, look again soon
    settle(block, 2)
    assert statuses(ana) == ["sent to the block"]
    until(block, lambda: all(node.store.active_alerts() for node in block.nodes.values()))
    for node in block.nodes.values():
        (alert,) = node.store.active_alerts()
        assert (alert.reporter, alert.location, alert.state) == (3, 102, State.REPORTED)


def test_a_captain_cannot_confirm_a_report_they_raised(app, ana, block):
    first = block.nodes[1].report()
    until(block, lambda: everywhere(block, first.id, State.REPORTED))
    act(ana, "raise", location="101")  # merges into node 1's report of the same place
    settle(block, 5)
    (alert,) = block.nodes[3].store.active_alerts()
    assert alert.reporter == 1
    assert 'value="confirm"' not in ana.get("/captain/actions").get_data(as_text=True)
    act(ana, "confirm", alert=alert.id)
    settle(block, 5)
    assert statuses(ana)[0] == "refused: the captain who reported this alert cannot also confirm it"
    bob = app.test_client()
    login(bob, "bob")
    act(bob, "confirm", alert=alert.id)
    settle(block, 2)
    assert statuses(bob)[0] == "sent to the block"
    until(block, lambda: everywhere(block, alert.id, State.CONFIRMED))


def test_a_node_never_confirms_its_own_report(app, ana, block):
    act(ana, "raise", location="103")
    settle(block, 5)
    (alert,) = block.nodes[3].store.active_alerts()
    bob = app.test_client()
    login(bob, "bob")  # another captain, but on the same node that signed the report
    act(bob, "confirm", alert=alert.id)
    settle(block, 5)
    assert "refused: alert" in statuses(bob)[0] and "other than the reporter" in statuses(bob)[0]


def test_confirm_all_clear_and_cancel_through_the_daemon(ana, block):
    first = block.nodes[1].report()
    second = block.nodes[2].report(location=102)
    until(block, lambda: everywhere(block, first.id, State.REPORTED) and everywhere(block, second.id, State.REPORTED))
    act(ana, "confirm", alert=first.id)
    settle(block, 2)
    act(ana, "all_clear", alert=first.id)
    act(ana, "cancel", alert=second.id)
    settle(block, 2)
    assert statuses(ana) == ["sent to the block"] * 3
    until(block, lambda: everywhere(block, first.id, State.ALL_CLEAR) and everywhere(block, second.id, State.CANCELLED))
    act(ana, "cancel", alert=first.id)
    settle(block, 5)
    assert statuses(ana)[0].startswith("refused: cannot cancel all_clear alert")


def test_a_test_from_the_console_never_changes_the_banner(ana, block):
    act(ana, "test", location="103")
    until(block, lambda: bool(block.nodes[1].store.active_alerts()))
    assert block.nodes[1].store.active_alerts()[0].kind.word == "test"
    html = ana.get("/").get_data(as_text=True)
    assert "ALL QUIET" in html and "A TEST is running" in html


def test_a_request_older_than_its_ttl_is_refused_not_acted_on_late(block):
    """A click made while the daemon was down must not raise a siren when the daemon comes back."""
    store = Store(block.files.configs[2].db_file)
    stale = store.add_request("raise", captain="ana", now=block.clock() - REQUEST_TTL - 10, location=102)
    store.close()
    settle(block, 2)
    row = block.nodes[3].store.get_request(stale)
    assert row["status"] == "refused" and "did not pick this up" in row["reason"]
    assert block.nodes[3].store.alerts() == []


def test_without_a_daemon_the_console_says_the_node_did_not_answer(tmp_path):
    block = make_block(tmp_path / "b")
    add_captain(block, 3, "ana")
    clock = [block.clock()]
    app = app_for(block, 3, ON_REQUEST=None, CLOCK=lambda: clock[0])
    block.stop()  # no daemon at all now; the page still works from the database
    client = app.test_client()
    login(client, "ana")
    act(client, "raise", location="101")
    assert statuses(client) == ["waiting for the node…"]
    clock[0] += REQUEST_TTL + 1
    assert statuses(client) == ["the node did not answer; is it running?"]


def test_a_signed_request_waits_for_the_radio_before_it_is_sent(ana, block):
    block.air.radios[3].plugged = False
    act(ana, "raise", location="103")
    settle(block, 3)
    assert statuses(ana) == ["signed; waiting for the radio (see TROUBLE)"]
    # the console's script keeps looking while the frame waits (it stopped at "signed" before)
    assert 'data-pending="2"' in ana.get("/captain/actions").get_data(as_text=True)
    block.air.radios[3].plugged = True
    settle(block, 3)
    assert statuses(ana) == ["sent to the block"]
    assert "data-pending" not in ana.get("/captain/actions").get_data(as_text=True)


def test_notes_stay_on_the_node(ana, block):
    alert = block.nodes[1].report()
    until(block, lambda: everywhere(block, alert.id, State.REPORTED))
    frames_before = len(block.nodes[3].store.db.execute("SELECT * FROM outbox").fetchall())
    token = csrf_token(ana, "/captain")
    response = ana.post(f"/captain/alerts/{alert.id}/notes",
                        data={"text": "  two vans,\nno marks ", "csrf_token": token})
    assert response.status_code == 303
    page = ana.get(f"/captain/alerts/{alert.id}").get_data(as_text=True)
    assert "two vans, no marks" in page and "ana" in page
    assert ana.post(f"/captain/alerts/{alert.id}/notes",
                    data={"text": "x" * 281, "csrf_token": token}).status_code == 400
    assert ana.post("/captain/alerts/9-9/notes", data={"text": "x", "csrf_token": token}).status_code == 404
    settle(block, 5)
    assert len(block.nodes[3].store.db.execute("SELECT * FROM outbox").fetchall()) == frames_before
    assert block.nodes[1].store.notes(alert.id) == []  # never went on air


# -- the same actions through the JSON API ---------------------------------------------------------------

def test_the_api_takes_a_captain_s_requests_with_a_csrf_header(ana, block):
    token = ana.get("/api/session").get_json()["csrf_token"]
    headers = {"X-CSRFToken": token}
    response = ana.post("/api/requests", json={"action": "raise", "location": 101}, headers=headers)
    assert response.status_code == 202
    created = response.get_json()
    assert created["status"] == "pending" and response.headers["Location"] == f"/api/requests/{created['id']}"
    settle(block, 5)
    done = ana.get(response.headers["Location"]).get_json()
    assert done["status"] == "sent" and done["alert"] == block.nodes[3].store.active_alerts()[0].id
    assert [r["id"] for r in ana.get("/api/requests").get_json()] == [created["id"]]
    for body, code in (({"action": "explode"}, 400), ({"action": "raise"}, 400),
                       ({"action": "raise", "location": 999}, 409),
                       ({"action": "confirm", "alert": "nope"}, 400), ({"action": "confirm", "alert": "9-9"}, 409),
                       ({"action": "raise", "location": "101"}, 400), ([], 400)):
        assert ana.post("/api/requests", json=body, headers=headers).status_code == code, body
    alert_id = done["alert"]
    assert ana.post(f"/api/alerts/{alert_id}/notes", json={"text": "quiet street"}, headers=headers).status_code == 201
    assert [n["text"] for n in ana.get(f"/api/alerts/{alert_id}/notes").get_json()] == ["quiet street"]
    assert ana.get("/api/requests/999").status_code == 404


def test_old_requests_and_notes_go_with_the_retention_purge(ana, block):
    alert = block.nodes[3].report()
    token = ana.get("/api/session").get_json()["csrf_token"]
    ana.post(f"/api/alerts/{alert.id}/notes", json={"text": "note"}, headers={"X-CSRFToken": token})
    act(ana, "cancel", alert=alert.id)
    settle(block, 5)
    store = block.nodes[3].store
    assert store.requests() and store.notes(alert.id)
    store.purge(block.clock() + 10 * 86400, retention=3600)
    assert store.requests() == [] and store.notes(alert.id) == []


def test_the_sim_s_pages_pick_up_requests_at_once(tmp_path):
    """In the running sim, a captain's click reaches the siren in well under a second."""
    from node.sim import Block

    block = Block(tmp_path / "rt", 2, "line", scale=1.0).start()
    try:
        add_captain(block, 2, "ana")
        app = app_for(block, 2)
        client = app.test_client()
        login(client, "ana")
        siren = block.siren_pin(2)
        siren.clear_states()
        start = time.monotonic()
        act(client, "raise", location="102")
        node = block.nodes[2]
        assert node.wait_for(lambda: bool(node.store.active_alerts()), timeout=5)
        elapsed = time.monotonic() - start
        assert any(state for _, state in siren.states), "the siren did not sound"
        print(f"click to siren in the sim: {elapsed * 1000:.0f} ms")
    finally:
        block.stop()
