"""`silbato status`: version, uptime, services, radio, active alerts and troubles, with no person named."""

import json
import os
import time

import pytest
from click.testing import CliRunner

from node import __version__
from node.appliance import status
from node.protocol.alerts import Alert, Kind, State
from node.cli import cli
from node.appliance.host import DirectoryHost, Layout
from node.sim import provision
from node.store import Store


def files_roster(files):
    from node.protocol.keys import Roster

    return Roster.load(files.configs[0].roster_file, files.organizer.public)


def test_the_summary_lists_active_alerts_by_place_and_the_troubles(tmp_path):
    files = provision(tmp_path / "block", 3)
    cfg = files.configs[0]
    host = DirectoryHost(Layout(tmp_path / "root"))
    empty = status.collect(cfg, host)
    assert empty["alerts"] == [] and empty["radio"] == "none configured"
    assert empty["health"] == "down" and empty["daemon"] == "not running", "nothing ran here"

    store = Store(cfg.db_file)
    store.sync_peers(files_roster(files))
    store.save_alert(Alert("2-5", Kind.RAID, 102, 2, State.CONFIRMED, 3, 100.0, 160.0, 100.0))
    store.save_alert(Alert("1-1", Kind.TEST, 101, 1, State.ALL_CLEAR, 1, 50.0, 60.0, 50.0))
    store.set_trouble("radio", "no radio configured: set radio.port", 100.0)
    started = time.time()  # this process plays a daemon started by hand: it started before this
    store.set_meta("daemon_started_at", repr(started))
    store.set_meta("daemon_pid", str(os.getpid()))
    store.close()
    summary = status.collect(cfg, host)
    assert summary["version"] == __version__
    assert summary["alerts"] == [{"id": "2-5", "kind": "raid", "state": "confirmed", "place": "Building 2",
                                  "since": 100.0}]
    assert summary["health"] == "trouble" and summary["radio"] == "no radio configured: set radio.port"
    text = "\n".join(status.lines(summary, clock=lambda: started + 3 * 3600 + 120))
    assert "silbato-node 3h 2m" in text and "2-5        raid confirmed  Building 2" in text
    assert f"health    trouble: silbato-node running, not under systemd (pid {os.getpid()})\n" in text
    assert "TROUBLE (radio) no radio configured" in text
    assert "watch     a silent building shows TROUBLE after 180 s\n" in text


def test_the_summary_says_when_a_slow_preset_stretches_the_supervision_period(tmp_path):
    files = provision(tmp_path / "block", 2, overrides={"radio.preset": "LONG_FAST"})
    summary = status.collect(files.configs[0], DirectoryHost(Layout(tmp_path / "root")))
    text = "\n".join(status.lines(summary))
    assert "shows TROUBLE after 590 s (supervision.period is 180 s: too short for LONG_FAST" in text


def test_the_command_prints_json_under_a_root(tmp_path):
    files = provision(tmp_path / "block", 1)
    cfg = files.configs[0]
    root = tmp_path / "root"
    (root / "etc/silbato").mkdir(parents=True)
    (root / "etc/silbato/silbato.toml").write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\n')
    result = CliRunner().invoke(cli, ["status", "--root", str(root), "--json"], obj={})
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["services"] == {"silbato-node.service": "not running", "silbato-web.service": "not running"}
    text = CliRunner().invoke(cli, ["status", "--root", str(root)], obj={}).output
    assert text.startswith(f"version   {__version__}") and "alerts    none active" in text


class Systemd(DirectoryHost):
    """This machine as systemd sees it, with silbato-node's unit in ``state``."""

    real = True

    def __init__(self, layout, state):
        super().__init__(layout)
        self.state = state

    def service_state(self, unit):
        return self.state if unit == "silbato-node.service" else "inactive"


def record(cfg, **meta):
    store = Store(cfg.db_file)
    for key, value in meta.items():
        store.set_meta(key, value)
    store.close()


@pytest.fixture
def node_cfg(tmp_path):
    return provision(tmp_path / "block", 1).configs[0]


def health(cfg, host):
    summary = status.collect(cfg, host)
    return summary["health"], summary["daemon"], [line for line in status.lines(summary) if line.startswith("health")]


def test_health_under_systemd_is_the_unit_s(node_cfg, tmp_path):
    layout = Layout(tmp_path / "root")
    assert health(node_cfg, Systemd(layout, "active"))[:2] == ("ok", "running under systemd")
    assert health(node_cfg, Systemd(layout, "failed")) == ("down", "not running",
                                                           ["health    down: silbato-node not running"])


def test_a_daemon_started_by_hand_is_running_not_down(node_cfg, tmp_path):
    record(node_cfg, daemon_started_at=repr(time.time()), daemon_pid=str(os.getpid()))
    for host in (Systemd(Layout(tmp_path / "root"), "inactive"), DirectoryHost(Layout(tmp_path / "root"))):
        assert health(node_cfg, host) == ("ok", f"running, not under systemd (pid {os.getpid()})",
                                          [f"health    ok: silbato-node running, not under systemd (pid {os.getpid()})"])


def test_a_stopped_or_vanished_daemon_is_not_running(node_cfg, tmp_path):
    host = DirectoryHost(Layout(tmp_path / "root"))
    record(node_cfg, daemon_started_at="1000.0", daemon_pid="")  # stopped cleanly: the pid was cleared
    assert health(node_cfg, host)[:2] == ("down", "not running")
    text = "\n".join(status.lines(status.collect(node_cfg, host), clock=lambda: 1000.0 + 120))
    assert "silbato-node not running (last started 0h 2m ago)" in text
    record(node_cfg, daemon_pid=str(os.getpid()))  # a pid reused by a process younger than the daemon's start
    assert health(node_cfg, host)[:2] == ("down", "not running")
    record(node_cfg, daemon_started_at=repr(time.time()), daemon_pid="4194304")  # above any pid_max: gone
    assert health(node_cfg, host)[:2] == ("down", "not running")
