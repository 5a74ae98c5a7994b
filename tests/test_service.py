"""The daemon as a systemd service: READY=1 once it is up, WATCHDOG=1 only while healthy, journald lines.

A test plays systemd: it binds the datagram socket named by NOTIFY_SOCKET and reads
what the daemon sends.
"""

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from node.daemon.runtime import health_problems, run
from node.radio.link import NullLink
from node.service import JournalFormatter, Notifier, under_journald
from node.sim import provision


class Systemd:
    """The receiving end of NOTIFY_SOCKET."""

    def __init__(self, path):
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)

    def next(self, timeout=10.0) -> str:
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def until(self, predicate, timeout=10.0) -> list[str]:
        """Messages up to and including the first one ``predicate`` accepts."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"not seen within {timeout} s; got {seen}"
            seen.append(self.next(left))
            if predicate(seen[-1]):
                return seen

    def during(self, seconds) -> list[str]:
        """Every message in the next ``seconds`` (to show something did not come)."""
        deadline = time.monotonic() + seconds
        seen = []
        while (left := deadline - time.monotonic()) > 0:
            try:
                seen.append(self.next(left))
            except TimeoutError:
                break
        return seen

    def close(self):
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = Systemd(tmp_path / "notify")
    yield s
    s.close()


class Link(NullLink):
    """No radio, and a reader thread that a test can make die."""

    dead = False

    @property
    def alive(self):
        return not self.dead


def test_ready_comes_after_start_up_and_the_watchdog_only_while_healthy(tmp_path, systemd):
    cfg = provision(tmp_path / "block", 2).configs[0]
    link = Link()
    stopping = threading.Event()
    notifier = Notifier(systemd.path, watchdog_usec=200_000)  # a ping is due every 0.1 s
    thread = threading.Thread(target=run, args=(cfg,), kwargs=dict(
        stopping=stopping, link=link, notifier=notifier, pin_factory=MockFactory()))
    thread.start()
    try:
        first = systemd.next()
        assert first.startswith("READY=1\nSTATUS=node 1: store, lifecycle and hardware up")
        assert cfg.db_file.exists(), "READY=1 only once the store is open"
        systemd.until(lambda m: m == "WATCHDOG=1")

        link.dead = True
        systemd.until(lambda m: m == "STATUS=unhealthy: the radio reader has stopped")
        quiet = systemd.during(1.0)  # five loops of the daemon, each with a ping due
        assert "WATCHDOG=1" not in quiet, quiet

        link.dead = False
        systemd.until(lambda m: m == "WATCHDOG=1")
    finally:
        stopping.set()
        thread.join(30)
    assert systemd.until(lambda m: m == "STOPPING=1")


def test_health_names_a_broken_database(tmp_path):
    from node.daemon.node import Node

    cfg = provision(tmp_path / "block", 2).configs[0]
    node = Node(cfg, pin_factory=MockFactory()).start()
    try:
        assert health_problems(node) == []
        node.store.db.conn.close()
        assert any("the database does not answer" in p for p in health_problems(node))
    finally:
        node.stop()  # closing a closed connection again is harmless


def test_without_systemd_nothing_is_sent(tmp_path):
    notifier = Notifier.from_environment({})
    assert not notifier.enabled and not notifier.send("READY=1") and not notifier.watchdog_due()


def test_the_environment_names_the_socket_and_the_watchdog(tmp_path, systemd):
    env = {"NOTIFY_SOCKET": systemd.path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environment(env)
    assert notifier.watchdog_interval == 15.0 and notifier.watchdog_due()
    notifier.ping()
    assert systemd.next() == "WATCHDOG=1" and not notifier.watchdog_due()
    other = Notifier.from_environment({**env, "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None, "the watchdog belongs to another process"


def test_an_abstract_socket_name_works():
    name = f"@silbato-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name[1:])
    try:
        assert Notifier(name).send("READY=1")
        receiver.settimeout(5)
        assert receiver.recv(100) == b"READY=1"
    finally:
        receiver.close()


def test_journal_lines_carry_the_priority_and_fold_a_traceback_into_one_line():
    formatter = JournalFormatter()
    record = logging.LogRecord("node.daemon", logging.WARNING, __file__, 1, "frame refused: %s", ("replayed",),
                               None)
    assert formatter.format(record) == "<4>node.daemon: frame refused: replayed"
    try:
        raise ValueError("bad\nframe")
    except ValueError:
        record = logging.LogRecord("node.daemon", logging.ERROR, __file__, 1, "frame handling failed", (),
                                   sys.exc_info())
    line = formatter.format(record)
    assert line.startswith("<3>node.daemon: frame handling failed | Traceback") and "\n" not in line


def test_silbato_run_under_systemd_says_ready_and_logs_for_journald(tmp_path, systemd):
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    read, write = os.pipe()
    st = os.fstat(write)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    env.update(GPIOZERO_PIN_FACTORY="mock", NOTIFY_SOCKET=systemd.path, WATCHDOG_USEC="400000",
               JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "run"], stderr=write,
                            env=env, cwd=tmp_path)
    os.close(write)
    try:
        assert systemd.next(30).startswith("READY=1")
        systemd.until(lambda m: m == "WATCHDOG=1")
        # a radio that was the controlling terminal, unplugged: SIGHUP must not stop the node
        proc.send_signal(signal.SIGHUP)
        for _ in range(3):  # more pings than could have been queued before the signal
            systemd.until(lambda m: m == "WATCHDOG=1")
        assert proc.poll() is None, "SIGHUP stopped the daemon"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    with os.fdopen(read) as fh:
        lines = fh.read().splitlines()
    assert lines and all(line.startswith("<") for line in lines), lines
    assert any(line.startswith("<6>node.daemon.node: node 1 (B1) started") for line in lines), lines
    assert any("received SIGHUP" in line and line.startswith("<4>") for line in lines), lines


def test_journald_is_recognised_only_on_its_own_stream(tmp_path):
    st = os.fstat(2)
    assert under_journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not under_journald({"JOURNAL_STREAM": "1:2"}) and not under_journald({})
