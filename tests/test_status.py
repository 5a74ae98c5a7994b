"""`silbato status`: version, uptime, services, radio, active alerts and troubles, with no person named."""

import json

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
    assert empty["alerts"] == [] and empty["health"] == "ok" and empty["radio"] == "none configured"

    store = Store(cfg.db_file)
    store.sync_peers(files_roster(files))
    store.save_alert(Alert("2-5", Kind.RAID, 102, 2, State.CONFIRMED, 3, 100.0, 160.0, 100.0))
    store.save_alert(Alert("1-1", Kind.TEST, 101, 1, State.ALL_CLEAR, 1, 50.0, 60.0, 50.0))
    store.set_trouble("radio", "no radio configured: set radio.port", 100.0)
    store.set_meta("daemon_started_at", "1000.0")
    store.close()
    summary = status.collect(cfg, host)
    assert summary["version"] == __version__
    assert summary["alerts"] == [{"id": "2-5", "kind": "raid", "state": "confirmed", "place": "Building 2",
                                  "since": 100.0}]
    assert summary["health"] == "trouble" and summary["radio"] == "no radio configured: set radio.port"
    text = "\n".join(status.lines(summary, clock=lambda: 1000.0 + 3 * 3600 + 120))
    assert "silbato-node 3h 2m" in text and "2-5        raid confirmed  Building 2" in text
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
