"""Replay: every frame each node heard, played to it again, sounds no siren and changes nothing.

A block of three nodes on virtual time runs a raid through its whole lifecycle, an alert
that stays active, a cancelled test and a silent verdict, while each node's radio records
what it hears (transitions, receipts, heartbeats and the verdict). Then the recording is
replayed to every node: 1 s later, 24 simulated hours later, after the retention purge,
after every node restarts, and after a restart with the clock set back a year. Each node
refuses every copy as ``replayed`` (its own frames, relayed back to it, as ``own-echo``); a
fresh frame from the same sender is still taken, with a counter it never used before.
"""

from __future__ import annotations

import pytest

from adversary import TALLY, siren, snapshot, sounded
from node.protocol import alerts, wire
from node.protocol.alerts import Kind, State
from node.sim import Block

HOUR = 3600.0
YEAR = 365 * 24 * HOUR


class Recorded:
    """The block, what each node heard, and the block's clock skew (seconds, for every node built after)."""

    def __init__(self, root):
        self.block = Block(root, 3, "line", seed=3, hold_time=0.05)
        base = self.block.clock
        self.skew = 0.0
        self.clock = lambda: base() + self.skew  # every node reads the skew each time
        self.block.clock = self.clock
        self.block.start()
        self.heard: dict[int, list[bytes]] = {i: [] for i in self.block.nodes}
        for i in self.block.nodes:
            self.block.air.radios[i].start(lambda payload, i=i: self._hear(i, payload))

    def _hear(self, i: int, payload: bytes) -> None:
        self.heard[i].append(payload)
        self.block.nodes[i].on_frame(payload)

    def run(self, seconds: float) -> None:
        self.block.scheduler.run_for(seconds)

    def restart(self, i: int, clock_offset: float = 0.0):
        """Node i reboots; ``clock_offset`` seconds: its clock is that far off from then on."""
        self.block.clock = (lambda: self.clock() + clock_offset) if clock_offset else self.clock
        try:
            return self.block.restart(i)
        finally:
            self.block.clock = self.clock

    def replay(self) -> int:
        """Play every recorded frame to the node that heard it; check nothing sounds or changes."""
        nodes = self.block.nodes
        for node in nodes.values():
            node.hardware.silence()
            siren(node).clear_states()
        before = {i: snapshot(n) for i, n in nodes.items()}
        counts = {i: n.counts.copy() for i, n in nodes.items()}
        for i, frames in self.heard.items():
            for payload in frames:
                nodes[i].on_frame(payload)
        tried = sum(len(frames) for frames in self.heard.values())
        TALLY["replays tried"] += tried
        for i, node in nodes.items():
            assert not sounded(node), f"a replay sounded node {i}'s siren"
            assert snapshot(node) == before[i], f"a replay changed node {i}'s store"
            new = node.counts - counts[i]
            own = sum(1 for payload in self.heard[i] if wire.peek_origin(payload)[0] == i)
            expected = {"replayed": len(self.heard[i]) - own, "own-echo": own}  # its own: dropped as such
            assert dict(new) == {k: v for k, v in expected.items() if v}, (i, new)
        return tried

    def holders(self, alert_id: str) -> set[int]:
        return {i for i, n in self.block.nodes.items() if n.store.get_alert(alert_id) is not None}


@pytest.fixture
def recorded(tmp_path):
    r = Recorded(tmp_path / "block")
    nodes = r.block.nodes
    raid = nodes[1].report()                                # a raid: reported, confirmed, all clear
    r.run(30)
    nodes[2].act("confirm", raid.id)
    r.run(30)
    nodes[1].act("all_clear", raid.id)
    r.run(30)
    active = nodes[3].report()                              # a raid that stays confirmed
    r.run(30)
    nodes[2].act("confirm", active.id)
    r.run(30)
    test = nodes[2].report(Kind.TEST)                       # a test, withdrawn
    r.run(30)
    nodes[2].act("cancel", test.id)
    r.run(30)
    r.block.air.radios[3].plugged = False                   # node 3 goes quiet: a silent verdict
    r.run(240)
    r.block.air.radios[3].plugged = True
    r.run(120)
    r.alerts = {"raid": raid.id, "active": active.id, "test": test.id}
    assert {n.store.get_alert(raid.id).state for n in nodes.values()} == {State.ALL_CLEAR}
    assert {n.store.get_alert(active.id).state for n in nodes.values()} == {State.CONFIRMED}
    kinds = {type(wire.decode(p, nodes[1].roster)) for frames in r.heard.values() for p in frames}
    assert kinds == {wire.TransitionFrame, wire.ReceiptFrame, wire.HeartbeatFrame, wire.SilentFrame}
    yield r
    r.block.stop()


def highest_counter(r: Recorded, origin: int) -> int:
    return max(c for frames in r.heard.values() for o, c in map(wire.peek_origin, frames) if o == origin)


def fresh_report_is_taken(r: Recorded, sender: int, location: int) -> None:
    """A new report from ``sender`` reaches the whole block, under a counter it never used."""
    used = highest_counter(r, sender)
    alert = r.block.nodes[sender].report(location=location)
    assert alerts.parse_alert_id(alert.id)[1] > used, "a counter was reused after a restart"
    assert r.block.scheduler.run_until_true(lambda: r.holders(alert.id) == {1, 2, 3}, limit=120) is not None


def test_a_replay_one_second_later(recorded):
    recorded.run(1)
    assert recorded.replay() > 50


def test_a_replay_24_simulated_hours_later(recorded):
    recorded.skew += 24 * HOUR
    recorded.run(300)  # the active alert expires meanwhile; the block hears itself again
    assert recorded.block.nodes[1].store.get_alert(recorded.alerts["active"]).state is State.EXPIRED
    recorded.replay()


def test_a_replay_after_the_retention_purge_does_not_bring_an_alert_back(recorded):
    recorded.skew += 73 * HOUR  # past alerts.retention (72 h)
    recorded.run(300)
    assert recorded.holders(recorded.alerts["raid"]) == set(), "the purge should have removed the raid"
    recorded.replay()
    assert recorded.holders(recorded.alerts["raid"]) == set()


def test_a_replay_after_every_node_restarts(recorded):
    for i in (1, 2, 3):
        recorded.restart(i)
    recorded.run(5)
    recorded.replay()
    fresh_report_is_taken(recorded, sender=1, location=102)


def test_a_replay_after_a_restart_with_the_clock_a_year_back(recorded):
    for i in (1, 2, 3):
        recorded.restart(i, clock_offset=-YEAR)
    recorded.run(5)
    assert abs(recorded.block.nodes[3].clock() - recorded.clock() + YEAR) < 1
    recorded.replay()
    fresh_report_is_taken(recorded, sender=1, location=102)
    fresh_report_is_taken(recorded, sender=3, location=101)
