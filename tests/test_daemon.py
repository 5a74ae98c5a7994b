"""The node daemon: bad frames, replays, a missing radio, restarts, expiry and SIGTERM."""

import os
import signal
import subprocess
import sys

import pytest

from node.protocol import wire
from node.protocol.alerts import Kind, State
from node.daemon.node import Node
from node.errors import SilbatoError, StoreError, TransitionError
from node.protocol.keys import SigningKey
from node.sim import Block, provision


@pytest.fixture
def block(tmp_path):
    b = Block(tmp_path / "block", 3, "line", hold_time=0.05,
              overrides={"alerts.expire_after": 600.0}).start()
    yield b
    b.stop()


def settle(block, seconds=30):
    block.scheduler.run_for(seconds)


def test_garbage_and_forged_frames_are_counted_and_the_node_goes_on(block):
    node = block.nodes[2]
    node.on_frame(b"")
    node.on_frame(b"\x01" * 500)
    node.on_frame(bytes(82))
    stranger = SigningKey.generate()
    forged = wire.encode(wire.TransitionFrame(1, 99, 1, 99, Kind.RAID, State.REPORTED, 101), stranger,
                         node.roster.block)
    node.on_frame(forged)
    node.on_frame("not bytes")  # a wrong type from a buggy link must not kill the node
    assert node.counts["oversized"] == 1 and node.counts["bad-signature"] == 1
    assert node.counts["truncated"] == 1 and node.counts["unknown-version"] == 1
    assert node.counts["not-bytes"] == 1
    assert node.store.active_alerts() == []
    # and a good frame after all that is still taken
    alert = block.nodes[1].report()
    settle(block)
    assert node.store.get_alert(alert.id).state is State.REPORTED


def test_a_replayed_frame_changes_nothing_and_sounds_nothing(block):
    captured = []
    radio = block.air.radios[3]
    radio.start(lambda payload: (captured.append(payload), block.nodes[3].on_frame(payload)))
    alert = block.nodes[1].report()
    settle(block)
    block.nodes[2].act("confirm", alert.id)
    settle(block)
    block.nodes[1].act("all_clear", alert.id)
    settle(block)
    node = block.nodes[3]
    assert node.store.get_alert(alert.id).state is State.ALL_CLEAR
    events_before = len(node.store.events(alert.id))
    siren = block.siren_pin(3)
    node.hardware.siren.silence()  # let the all-clear tone finish before watching the pin
    siren.clear_states()
    replayed_before = node.counts["replayed"]  # relays by neighbours already arrive as replays
    for payload in captured:
        node.on_frame(payload)
    assert node.counts["replayed"] - replayed_before == len(captured)
    assert node.store.get_alert(alert.id).state is State.ALL_CLEAR
    assert len(node.store.events(alert.id)) == events_before
    assert not any(state for _, state in siren.states), "a replay must not sound the siren"


def test_illegal_transitions_are_refused_and_recorded(block):
    node = block.nodes[1]
    with pytest.raises(TransitionError):
        node.act("all_clear", "1-999")
    alert = node.report()
    with pytest.raises(TransitionError, match="other than the reporter"):
        node.act("confirm", alert.id)
    node.act("cancel", alert.id)
    with pytest.raises(TransitionError, match="cancelled"):
        node.act("confirm", alert.id)
    rejected = [e for e in node.store.events() if e["outcome"] == "rejected"]
    assert len(rejected) == 3 and all(e["reason"] for e in rejected)
    assert node.store.get_alert(alert.id).state is State.CANCELLED


def test_a_node_without_a_radio_still_sounds_stores_and_queues(tmp_path):
    files = provision(tmp_path, 2, hold_time=0.05)
    from gpiozero.pins.mock import MockFactory
    factory = MockFactory()
    node = Node(files.configs[0], pin_factory=factory).start()
    try:
        alert = node.report()
        assert node.store.get_alert(alert.id).state is State.REPORTED
        assert "no radio configured" in node.store.troubles()["radio"]
        assert len(node.store.pending()) == 1
        assert any(state for _, state in factory.pin(27).states), "the local siren must still sound"
    finally:
        node.stop()


def test_counters_survive_a_restart(block, tmp_path):
    node = block.nodes[1]
    first = node.report()
    settle(block)
    restarted = block.restart(1)
    second = restarted.report(location=102)
    assert int(second.id.split("-")[1]) > int(first.id.split("-")[1])
    settle(block)
    assert block.nodes[3].store.get_alert(second.id) is not None, "a fresh frame after restart is accepted"


def test_active_alerts_expire_after_the_quiet_period(block):
    alert = block.nodes[1].report()
    settle(block, 599 - 1)
    assert block.nodes[2].store.get_alert(alert.id).state is State.REPORTED
    settle(block, 10)
    assert {n.store.get_alert(alert.id).state for n in block.nodes.values()} == {State.EXPIRED}


def test_a_failing_chore_does_not_keep_the_others_from_running(block, monkeypatch):
    node = block.nodes[1]
    alert = node.report()
    settle(block)

    def full_disk(alert):
        raise StoreError("database or disk is full")

    monkeypatch.setattr(node.store, "save_alert", full_disk)  # so the expiry fails, every tick
    settle(block, 600)
    assert block.nodes[2].store.get_alert(alert.id).state is State.EXPIRED
    assert node.store.get_alert(alert.id).state is State.REPORTED, "this node could not expire it"
    errors, heartbeats = node.counts["error"], node.counts["heartbeat"]
    settle(block, 300)
    assert node.counts["error"] - errors >= 290, "the expiry fails once a tick"
    assert node.counts["heartbeat"] - heartbeats >= 3, "the heartbeats go on regardless"


def test_a_node_not_on_the_roster_refuses_to_start(tmp_path):
    files = provision(tmp_path, 2)
    cfg = files.configs[0]
    SigningKey.create(cfg.key_file, force=True)
    with pytest.raises(SilbatoError, match="not on roster"):
        Node(cfg).start()


def test_silbato_run_starts_and_stops_cleanly_on_sigterm(tmp_path):
    files = provision(tmp_path, 2)
    cfg = files.configs[0]
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    env["GPIOZERO_PIN_FACTORY"] = "mock"
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "run"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stderr:
            if "started" in line:
                break
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
    assert "received SIGTERM, stopping" in rest and "node stopped" in rest
