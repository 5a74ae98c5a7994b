"""The page cannot act as the node: its own user, no key, only captains' actions, no wipe.

Issue 13, finding 3: with both services as one user, code in the page could read
``node.key`` and make the daemon wipe the node with one ``requests`` row. Now the page
runs as ``silbato-web`` (group ``silbato``) and may write only ``<state_dir>/db``
(``node/statedir.py``); the daemon takes from the ``requests`` table only what a captain
could ask; ``silbato wipe`` asks through a file in the state directory.
"""

from __future__ import annotations

import json
import os
import sqlite3
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from node import statedir
from node.daemon.runtime import WIPED_EXIT
from node.daemon.wipe import WIPE_WITHIN, request_file
from node.hardware.devices import mock_factory
from node.protocol import supervision, wire
from node.protocol.alerts import Kind
from node.protocol.keys import SigningKey, load_roster
from node.radio.link import NullLink
from node.radio.sim_air import SimAir
from node.radio.sim_radio import SimMeshtasticRadio
from node.sim import provision
from node.daemon.node import Node
from node.store import WEB_TABLES, Store

DAEMON_UID, WEB_UID, GROUP = 61001, 61002, 61000   # no such users: numbers are enough for the kernel


def _request(store: Store, action: str, captain: str, now: float, **fields) -> int:
    return store.add_request(action, captain=captain, now=now, **fields)


@pytest.fixture
def node(tmp_path):
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    node = Node(cfg, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    yield node
    if not node.wiped:
        node.stop()


def test_the_daemon_takes_only_a_captains_actions_from_the_requests_table(node):
    now = node.clock()
    with Store(node.config.db_file, writes=WEB_TABLES) as web:   # exactly what the page's writer may do
        forged = _request(web, "wipe", "silbato wipe", now)      # the row that used to wipe the node
        odd = _request(web, "revoke", "ana", now)
        raised = _request(web, "raise", "ana", now, location=node.location)
    node.process_requests()
    assert not node.wiped and node.config.key_file.exists() and node.config.db_file.exists()
    rows = {r["id"]: r for r in node.store.requests()}
    assert rows[forged]["status"] == "refused" and rows[forged]["reason"] == "not a captain's action"
    assert rows[odd]["status"] == "refused"
    assert rows[raised]["status"] == "signed" and node.store.active_alerts()


class RecordingLink(NullLink):
    """A link that takes every frame at once and keeps it (what went on air)."""

    def __init__(self):
        self.sent: list[bytes] = []

    def send(self, frame: bytes, hop_limit: int | None = None) -> None:
        self.sent.append(frame)

    @property
    def troubles(self) -> dict[str, str]:
        return {}


def _as_the_page(cfg, sql: str, params=()) -> None:
    """What code in the page's process can do: any SQL on the database file, past the authorizer."""
    conn = sqlite3.connect(cfg.db_file, timeout=5)
    with conn:
        conn.execute(sql, params)
    conn.close()


def test_the_outbox_sends_only_frames_this_node_signed(tmp_path):
    files = provision(tmp_path / "block", 2)
    cfg, other = files.configs
    link = RecordingLink()
    node = Node(cfg, link=link, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    try:
        neighbour = SigningKey.load(other.key_file)   # a neighbour's valid frame, replayed by the page
        foreign = wire.encode(wire.HeartbeatFrame(2, 77, 0, 1, 0, 0, 0, b"", 0), neighbour, load_roster(cfg).block)
        for junk in (foreign, b"\x01" * 82):
            _as_the_page(cfg, "INSERT INTO outbox (frame, created_at) VALUES (?, ?)", [junk, node.clock()])
        node.report(Kind.RAID)
        node.tick()
        origins = [wire.decode(frame, node.roster).origin for frame in link.sent]
        assert origins and set(origins) == {node.id}, "only this node's own frames go on air"
        assert node.counts["foreign-outbox"] == 2 and node.store.pending() == []
    finally:
        node.stop()


def test_a_counter_set_back_in_the_database_is_never_used_again(tmp_path):
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    node = Node(cfg, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    try:
        first = node.signer.reserve()
        _as_the_page(cfg, "UPDATE meta SET value = '0' WHERE key = 'counter'")
        assert node.signer.reserve() == first + 1
    finally:
        node.stop()
    _as_the_page(cfg, "UPDATE meta SET value = '0' WHERE key = 'counter'")
    again = Node(cfg, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    try:   # a restart reads the floor the daemon keeps in its own folder
        assert again.signer.reserve() > first + 1
    finally:
        again.stop()


def test_the_database_folder_is_shared_and_the_state_directory_is_not(node):
    cfg = node.config
    assert stat.S_IMODE(cfg.db_dir.stat().st_mode) == statedir.DB_DIR_MODE
    assert stat.S_IMODE(cfg.db_file.stat().st_mode) == statedir.DB_MODE
    wal = cfg.db_file.with_name(cfg.db_file.name + "-wal")
    assert wal.exists() and stat.S_IMODE(wal.stat().st_mode) == statedir.DB_MODE, "SQLite copies the mode"
    assert stat.S_IMODE(cfg.key_file.stat().st_mode) == 0o600


def test_a_link_planted_in_the_database_folder_is_never_followed(node, caplog):
    cfg = node.config
    shm = cfg.db_file.with_name("silbato.db-shm")
    node.stop()
    shm.unlink(missing_ok=True)
    shm.symlink_to(cfg.key_file)   # the page's user may write db/: it could do this
    os.chmod(cfg.key_file, 0o600)
    statedir.share_db(cfg)
    assert stat.S_IMODE(cfg.key_file.stat().st_mode) == 0o600, "share_db must not chmod through a link"
    assert "silbato.db-shm left alone" in caplog.text


def test_a_database_from_before_the_db_folder_is_moved_with_its_wal(tmp_path):
    files = provision(tmp_path / "block", 1)
    cfg = files.configs[0]
    legacy = cfg.state_dir / "silbato.db"
    with Store(legacy) as old:
        old.set_meta("kept", "yes")
        assert legacy.with_name("silbato.db-wal").exists()   # committed, maybe not yet checkpointed
        statedir.prepare_db_dir(cfg, adopt=False)             # install and update leave it to the daemon
        assert legacy.exists()
        statedir.prepare_db_dir(cfg)
    assert not legacy.exists() and cfg.db_file.exists()
    with Store(cfg.db_file) as moved:
        assert moved.meta("kept") == "yes"
    Store(legacy).close()   # an older release, started again, made a new one: both exist now
    assert not statedir.adopt_legacy_db(cfg) and legacy.exists()


@pytest.fixture
def open_tmp():
    """A folder others may enter (pytest's own tmp_path is under a 0700 folder)."""
    base = Path(tempfile.mkdtemp(prefix="silbato-test-", dir="/tmp"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def test_readable_by_follows_the_folders_and_the_bits(open_tmp, tmp_path):
    folder = open_tmp / "state"
    folder.mkdir()
    secret = folder / "node.key"
    secret.write_text("x")
    os.chmod(folder, 0o750)
    os.chmod(secret, 0o640)
    me, group = os.getuid(), os.getgid()
    assert statedir.readable_by(secret, me, {group})
    assert statedir.readable_by(secret, me + 1, {group}), "the group may read a 0640 file"
    os.chmod(secret, 0o600)
    assert not statedir.readable_by(secret, me + 1, {group})
    os.chmod(secret, 0o644)
    assert not statedir.readable_by(secret, me + 1, {group + 1}), "0750 folder: others cannot get in"
    inside = tmp_path / "node.key"   # under pytest's 0700 folder
    inside.write_text("x")
    os.chmod(inside, 0o644)
    assert not statedir.readable_by(inside, me + 1, {group + 1})


# -- the real thing: other uids, as the kernel sees them -------------------------------------------

PAGE_TRIES = r"""
import json, os, sqlite3, sys
state, db, key, channel = sys.argv[1:5]
out = {"uid": os.getuid()}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except PermissionError:
        out[name] = "denied"
    except Exception as exc:
        out[name] = f"{type(exc).__name__}: {exc}"
attempt("read node key", lambda: open(key, "rb").read())
attempt("read channel key", lambda: open(channel, "rb").read())
attempt("ask for a wipe", lambda: open(os.path.join(state, "wipe-requested"), "w").close())
attempt("replace the roster", lambda: open(os.path.join(state, "roster.json.new"), "w").close())
def write_requests():
    conn = sqlite3.connect(db, timeout=5)
    with conn:
        conn.execute("INSERT INTO requests (action, captain, created_at, status, reason, alert_id) "
                     "VALUES ('wipe', 'silbato wipe', ?, 'pending', '', '')", [float(sys.argv[5])])
        conn.execute("INSERT INTO requests (action, captain, created_at, status, reason, alert_id, location) "
                     "VALUES ('raise', 'ana', ?, 'pending', '', '', ?)", [float(sys.argv[5]), int(sys.argv[6])])
    conn.close()
attempt("write requests", write_requests)
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as two other users (CI runs as root)")
def test_as_the_page_user_the_keys_are_unreadable_and_only_the_database_is_writable(open_tmp):
    system_python = shutil.which("python3", path="/usr/bin:/bin")
    assert system_python, "the page's side runs the system python3"
    base = open_tmp
    files = provision(base / "block", 2)
    cfg = files.configs[0]
    channel = base / "channel.key"
    channel.write_bytes(os.urandom(32))
    os.chmod(channel, 0o600)   # root's, as 'silbato radio keygen' leaves it
    os.chmod(base / "block", 0o755)
    # as 'silbato install' leaves it: the daemon's user owns its state directory, group silbato
    for path in [cfg.state_dir, *cfg.state_dir.iterdir()]:
        os.chown(path, DAEMON_UID, GROUP)
    os.chmod(cfg.state_dir, 0o750)
    old_umask = os.umask(0o077)   # the daemon's UMask=
    try:
        node = Node(cfg, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    finally:
        os.umask(old_umask)
    for made_by_root in (cfg.db_dir, cfg.db_file, cfg.db_file.with_name("silbato.db-wal")):
        st = made_by_root.stat()   # root made them (as 'silbato captain add' might): the daemon's now
        assert (st.st_uid, st.st_gid) == (DAEMON_UID, GROUP), made_by_root
    try:
        result = subprocess.run(
            [system_python, "-I", "-S", "-c", PAGE_TRIES, str(cfg.state_dir), str(cfg.db_file),
             str(cfg.key_file), str(channel), str(node.clock()), str(node.location)],
            user=WEB_UID, group=GROUP, extra_groups=[], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        tried = json.loads(result.stdout)
        assert tried == {"uid": WEB_UID, "read node key": "denied", "read channel key": "denied",
                         "ask for a wipe": "denied", "replace the roster": "denied",
                         "write requests": "allowed"}, tried
        node.process_requests()
        assert not node.wiped and cfg.key_file.exists()
        actions = {r["action"]: r["status"] for r in node.store.requests()}
        assert actions == {"wipe": "refused", "raise": "signed"}
    finally:
        node.stop()


# -- silbato wipe, with the daemon running on a real (pty) radio -------------------------------------

def _heartbeats(radio: SimMeshtasticRadio, roster) -> list[wire.HeartbeatFrame]:
    frames = []
    for packet in list(radio.sent):
        if packet.decoded.portnum != 256:
            continue
        try:
            frame = wire.decode(bytes(packet.decoded.payload), roster)
        except Exception:
            continue
        if isinstance(frame, wire.HeartbeatFrame):
            frames.append(frame)
    return frames


def test_silbato_wipe_reaches_a_daemon_on_a_serial_radio_which_tells_the_block(tmp_path):
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    radio = SimMeshtasticRadio(SimAir(2), 1, tmp_path / "by-id" / "usb-radio")
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                    f'[radio]\nport = "{radio.path}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    daemon = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "run"],
                              stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    lines: list[str] = []
    connected = threading.Event()

    def read() -> None:
        for line in daemon.stderr:
            lines.append(line)
            if "radio connected" in line or "connected to" in line:
                connected.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    roster = load_roster(cfg)
    try:
        assert connected.wait(60), "".join(lines)
        wiped = subprocess.run([sys.executable, "-m", "node.cli", "--config", str(toml), "wipe", "--yes"],
                               capture_output=True, text=True, env=env, timeout=60)
        assert wiped.returncode == 0, wiped.stderr
        assert daemon.wait(timeout=60) == WIPED_EXIT, "".join(lines)
        reader.join(10)
        took = float(wiped.stdout.split("wiped in ")[1].split(" s")[0])
        print(f"\nsilbato wipe with the daemon on a serial radio: {took:.1f} s (promise {WIPE_WITHIN:.0f} s)")
        assert any("WIPE (silbato wipe)" in line for line in lines), "".join(lines)
        assert not cfg.key_file.exists() and not cfg.db_file.exists() and not request_file(cfg).exists()
        last = _heartbeats(radio, roster)
        assert last and last[-1].troubles & supervision.trouble_mask(["wiped"]), \
            "the daemon's last heartbeat, carrying 'wiped', reached the radio before the files went"
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(10)
        radio.close()


def _locks_held_on(path: Path) -> int:
    """POSIX locks this process holds on ``path`` now (/proc/locks names files by device and inode)."""
    inode = path.stat().st_ino
    return sum(1 for line in Path("/proc/locks").read_text().splitlines()
               if line.split()[4] == str(os.getpid()) and line.split()[5].endswith(f":{inode}"))


def test_opening_the_store_never_drops_the_locks_sqlite_holds(tmp_path):
    """Closing another descriptor of a database file drops this process's POSIX locks on it, and
    another process (the page) would then reset the shared memory under the daemon: SIGBUS."""
    cfg = provision(tmp_path / "block", 1).configs[0]
    for attempt in ("new database", "existing database"):
        store = statedir.open_store(cfg)
        try:
            store.set_meta("probe", attempt)   # WAL and shared memory in use
            shm = cfg.db_file.with_name("silbato.db-shm")
            assert _locks_held_on(shm) >= 1, f"{attempt}: SQLite's lock on {shm.name} is gone"
        finally:
            store.close()



# -- gammu-smsd's spool: the gateway and gammu-smsd, nobody else -------------------------------------

GATEWAY_UID, SMSD_UID, SMSD_GID = 61003, 61004, 61005

SPOOL_TRIES = r"""
import json, os, sys
spool, mode = sys.argv[1:3]
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = "allowed"
    except PermissionError:
        out[name] = "denied"
if mode == "gammu":      # gammu-smsd: receives a text, then sends the gateway's and moves it
    attempt("write inbox", lambda: open(os.path.join(spool, "inbox", "IN1_00_+1555_00.txt"), "w").write("hi"))
    attempt("move outbox to sent", lambda: os.rename(os.path.join(spool, "outbox", "OUTA1.txt"),
                                                     os.path.join(spool, "sent", "OUTA1.txt")))
elif mode == "gateway":  # the gateway: reads and deletes what gammu-smsd wrote, writes the outbox
    attempt("read inbox", lambda: open(os.path.join(spool, "inbox", "IN1_00_+1555_00.txt")).read())
    attempt("delete inbox", lambda: os.unlink(os.path.join(spool, "inbox", "IN1_00_+1555_00.txt")))
    attempt("write outbox", lambda: open(os.path.join(spool, "outbox", "OUTA2.txt"), "w").write("x"))
else:                    # the page, or any other user
    attempt("list inbox", lambda: os.listdir(os.path.join(spool, "inbox")))
    attempt("list spool", lambda: os.listdir(spool))
print(json.dumps(out))
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to act as three other users (CI runs as root)")
def test_the_sms_spool_is_the_gateways_and_gammu_smsds_and_nobody_elses(open_tmp):
    from node import config as config_mod
    from node.appliance.host import DirectoryHost, Layout
    from node.appliance.install import sms_spool

    class Numbers(DirectoryHost):
        """chown by numbers: these users exist only for the kernel."""

        def group_exists(self, name):
            return True

        def chown(self, path, user, group=None):
            os.chown(path, {"silbato-gateway": GATEWAY_UID}[user], {"gammu": SMSD_GID}[group])

    toml = open_tmp / "silbato.toml"
    toml.write_text(f'[sms]\nspool = "{open_tmp / "spool"}"\n')
    spool = open_tmp / "spool"
    sms_spool(config_mod.load(toml), Numbers(Layout(open_tmp)), lambda _: None)
    old = os.umask(0o007)   # the gateway's UMask=
    try:
        (spool / "outbox" / "OUTA1.txt").write_text("a text")
        os.chown(spool / "outbox" / "OUTA1.txt", GATEWAY_UID, SMSD_GID)
    finally:
        os.umask(old)
    system_python = shutil.which("python3", path="/usr/bin:/bin")

    def tries(mode, uid, gid, groups):
        result = subprocess.run([system_python, "-I", "-S", "-c", SPOOL_TRIES, str(spool), mode], user=uid,
                                group=gid, extra_groups=groups, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert tries("gammu", SMSD_UID, SMSD_GID, []) == {"write inbox": "allowed", "move outbox to sent": "allowed"}
    assert (spool / "inbox" / "IN1_00_+1555_00.txt").stat().st_gid == SMSD_GID, "set-group-ID folder"
    assert tries("gateway", GATEWAY_UID, GROUP, [SMSD_GID]) == {
        "read inbox": "allowed", "delete inbox": "allowed", "write outbox": "allowed"}
    assert tries("other", WEB_UID, GROUP, []) == {"list inbox": "denied", "list spool": "denied"}
    assert tries("other", DAEMON_UID, GROUP, []) == {"list inbox": "denied", "list spool": "denied"}
