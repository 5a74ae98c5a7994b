"""Captains' sessions kept on the node, and the page's secret kept across restarts.

A copied session cookie must not outlive its session: logout, ``silbato captain remove``
and idle time end it on the node. The secret that signs the cookies lives in
``web.state_dir``, so two starts of the page accept each other's cookies until
``silbato web rotate-secret``.
"""

import hashlib
import os
import stat

import pytest
from click.testing import CliRunner
from websupport import add_captain, app_for, csrf_token, login, make_block

from node.cli import cli
from node.errors import KeyFileError
from node.store import SESSION_LIFETIME, Store
from web import auth, security


class Clock:
    """The app's clock (``CLOCK``), moved by hand."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def block(tmp_path):
    b = make_block(tmp_path / "block")
    add_captain(b, 3, "ana")
    add_captain(b, 3, "bob")
    yield b
    b.stop()


@pytest.fixture
def clock(block):
    return Clock(block.clock())


@pytest.fixture
def app(block, clock):
    return app_for(block, 3, CLOCK=clock, SESSION_IDLE=1800.0)


def logged_in(app, cookie: str) -> bool:
    """Whether a browser presenting only ``cookie`` (a copy of the session cookie) is a captain."""
    client = app.test_client(use_cookies=False)
    headers = {"Cookie": f"silbato_session={cookie}"}
    console = client.get("/captain", headers=headers)
    api = client.get("/api/requests", headers=headers)
    assert (console.status_code == 200) == (api.status_code == 200), (console.status_code, api.status_code)
    if console.status_code != 200:
        assert console.status_code == 302 and api.status_code == 401
    return console.status_code == 200


def session_cookie(app, name: str = "ana"):
    client = app.test_client()
    assert login(client, name).status_code == 303
    return client, client.get_cookie("silbato_session").value


def sessions(block) -> list[dict]:
    store = Store(block.files.configs[2].db_file)
    try:
        return list(store.db.query("SELECT * FROM sessions ORDER BY created_at"))
    finally:
        store.close()


# -- server-side sessions ------------------------------------------------------------------------------

def test_a_copied_cookie_is_worthless_after_logout(app, block):
    client, copy = session_cookie(app)
    assert logged_in(app, copy)
    assert client.post("/captain/logout", data={"csrf_token": csrf_token(client, "/captain")}).status_code == 303
    assert not logged_in(app, copy)
    assert client.get("/api/session").get_json()["captain"] is None
    assert sessions(block) == []


def test_the_node_keeps_only_a_hash_of_the_session_token(app, block):
    client, _copy = session_cookie(app)
    with client.session_transaction() as s:
        token = s["token"]
    (row,) = sessions(block)
    assert row["token_hash"] == hashlib.sha256(token.encode()).hexdigest() and row["captain"] == "ana"
    db = block.files.configs[2].db_file
    for path in (db, db.with_name(db.name + "-wal")):
        if path.exists():
            assert token.encode() not in path.read_bytes()


def test_captain_remove_ends_the_captain_s_sessions_at_once(app, block, tmp_path):
    _client, ana = session_cookie(app, "ana")
    _client, bob = session_cookie(app, "bob")
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{block.files.configs[2].state_dir}"\n')
    result = CliRunner().invoke(cli, ["--config", str(toml), "captain", "remove", "bob"])
    assert result.exit_code == 0, result.output
    assert not logged_in(app, bob) and logged_in(app, ana)
    assert [r["captain"] for r in sessions(block)] == ["ana"]


def test_a_new_password_ends_the_captain_s_sessions_in_the_store(app, block):
    _client, copy = session_cookie(app)
    store = Store(block.files.configs[2].db_file)
    store.add_captain("ana", store.captain("bob")["password_hash"], 0.0, replace=True)
    store.close()
    assert sessions(block) == [] and not logged_in(app, copy)


def test_an_idle_session_ends_and_a_used_one_lasts_twelve_hours_at_most(app, block, clock):
    _client, copy = session_cookie(app)
    clock.now += 1799
    assert logged_in(app, copy)  # used just in time: idle starts again
    clock.now += 1799
    assert logged_in(app, copy)
    clock.now += 1801
    assert not logged_in(app, copy)
    assert sessions(block) == []  # an ended session's row goes when it is met

    _client, copy = session_cookie(app)
    started = clock.now
    while clock.now + 1200 < started + SESSION_LIFETIME:
        clock.now += 1200
        assert logged_in(app, copy)
    clock.now = started + SESSION_LIFETIME + 1
    assert not logged_in(app, copy)


def test_a_clock_that_went_back_ends_the_session(app, clock):
    _client, copy = session_cookie(app)
    clock.now -= 3600
    assert not logged_in(app, copy)


def test_last_use_is_written_at_most_once_a_minute(app, block, clock):
    _client, copy = session_cookie(app)
    (row,) = sessions(block)
    clock.now += 30
    assert logged_in(app, copy)
    assert sessions(block)[0]["last_seen"] == row["last_seen"]
    clock.now += 31
    assert logged_in(app, copy)
    assert sessions(block)[0]["last_seen"] == clock.now


def test_a_login_clears_stale_sessions_and_the_purge_clears_old_ones(app, block, clock):
    session_cookie(app, "ana")
    clock.now += 1801
    session_cookie(app, "bob")  # ana's idle session goes with this login
    assert [r["captain"] for r in sessions(block)] == ["bob"]
    store = Store(block.files.configs[2].db_file)
    try:
        store.purge(clock.now + SESSION_LIFETIME + 1, retention=30 * 86400)
        assert list(store.db.query("SELECT * FROM sessions")) == []
    finally:
        store.close()


# -- the page's secret ---------------------------------------------------------------------------------

def test_the_secret_is_made_once_with_mode_0600_and_read_back(tmp_path):
    path = tmp_path / "web" / "secret_key"
    secret = security.load_secret(path)
    assert len(secret) == 32 and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert security.load_secret(path) == secret
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left


@pytest.mark.parametrize("mode, content, problem", [
    (0o640, bytes(32), "mode 0640 lets others read"), (0o604, bytes(32), "mode 0604 lets others read"),
    (0o600, bytes(31), "31 bytes, not the 32"), (0o600, bytes(64), "64 bytes"), (0o600, b"", "0 bytes")],
    ids=["group", "other", "short", "long", "empty"])
def test_a_secret_file_too_open_or_of_the_wrong_size_is_refused(tmp_path, mode, content, problem):
    path = tmp_path / "secret_key"
    path.write_bytes(content)
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=problem) as caught:
        security.load_secret(path)
    assert str(path) in str(caught.value)


def test_silbato_web_refuses_a_bad_secret_in_one_line(tmp_path):
    state = tmp_path / "web"
    state.mkdir()
    (state / "secret_key").write_bytes(bytes(32))
    (state / "secret_key").chmod(0o644)
    toml = tmp_path / "silbato.toml"
    # an address no interface has: if the secret were ever accepted, serving would fail at once, not block
    toml.write_text(f'[node]\nstate_dir = "{tmp_path / "node"}"\n[web]\nstate_dir = "{state}"\n'
                    'host = "192.0.2.1"\n')
    result = CliRunner().invoke(cli, ["--config", str(toml), "web"])
    assert result.exit_code == 1 and f"{state / 'secret_key'}: mode 0644" in result.output
    assert "Traceback" not in result.output


def device_trusted(app, cookie: str, name: str = "ana") -> bool:
    with app.test_request_context("/captain/login", headers={"Cookie": f"{auth.DEVICE_COOKIE}={cookie}"}):
        return auth.device_trusts(name)


def test_two_starts_of_the_page_accept_each_other_s_cookies_until_the_secret_is_rotated(block, tmp_path):
    state = tmp_path / "web-state"
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{block.files.configs[2].state_dir}"\n[web]\nstate_dir = "{state}"\n')
    secret_file = state / "secret_key"
    first = app_for(block, 3, SECRET_KEY=security.load_secret(secret_file))
    client, session = session_cookie(first)
    device = client.get_cookie(auth.DEVICE_COOKIE, path="/captain").value
    assert device_trusted(first, device)

    restarted = app_for(block, 3, SECRET_KEY=security.load_secret(secret_file))
    assert logged_in(restarted, session) and device_trusted(restarted, device)

    result = CliRunner().invoke(cli, ["--config", str(toml), "web", "rotate-secret"])
    assert result.exit_code == 0, result.output
    assert str(secret_file) in result.output and "restart" in result.output
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600 and secret_file.stat().st_uid == os.getuid()
    rotated = app_for(block, 3, SECRET_KEY=security.load_secret(secret_file))
    assert not logged_in(rotated, session) and not device_trusted(rotated, device)
    assert sorted(p.name for p in state.iterdir()) == ["secret_key"]


def test_rotating_as_root_keeps_the_owner_of_the_secret(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    path = tmp_path / "secret_key"
    security.load_secret(path)
    os.chown(path, 4321, 4321)
    security.rotate_secret(path)
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321)
    fresh = tmp_path / "new" / "secret_key"
    fresh.parent.mkdir()
    os.chown(fresh.parent, 4322, 4322)
    security.rotate_secret(fresh)  # no file yet: the folder's owner, so the page's user can read it
    assert fresh.stat().st_uid == 4322 and len(security.load_secret(fresh)) == 32
