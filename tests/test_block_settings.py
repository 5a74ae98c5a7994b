"""Block-wide settings travel in the signed roster (issue 17, item 8).

``radio.preset``, ``supervision.*`` and the other settings in ``config.BLOCK_SETTINGS`` must
agree on every node, but each node reads its own file: the roster carries them, its signature
covers them, and a node whose file disagrees uses the roster's and says so.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
from click.testing import CliRunner

from node import config as config_mod
from node.appliance import status
from node.appliance.doctor import FAIL, PASS, WARN, Doctor
from node.appliance.host import DirectoryHost, Layout
from node.cli import cli
from node.daemon.node import Node
from node.errors import RosterError
from node.hardware.devices import mock_factory
from node.protocol import supervision
from node.protocol.keys import Roster, SigningKey, b64, install_roster, load_roster
from node.sim import Block, provision

BLOCK = {"radio.preset": "SHORT_FAST", "supervision.period": 240, "supervision.airtime_budget": 0.1}


def force_sign(body: dict, organizer: SigningKey) -> dict:
    """Sign any body as keys.py specifies (canonical JSON), as organizers with other software might."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {"roster": body, "signature": b64(organizer.sign(canonical))}


def node_toml(tmp_path, cfg, **local):
    """A settings file for node ``cfg`` of a provisioned block, with ``local`` values ({"supervision.period": 90})."""
    lines = [f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"']
    for name, value in local.items():
        head, key = name.split(".")
        lines.append(f"[{head}]\n{key} = {json.dumps(value)}")
    toml = tmp_path / "silbato.toml"
    toml.write_text("\n".join(lines) + "\n")
    return toml


# -- the roster carries them, signed ----------------------------------------------------------


def test_the_roster_carries_block_settings_and_they_replace_this_node_s(roster_setup):
    document = roster_setup.sign(settings=BLOCK)
    roster = Roster.parse(document, roster_setup.organizer.public)
    assert roster.settings == BLOCK
    local = config_mod.from_mapping({"supervision.period": 90.0, "radio.preset": "SHORT_FAST"}, source="silbato.toml")
    effective = config_mod.with_roster(local, roster)
    assert (effective["supervision.period"], effective["radio.preset"], effective["supervision.airtime_budget"]) == \
        (240.0, "SHORT_FAST", 0.1)
    assert isinstance(effective["supervision.period"], float)
    assert effective.origin("supervision.period") == "roster v1" and effective.origin("web.port") == "silbato.toml"
    assert effective.block.disagreements() == [("supervision.period", 90.0, 240.0),
                                               ("supervision.airtime_budget", 0.05, 0.1)]
    assert "supervision.receipt_timeout" in effective.block.not_carried()
    # applied again (a restart of the daemon on its own effective settings): from the same local values
    again = config_mod.with_roster(effective, roster)
    assert again.block.disagreements() == effective.block.disagreements() and again.block.local is local


def test_the_signature_covers_the_settings(roster_setup):
    document = copy.deepcopy(roster_setup.sign(settings=BLOCK))
    document["roster"]["settings"]["supervision.period"] = 30
    with pytest.raises(RosterError, match="bad signature"):
        Roster.parse(document, roster_setup.organizer.public)
    added = copy.deepcopy(roster_setup.document)  # settings slipped into a roster signed without them
    added["roster"]["settings"] = {"supervision.period": 30}
    with pytest.raises(RosterError, match="bad signature"):
        Roster.parse(added, roster_setup.organizer.public)


def test_an_older_roster_without_settings_still_loads_and_this_node_s_own_are_used(roster_setup):
    roster = roster_setup.roster
    assert roster.settings == {}
    local = config_mod.from_mapping({"supervision.period": 90.0})
    effective = config_mod.with_roster(local, roster)
    assert effective["supervision.period"] == 90.0 and effective.block.carried == {}
    assert "roster v1 carries no block-wide settings" in config_mod.describe_block(effective)


def test_a_changed_roster_needs_a_new_version(roster_setup):
    path = roster_setup.root / "roster.json"
    organizer = roster_setup.organizer.public
    install_roster(roster_setup.document, organizer, path)
    install_roster(roster_setup.document, organizer, path)  # the same roster again is harmless
    with pytest.raises(RosterError, match="version 1 is installed already with other contents"):
        install_roster(roster_setup.sign(settings=BLOCK), organizer, path)
    assert install_roster(roster_setup.sign(settings=BLOCK, version=2), organizer, path).settings == BLOCK


# -- bad values: refused where the roster is signed, and where it is read ----------------------


@pytest.mark.parametrize("settings, message", [
    ({"supervision.period": -5}, "settings: supervision.period: expected a number above 0 and at most 31622400, got -5"),
    ({"supervision.airtime_budget": 0.9}, "supervision.airtime_budget: expected a number above 0 and at most 0.5"),
    ({"radio.preset": "FAST_AS_YOU_CAN"}, "radio.preset: expected one of SHORT_TURBO"),
    ({"supervision.period": "180"}, "supervision.period: expected a number, got '180'"),
    ({"supervision.period": True}, "supervision.period: expected a number, got True"),
    ({"radio.port": "/dev/ttyUSB0"}, "radio.port: not a block-wide setting"),
    ({"supervision.perod": 180}, r"supervision.perod: unknown setting \(did you mean supervision.period\?\)"),
])
def test_a_bad_value_is_refused_by_name(settings, message):
    with pytest.raises(RosterError, match=message):
        config_mod.block_settings(settings)


def test_roster_sign_refuses_a_bad_value_naming_the_key_and_says_what_it_carries(tmp_path):
    runner = CliRunner()
    org = tmp_path / "org.key"
    assert runner.invoke(cli, ["roster", "keygen", str(org)], obj={}).exit_code == 0
    body = {"block": "elm", "version": 1, "nodes": [
        {"id": 1, "name": "B1", "location": 101, "place": "Building 1", "public_key": SigningKey.generate().public_b64}]}
    path, out = tmp_path / "body.json", tmp_path / "roster.json"
    path.write_text(json.dumps({**body, "settings": {"supervision.period": 0}}))
    result = runner.invoke(cli, ["roster", "sign", str(path), "--key", str(org), "--out", str(out)], obj={})
    assert result.exit_code == 1 and not out.exists()
    assert f"{path}: roster: settings: supervision.period: expected a number above 0" in result.output
    assert "Traceback" not in result.output

    path.write_text(json.dumps({**body, "settings": {"supervision.period": 240, "radio.preset": "LONG_FAST"}}))
    result = runner.invoke(cli, ["roster", "sign", str(path), "--key", str(org), "--out", str(out)], obj={})
    assert result.exit_code == 0, result.output
    assert "block-wide settings: supervision.period = 240.0, radio.preset = LONG_FAST" in result.output
    assert json.loads(out.read_text())["roster"]["settings"] == {"supervision.period": 240, "radio.preset": "LONG_FAST"}

    path.write_text(json.dumps(body))  # an older body: signed, with a note
    result = runner.invoke(cli, ["roster", "sign", str(path), "--key", str(org), "--out", str(out)], obj={})
    assert result.exit_code == 0 and "carries no block-wide settings" in result.output


@pytest.fixture
def bad_block(tmp_path):
    """Node 1 of a block whose signed roster carries a value out of range (signed by other software)."""
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    document = json.loads(cfg.roster_file.read_text())
    body = dict(document["roster"], version=2, settings={"supervision.period": -5})
    cfg.roster_file.write_text(json.dumps(force_sign(body, files.organizer)))
    return files, cfg


def test_a_signed_roster_with_a_bad_value_stops_the_daemon_with_one_clear_line(bad_block, caplog):
    files, cfg = bad_block
    assert load_roster(cfg).version == 2  # the signature is good: it is the value that is refused
    node = Node(cfg, pin_factory=mock_factory())
    with caplog.at_level(logging.ERROR, logger="node.daemon.node"), \
            pytest.raises(RosterError, match="roster v2: settings: supervision.period: expected a number above 0 "
                                             r"and at most 31622400, got -5: this node cannot use the roster"):
        node.start()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == \
        ["TROUBLE (roster): roster v2: settings: supervision.period: expected a number above 0 and at most "
         "31622400, got -5: this node cannot use the roster; ask the organizers to sign a new version with a valid value"]


def test_a_signed_roster_with_a_bad_value_fails_the_doctor_and_is_not_installed(bad_block, tmp_path):
    files, cfg = bad_block
    toml = node_toml(tmp_path, cfg)
    dev = tmp_path / "dev"
    dev.mkdir()
    results = Doctor(DirectoryHost(Layout(tmp_path)), config_path=toml, dev=dev).run()
    (block,) = [r for r in results if r.check == "block"]
    assert block.status == FAIL and "supervision.period: expected a number above 0" in block.detail
    summary = status.collect(cfg, DirectoryHost(Layout(tmp_path / "root")))
    assert "the roster cannot be used: roster v2: settings: supervision.period" in summary["block_settings"]
    # 'silbato roster install' refuses it on a node that has a good one
    other = files.configs[1]
    bad = tmp_path / "bad.json"
    bad.write_text(cfg.roster_file.read_text())
    result = CliRunner().invoke(cli, ["--config", str(node_toml(tmp_path, other)), "roster", "install", str(bad)],
                                obj={})
    assert result.exit_code == 1 and "supervision.period: expected a number above 0" in result.output
    assert load_roster(other).version == 1


# -- a node whose file disagrees: the roster's values, said in the log, doctor and status ------


def test_a_node_whose_file_disagrees_uses_the_roster_s_and_says_so(tmp_path, caplog):
    files = provision(tmp_path / "block", 2, settings=BLOCK)
    cfg = files.configs[0]
    toml = node_toml(tmp_path, cfg, **{"supervision.period": 90, "radio.preset": "LONG_FAST"})
    local = config_mod.load(toml, env={})

    with caplog.at_level(logging.INFO, logger="node.daemon.node"):
        node = Node(local, pin_factory=mock_factory()).start()
    try:
        assert node.supervisor.period == 240.0 and node.config["radio.preset"] == "SHORT_FAST"
        assert node.liveness.heartbeat_airtime == pytest.approx(
            supervision.heartbeat_airtime("SHORT_FAST", 2))  # sized for the roster's preset
    finally:
        node.stop()
    said = [r.getMessage() for r in caplog.records if "block-wide" in r.getMessage()]
    assert said == ["block-wide settings: roster v1 sets 3 block-wide settings; this node's own settings differ "
                    "and the roster's are used: radio.preset SHORT_FAST (local LONG_FAST), supervision.period 240 "
                    "(local 90), supervision.airtime_budget 0.1 (local 0.05); not in the roster, this node's own: "
                    "alerts.merge_window, alerts.expire_after, supervision.receipt_timeout"]
    assert [r.levelno for r in caplog.records if "block-wide" in r.getMessage()] == [logging.WARNING]

    dev = tmp_path / "dev"
    dev.mkdir()
    (block,) = [r for r in Doctor(DirectoryHost(Layout(tmp_path)), config_path=toml, dev=dev).run()
                if r.check == "block"]
    assert block.status == WARN and "supervision.period 240 (local 90)" in block.detail
    assert "radio.preset SHORT_FAST (local LONG_FAST)" in block.detail and "make this node's settings file agree" \
        in block.detail

    summary = status.collect(local, DirectoryHost(Layout(tmp_path / "root")))
    assert summary["preset"] == "SHORT_FAST" and summary["supervision_period"] == 240.0
    assert summary["block_disagreements"]["supervision.period"] == {"local": 90.0, "roster": 240.0}
    text = "\n".join(status.lines(summary))
    assert "watch     a silent building shows TROUBLE after 240 s" in text
    assert "block     roster v1 sets 3 block-wide settings; this node's own settings differ" in text

    runner = CliRunner()
    shown = runner.invoke(cli, ["--config", str(toml), "roster", "show"], obj={}, env={})
    assert shown.exit_code == 0 and "  setting supervision.period = 240.0\n" in shown.output
    assert "supervision.period 240 (local 90)" in shown.output
    effective = runner.invoke(cli, ["--config", str(toml), "config", "show"], obj={}, env={})
    assert effective.exit_code == 0 and "period = 240.0\n" in effective.output
    assert "# block-wide: roster v1 sets 3 block-wide settings" in effective.output


def test_doctor_and_status_say_when_the_roster_carries_none_or_agrees(tmp_path):
    dev = tmp_path / "dev"
    dev.mkdir()
    files = provision(tmp_path / "old", 1)
    toml = node_toml(tmp_path, files.configs[0])
    (block,) = [r for r in Doctor(DirectoryHost(Layout(tmp_path)), config_path=toml, dev=dev).run()
                if r.check == "block"]
    assert block.status == WARN and "roster v1 carries no block-wide settings" in block.detail
    summary = status.collect(files.configs[0], DirectoryHost(Layout(tmp_path / "root")))
    assert "block     roster v1 carries no block-wide settings" in "\n".join(status.lines(summary))

    files = provision(tmp_path / "new", 1, settings={"supervision.period": 180})
    toml = node_toml(tmp_path, files.configs[0])
    (block,) = [r for r in Doctor(DirectoryHost(Layout(tmp_path)), config_path=toml, dev=dev).run()
                if r.check == "block"]
    assert block.status == PASS and "roster v1 sets 1 block-wide setting, and this node's own settings agree" \
        in block.detail


# -- in the block: two nodes with different files supervise by the roster's period -------------


def test_two_nodes_with_different_files_supervise_with_the_roster_s_period(tmp_path):
    block = Block(tmp_path / "b", 2, "line", preset="SHORT_FAST", scale=None, seed=3,
                  settings={"supervision.period": 240})
    files = block.files.configs
    # node 1's file says 100 s, node 2's 600 s. On their own, 2 would send heartbeats too seldom for 1,
    # which calls it silent while it is fine (checked: without the roster's period this test fails there),
    # and after a real outage 1 would judge within 100 s and 2 wait ten minutes.
    files[0] = config_mod.from_mapping({"supervision.period": 100.0}, source="node1.toml", base=dict(files[0]))
    files[1] = config_mod.from_mapping({"supervision.period": 600.0}, source="node2.toml", base=dict(files[1]))
    block.start()
    try:
        assert [block.nodes[i].supervisor.period for i in (1, 2)] == [240.0, 240.0]
        block.scheduler.run_for(300)          # both heard each other
        assert not any(block.nodes[i].supervisor.silent(block.clock()) for i in (1, 2))
        block.air.set_loss(1, 2, 1.0)          # and then no longer
        cut = block.scheduler.now()
        judged: dict[int, float] = {}

        def both_judged() -> bool:
            for i, other in ((1, 2), (2, 1)):
                if i not in judged and other in block.nodes[i].supervisor.silent(block.clock()):
                    judged[i] = block.scheduler.now() - cut
            return len(judged) == 2

        assert block.scheduler.run_until_true(both_judged, limit=400) is not None, judged
        # Each judged 240 s after it last heard the other (less the verdict's lead, plus a few seconds'
        # jitter), which was up to a heartbeat interval before the cut: never by 100 s, nor waiting 600.
        assert all(120 <= after <= 280 for after in judged.values()), judged
    finally:
        block.stop()


def test_the_page_lists_missing_buildings_by_the_roster_s_receipt_timeout(tmp_path):
    from web import data

    from websupport import app_for

    block = Block(tmp_path / "b", 2, "line", scale=None, settings={"supervision.receipt_timeout": 600})
    files = block.files.configs
    files[0] = config_mod.from_mapping({"supervision.receipt_timeout": 30.0}, source="node1.toml", base=dict(files[0]))
    block.start()
    try:
        block.air.set_loss(1, 2, 1.0)   # B2 will not answer
        block.nodes[1].report()
        block.scheduler.run_for(120)    # past this node's own 30 s, not the roster's 600 s
        with app_for(block, 1).app_context():
            (row,) = data.alert_rows(block.clock(), block.nodes[1].store)
        assert row["missing"] == [], "B2 is not missing before the block's receipt timeout"
    finally:
        block.stop()
