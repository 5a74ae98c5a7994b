"""The neighborhood bridge against a real Mosquitto on loopback (node/bridge, node/bridgequeue.py).

Two blocks, A and B, each a store of its own with a bridge on its own thread; the bridges' clock
is virtual (the trouble's 30 s and the reconnect backoff), the network is real.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gammu import until
from node import config as config_mod
from node.bridge.broker import LocalBroker, mosquitto_path
from node.bridge.service import TROUBLE_AFTER, Bridge
from node.bridge.settings import LinkSettings, link_settings
from node.bridgequeue import FRAME_MAX_AGE, MAX_FRAME_PAYLOAD, MAX_PAYLOAD, BridgeQueue, topic
from node.errors import ConfigError
from node.store import BRIDGE_TABLES, Store

pytestmark = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (.ci/apt-packages)")

HOOD = "eastside"


class Clock:
    """The bridges' clock: moves only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Side:
    """One block: its database, a daemon's view of it (for queueing and reading), and its bridge."""

    def __init__(self, root: Path, name: str, port: int, clock: Clock):
        self.name, self.port, self.clock = name, port, clock
        self.path = root / name / "silbato.db"
        Store(self.path).close()                 # made and migrated, as the daemon does
        self.daemon = Store(self.path)           # the daemon's own connection (queues, consumes)
        self.queue = BridgeQueue(self.daemon)
        self.bridge: Bridge | None = None
        self._stopping: threading.Event | None = None
        self._thread: threading.Thread | None = None
        self._bridge_store: Store | None = None

    def start(self, client_id: str | None = None, **link_options) -> Bridge:
        self._bridge_store = Store(self.path, writes=BRIDGE_TABLES)
        link = LinkSettings(HOOD, "127.0.0.1", self.port, client_id or f"silbato-{HOOD}-{self.name}-1", **link_options)
        self.bridge = Bridge(self._bridge_store, link, clock=self.clock)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self.bridge.run, args=(self._stopping,), daemon=True)
        self._thread.start()
        return self.bridge

    def stop(self) -> None:
        if self._thread is not None:
            self._stopping.set()
            self._thread.join(timeout=10)
            assert not self._thread.is_alive()
            self._bridge_store.close()
            self._thread = None

    def state(self, key: str) -> str | None:
        return self.queue.state(key)

    def payloads(self) -> list[bytes]:
        return [bytes(r["payload"]) for r in self.queue.incoming(100_000)]

    def unsent(self) -> int:
        return self.daemon.db.execute("SELECT count(*) FROM bridge_out WHERE sent_at IS NULL").fetchone()[0]

    def up(self) -> bool:
        return self.state("link") == "up"


@pytest.fixture
def broker(tmp_path):
    with LocalBroker(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def blocks(tmp_path, broker):
    clock = Clock()
    sides = [Side(tmp_path, name, broker.port, clock) for name in ("A", "B")]
    yield sides
    for side in sides:
        side.stop()
        side.daemon.close()


def connected(*sides: Side) -> None:
    until(lambda: all(s.up() for s in sides), what="the bridges connected")


def test_a_row_in_one_blocks_queue_reaches_the_other_blocks(blocks):
    a, b = blocks
    a.start(), b.start()
    connected(a, b)
    a.queue.publish(topic(HOOD, "A", "frames"), b"\x01frame", a.clock())
    until(lambda: b.payloads() == [b"\x01frame"], what="B received A's frame")
    assert b.queue.incoming()[0]["topic"] == "silbato/eastside/A/frames"
    until(lambda: a.unsent() == 0, what="A's row marked sent on the broker's acknowledgement")
    assert a.payloads() == [], "a bridge is not handed back what it published (no_local)"


def test_a_retained_roster_is_seen_by_a_late_subscriber(tmp_path, blocks):
    a, b = blocks
    a.start()
    a.queue.publish(topic(HOOD, "A"), b'{"block": "A", "v": 1}', a.clock(), retain=True)
    a.queue.publish(topic(HOOD, "A"), b'{"block": "A", "v": 2}', a.clock(), retain=True)  # replaces v1 unsent
    until(lambda: a.unsent() == 0, what="A's roster acknowledged")
    b.start()  # never connected before: a new session
    until(lambda: b.payloads() == [b'{"block": "A", "v": 2}'], what="B got A's retained roster")


def test_a_broker_outage_loses_nothing_duplicates_nothing_and_shows_the_trouble(blocks, broker):
    a, b = blocks
    a.start(), b.start()
    connected(a, b)
    before = [f"before {i}".encode() for i in range(20)]
    for p in before:
        a.queue.publish(topic(HOOD, "A", "frames"), p, a.clock())
    until(lambda: len(b.payloads()) == 20, what="the first rows delivered")
    # ...and acknowledged to A: a row in flight when the broker stops is sent again after it
    # returns (QoS 1 is at least once: the daemon drops such a replay), which is not this test.
    until(lambda: a.unsent() == 0, what="the first rows acknowledged")
    broker.stop()
    until(lambda: not a.up() and not b.up(), what="both bridges saw the link go down")
    during = [f"during {i}".encode() for i in range(30)]
    for p in during:
        a.queue.publish(topic(HOOD, "A", "frames"), p, a.clock())
    assert a.daemon.troubles() == {}, "no trouble before TROUBLE_AFTER seconds"
    a.clock.advance(TROUBLE_AFTER + 1)
    until(lambda: "neighborhood" in a.daemon.troubles(), what="A shows the trouble")
    down = a.daemon.troubles()["neighborhood"]
    since = time.strftime("%H:%M", time.localtime(float(a.state("link_since"))))
    assert down.startswith(f"neighborhood link down since {since} (")
    assert a.unsent() == 30
    b.bridge.hold_down()  # B comes back after A has delivered: the broker must have kept B's session
    broker.start()  # same port, same persistence (as 'persistence true' on a real broker)
    a.clock.advance(10)  # past any backoff
    until(lambda: a.up() and a.unsent() == 0, what="A back, its queued rows acknowledged")
    assert not b.up() and len(b.payloads()) == 20
    b.bridge.release()
    # Wait for every row, not for a count: redelivered duplicates (below) can make up a count of 50
    # while the last rows are still on their way (CI once read 50 with 'during 23'-'29' yet to come).
    wanted = set(before + during)
    until(lambda: b.up() and wanted <= set(b.payloads()), what="B back, every row kept for it delivered")
    # Nothing lost, and in order. QoS 1 is at least once: a message whose acknowledgement the
    # broker's restart lost may come twice (rarely: seen under load in CI); the daemon drops such
    # a replay (tests/test_bench_neighborhood.py checks no NEARBY is shown twice).
    # Under load (CI) a reconnect can time out after messages were stored but before their
    # acknowledgements left: the broker sends them again, up to a few dozen. At least once is
    # the bridge's promise; exactly once is the daemon's (its replay window, P14's test).
    got = b.payloads()
    assert set(got) == wanted, "nothing lost, nothing foreign"
    firsts = list(dict.fromkeys(got))
    assert firsts[20:] == during, "in order"
    until(lambda: a.daemon.troubles() == {} and b.daemon.troubles() == {}, what="the trouble cleared by itself")


def test_a_bridge_that_never_connected_shows_the_trouble(tmp_path, broker):
    clock = Clock()
    side = Side(tmp_path, "C", broker.port + 0, clock)
    side.port = LocalBroker(tmp_path / "none").port  # nothing listens there
    try:
        side.start()
        until(lambda: side.state("link") == "down", what="the link recorded down")
        assert side.daemon.troubles() == {}
        clock.advance(TROUBLE_AFTER + 1)
        until(lambda: "neighborhood" in side.daemon.troubles(), what="the trouble")
        assert "(connection refused)" in side.daemon.troubles()["neighborhood"]
    finally:
        side.stop()
        side.daemon.close()


def test_an_oversized_message_is_dropped_and_counted(blocks):
    """16 KiB at most on a roster topic; a frame fits one Meshtastic packet, so 240 bytes under frames."""
    a, b = blocks
    a.start(), b.start()
    connected(a, b)
    a.queue.publish(topic(HOOD, "A"), b"x" * (MAX_PAYLOAD + 1), a.clock())
    a.queue.publish(topic(HOOD, "A", "frames"), b"f" * (MAX_FRAME_PAYLOAD + 1), a.clock())
    a.queue.publish(topic(HOOD, "A", "frames"), b"after", a.clock())
    until(lambda: b.payloads() == [b"after"], what="the next message through")
    assert b.state("dropped_oversized") == "2"
    a.queue.publish(topic(HOOD, "A"), b"y" * MAX_PAYLOAD, a.clock())                   # the limits pass
    a.queue.publish(topic(HOOD, "A", "frames"), b"z" * MAX_FRAME_PAYLOAD, a.clock())
    until(lambda: len(b.payloads()) == 3, what="messages of exactly the limits")


def test_one_blocks_backlog_is_bounded_and_old_frames_are_never_published(blocks, monkeypatch):
    """A member block flooding its topic fills only its own share of bridge_in; a frame row older
    than FRAME_MAX_AGE (a long outage) is marked done unpublished, not shown next door as news."""
    from node.bridge import service

    monkeypatch.setattr(service, "MAX_PENDING_PER_BLOCK", 5)
    a, b = blocks
    a.queue.publish(topic(HOOD, "A", "frames"), b"old news", a.clock() - FRAME_MAX_AGE - 1)
    for i in range(8):
        a.queue.publish(topic(HOOD, "A", "frames"), f"flood {i}".encode(), a.clock())
    a.start(), b.start()
    connected(a, b)
    until(lambda: a.unsent() == 0, what="A's rows done")
    until(lambda: b.state("dropped_backlog") == "3", what="three dropped past A's share")
    assert b.payloads() == [f"flood {i}".encode() for i in range(5)]
    assert a.state("expired") == "1"


def test_a_bridge_restarted_mid_queue_loses_nothing(blocks):
    a, b = blocks
    b.start()
    connected(b)
    rows = [f"row {i}".encode() for i in range(300)]
    for p in rows:
        a.queue.publish(topic(HOOD, "A", "frames"), p, a.clock())
    a.start()
    until(lambda: a.unsent() < 300, what="some rows acknowledged")
    a.stop()
    unacknowledged = a.unsent()
    a.start()
    until(lambda: a.unsent() == 0, what="the rest acknowledged after the restart")
    until(lambda: set(b.payloads()) == set(rows), what="every row delivered")
    got = b.payloads()
    assert len(got) - len(rows) <= unacknowledged, "only rows not acknowledged before the restart may come twice"


# -- settings ----------------------------------------------------------------------------------------

def test_the_settings_name_the_bad_key(tmp_path):
    good = {"neighborhood.name": HOOD, "bridge.broker": "broker.example:8883"}
    assert link_settings(config_mod.from_mapping(good)).port == 8883
    with pytest.raises(ConfigError, match="bridge.broker: empty"):
        link_settings(config_mod.from_mapping({"neighborhood.name": HOOD}))
    with pytest.raises(ConfigError, match="neighborhood.name: empty"):
        link_settings(config_mod.from_mapping({"bridge.broker": "b:1883"}))
    with pytest.raises(ConfigError, match="neighborhood.name: letters"):
        link_settings(config_mod.from_mapping({**good, "neighborhood.name": "east/#"}))
    with pytest.raises(ConfigError, match="bridge.broker: expected host:port"):
        config_mod.from_mapping({**good, "bridge.broker": "broker.example"})
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="bridge.password_file: .*mode 0644, expected 0600"):
        link_settings(config_mod.from_mapping({**good, "bridge.username": "A", "bridge.password_file": str(secret)}))
    secret.chmod(0o600)
    link = link_settings(config_mod.from_mapping({**good, "bridge.username": "A", "bridge.password_file": str(secret)}))
    assert link.password == "s3cret" and "s3cret" not in repr(link)
    with pytest.raises(ConfigError, match="bridge.ca_file: .*no such file"):
        link_settings(config_mod.from_mapping({**good, "bridge.tls": True, "bridge.ca_file": str(tmp_path / "no")}))


def test_the_client_id_comes_from_the_node_once_the_daemon_named_it(tmp_path):
    with Store(tmp_path / "db") as store:
        cfg = config_mod.from_mapping({"neighborhood.name": HOOD, "bridge.broker": "b:1883"})
        assert link_settings(cfg, store).client_id.startswith(f"silbato-{HOOD}-")
        store.set_meta("block", "A")
        store.set_meta("node_id", "3")
        assert link_settings(cfg, store).client_id == f"silbato-{HOOD}-A-3"
        fixed = config_mod.from_mapping({"neighborhood.name": HOOD, "bridge.broker": "b:1883",
                                         "bridge.client_id": "mine"})
        assert link_settings(fixed, store).client_id == "mine"


def test_the_command_refuses_a_missing_broker_in_one_line(tmp_path):
    conf = tmp_path / "silbato.toml"
    conf.write_text(f'[node]\nstate_dir = "{tmp_path}"\n[neighborhood]\nname = "{HOOD}"\n[bridge]\nenabled = true\n')
    Store(tmp_path / "db" / "silbato.db").close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    done = subprocess.run([sys.executable, "-m", "node.cli", "--config", str(conf), "bridge"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "bridge.broker: empty" in done.stderr and "Traceback" not in done.stderr


def test_the_trouble_is_logged_when_it_shows_and_when_it_clears(tmp_path, broker, caplog):
    caplog.set_level(logging.INFO, logger="node.bridge")
    clock = Clock()
    side = Side(tmp_path, "D", broker.port, clock)
    try:
        side.start()
        until(side.up, what="up")
        broker.stop()
        until(lambda: not side.up(), what="down")
        clock.advance(TROUBLE_AFTER + 1)
        until(lambda: side.daemon.troubles(), what="the trouble")
        broker.start()
        clock.advance(10)
        until(side.up, what="up again")
        until(lambda: not side.daemon.troubles(), what="cleared")
    finally:
        side.stop()
        side.daemon.close()
    assert any("neighborhood link down since" in r.getMessage() for r in caplog.records)
    assert any("trouble cleared" in r.getMessage() for r in caplog.records)


# -- the broker's example configuration (docs/neighborhood.md) ---------------------------------------

DOCS = Path(__file__).parent.parent / "docs" / "neighborhood.md"


def documented(first_line: str) -> str:
    """The ```conf block of docs/neighborhood.md that begins with ``first_line``."""
    text = DOCS.read_text(encoding="utf-8")
    for block in text.split("```conf\n")[1:]:
        body = block.split("```", 1)[0]
        if body.startswith(first_line):
            return body
    raise AssertionError(f"docs/neighborhood.md has no ```conf block starting {first_line!r}")


def make_certificates(folder: Path) -> dict[str, Path]:
    """A certificate authority and the broker's certificate for 127.0.0.1 (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(text):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("neighborhood CA")).issuer_name(name("neighborhood CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(name("broker")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False).sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ca.crt": ca.public_bytes(serialization.Encoding.PEM),
             "broker.crt": cert.public_bytes(serialization.Encoding.PEM),
             "broker.key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption())}
    for file, data in files.items():
        (folder / file).write_bytes(data)
    return {file: folder / file for file in files}


@pytest.fixture
def acl_broker(tmp_path):
    """Mosquitto with the documented silbato.conf and silbato.acl; users A, B (passwords 'pw-A', 'pw-B')."""
    etc = tmp_path / "etc"
    certs = make_certificates(etc / "certs")
    passwd = etc / "silbato.passwd"
    for i, user in enumerate(("A", "B")):
        subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(passwd), user, f"pw-{user}"],
                       check=True, capture_output=True, timeout=30)
    acl = documented("# silbato.acl")
    (etc / "silbato.acl").write_text(acl)
    conf = documented("# silbato.conf").replace("listener 8883\n", "")  # LocalBroker's listener stands in
    conf = conf.replace("/etc/mosquitto/certs", str(etc / "certs")).replace("/etc/mosquitto", str(etc))
    assert "acl_file " + str(etc / "silbato.acl") in conf and "allow_anonymous false" in conf
    with LocalBroker(tmp_path / "broker", extra=conf) as running:
        running.ca_file = str(certs["ca.crt"])
        yield running


def secret_file(folder: Path, password: str) -> Path:
    path = folder / "password"
    path.write_text(password + "\n")
    path.chmod(0o600)
    return path


def test_the_documented_acl_lets_a_block_publish_only_under_its_own_topic(tmp_path, acl_broker):
    clock = Clock()
    a, b = (Side(tmp_path, name, acl_broker.port, clock) for name in ("A", "B"))
    try:
        for side in (a, b):  # through link_settings, as 'silbato bridge' reads them
            cfg = config_mod.from_mapping({
                "neighborhood.name": HOOD, "bridge.broker": acl_broker.address, "bridge.tls": True,
                "bridge.ca_file": acl_broker.ca_file, "bridge.username": side.name,
                "bridge.password_file": str(secret_file(tmp_path / side.name, f"pw-{side.name}"))})
            link = link_settings(cfg)
            side.start(client_id=link.client_id + side.name, tls=True, ca_file=link.ca_file, username=link.username,
                       password=link.password)
        connected(a, b)
        a.queue.publish(topic(HOOD, "B", "frames"), b"A speaking for B", clock())
        a.queue.publish(topic(HOOD, "A", "frames"), b"A speaking for A", clock())
        until(lambda: b.payloads() == [b"A speaking for A"], what="A's own message through")
        until(lambda: a.unsent() == 0, what="both acknowledged")
        assert a.state("refused") == "1", "the broker refused the forged one (MQTT 5: 'Not authorized')"
        assert b.payloads() == [b"A speaking for A"], "B never saw A's message under B's topic"
    finally:
        a.stop(), b.stop()
        a.daemon.close(), b.daemon.close()


def test_the_documented_broker_refuses_a_wrong_password(tmp_path, acl_broker):
    clock = Clock()
    side = Side(tmp_path, "A", acl_broker.port, clock)
    try:
        side.start(tls=True, ca_file=acl_broker.ca_file, username="A", password="wrong")
        until(lambda: side.state("link") == "down", what="a state")
        clock.advance(TROUBLE_AFTER + 1)
        until(lambda: "refused" in side.daemon.troubles().get("neighborhood", ""), what="refused")
        assert "Not authorized" in side.daemon.troubles()["neighborhood"]
    finally:
        side.stop()
        side.daemon.close()


def test_sent_rows_are_purged_after_the_retention_and_unsent_ones_never(tmp_path):
    clock = Clock()
    side = Side(tmp_path, "E", LocalBroker(tmp_path / "none").port, clock)  # nothing listens: no network needed
    try:
        old = side.queue.publish(topic(HOOD, "E", "frames"), b"old", clock())
        unsent = side.queue.publish(topic(HOOD, "E", "frames"), b"unsent", clock())
        side.queue.mark_sent([old], clock())
        clock.advance(72 * 3600 + 1)
        fresh = side.queue.publish(topic(HOOD, "E", "frames"), b"fresh", clock())
        side.queue.mark_sent([fresh], clock())
        bridge = side.start()
        until(lambda: side.state("link") == "down", what="a first step")
        ids = [r[0] for r in side.daemon.db.execute("SELECT id FROM bridge_out ORDER BY id")]
        assert ids == [unsent, fresh] and bridge.retention == 72 * 3600
    finally:
        side.stop()
        side.daemon.close()
