"""Replays that counters alone do not stop (issue 17, item 9): a node's own frames, and liveness news.

A node's own frames come back to it as a neighbour's relay: they are dropped as ``own-echo``,
never logged, before and after a restart. Heartbeats go to direct neighbours only, so a node
two hops away never saw their counters; they carry the signer's block time
(``node.protocol.clock``), and a recording converts to old news. A building a live neighbour
judged silent stays silent however its old heartbeats are played back, an old verdict played
back after the building returned changes nothing, and nothing recorded changes any node after
any node restarts. The same through the real ``meshtastic`` library, on pty radios.

(Named apart from tests/adversarial/test_replay.py, which replays to each node what it heard.)
"""

from __future__ import annotations

import threading

import pytest

from node.daemon.liveness import FRESH
from node.protocol import wire
from node.radio.sim_air import PRIVATE_APP
from node.sim import Block

CONNECT = 30.0   # seconds (wall clock) for a pty radio to connect


class Recorder:
    """A receiver on the block's air (say, a software radio in range): every Silbato frame put on air.

    With ``jam`` set for a frame type, frames of that type are recorded but never reach anyone.
    Recordings are played back at least ``liveness.FRESH`` seconds after they were made: one
    played back sooner is true news of a building alive at the time it was signed, no fresher.
    """

    def __init__(self, air):
        self.air = air
        self.frames: dict[bytes, float] = {}   # payload -> when first on air (seconds, virtual)
        self.jam: set[int] = set()
        self._transmit = air.transmit
        air.transmit = self.transmit

    def transmit(self, sender, packet) -> None:
        if packet.port == PRIVATE_APP:
            self.frames.setdefault(packet.payload, self.air.scheduler.now())
            if len(packet.payload) > 1 and packet.payload[1] in self.jam:
                return
        self._transmit(sender, packet)

    def old(self) -> list[bytes]:
        """Every frame recorded ``FRESH`` seconds ago or more."""
        now = self.air.scheduler.now()
        return [p for p, at in self.frames.items() if now - at > FRESH]

    def signed_by(self, origin: int, ftype: wire.FrameType | None = None) -> list[bytes]:
        return [p for p in self.old() if wire.peek_origin(p)[0] == origin and (ftype is None or p[1] == ftype)]

    def count(self, origin: int, ftype: wire.FrameType) -> int:
        return sum(1 for p in self.frames if wire.peek_origin(p)[0] == origin and p[1] == ftype)


def status(node, subject: int) -> str:
    return node.supervisor.status(subject, node.clock())


def state(node) -> dict:
    """Everything a frame could change on ``node``: its store's tables and its view of the block's liveness."""
    # Not the counters: a recording a node had not heard before is marked seen (and then refused
    # as a replay); that is all it does.
    tables = ("alerts", "aliases", "events", "coverage", "troubles", "outbox")
    rows = {t: node.store.db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    rows["peers"] = node.store.db.execute("SELECT node_id, last_heard, troubles FROM peers").fetchall()
    s = node.supervisor
    rows["supervision"] = (dict(s.evidence), dict(s.verdicts), set(s.neighbours), dict(s.troubles))
    rows["status"] = {m: status(node, m) for m in node.members}
    return rows


def changes(node) -> dict:
    """What a node sends or applies (its counts), less the counts of frames refused."""
    refused = ("replayed", "own-echo", "stale-heartbeat", "stale-receipt", "stale-verdict", "known-verdict", "accepted")
    return {k: v for k, v in node.counts.items() if k not in refused}


def replay_changes_nothing(block: Block, frames: list[bytes], label: str, to: tuple[int, ...] = (1, 2, 3)) -> None:
    """Play ``frames`` to nodes ``to`` at once (no time passes): no store, liveness view or count moves."""
    for i, node in block.nodes.items():
        if i not in to:
            continue
        before, sent, relays = state(node), changes(node), dict(node.relays._relays)
        for payload in frames:
            node.on_frame(payload)
        assert state(node) == before, f"{label}: a replay changed node {i}"
        assert changes(node) == sent, f"{label}: a replay made node {i} act"
        assert dict(node.relays._relays) == relays, f"{label}: a replay queued a relay on node {i}"


def play(block: Block, payload: bytes, *, position: int, listener: int) -> None:
    """Put ``payload`` on air from radio ``position`` until node ``listener`` has heard it (it may
    meet one of the listener's own transmissions)."""
    for _ in range(5):
        block.air.radios[position].emit(payload, hop_limit=0)
        block.scheduler.run_for(3)
        if block.nodes[listener].store.seen(*wire.peek_origin(payload)):
            return
    raise AssertionError(f"node {listener} never heard the frame played from radio {position}")


@pytest.fixture
def line(tmp_path):
    block = Block(tmp_path / "block", 3, "line", seed=5, hold_time=0.05)
    recorder = Recorder(block.air)
    block.start()
    yield block, recorder
    block.stop()


def test_own_echoes_are_dropped_without_events_before_and_after_a_restart(line):
    block, air = line
    node = block.nodes[1]
    alert = node.report()
    block.scheduler.run_for(30)
    block.nodes[2].act("confirm", alert.id)
    block.scheduler.run_for(60)
    # Nothing of node 1's own came back into its event log: its own events are the local ones.
    assert [e for e in node.store.events(alert.id) if e["signer"] == 1 and e["source"] != "local"] == []
    assert "duplicate" not in {e["outcome"] for e in node.store.events(alert.id)}
    echoes = node.counts["own-echo"]
    assert echoes > 0, "node 2 passes node 1's report back to it"
    own = air.signed_by(1)
    assert len(own) >= 3
    replay_changes_nothing(block, own, "own frames", to=(1,))
    assert node.counts["own-echo"] == echoes + len(own)
    node = block.restart(1)
    replay_changes_nothing(block, own, "own frames after a restart", to=(1,))
    assert node.counts["own-echo"] == len(own)


def test_a_building_judged_silent_stays_silent_when_its_old_heartbeats_are_played_back(line):
    block, air = line
    air.jam.add(wire.FrameType.SILENT)   # node 1 learns of the verdict from node 2's heartbeats instead
    alert = block.nodes[1].report()
    block.scheduler.run_for(30)
    block.nodes[2].act("confirm", alert.id)
    block.scheduler.run_for(30)
    block.nodes[1].act("all_clear", alert.id)
    block.scheduler.run_for(120)
    # One of node 3's heartbeats never reaches node 2 (a collision, say): a hole in node 2's window.
    block.air.set_loss(3, 2, 1.0)
    before = air.count(3, wire.FrameType.HEARTBEAT)
    block.scheduler.run_until_true(lambda: air.count(3, wire.FrameType.HEARTBEAT) > before, limit=200)
    block.scheduler.run_for(3)   # queued when recorded: on air (and lost to node 2) within a second
    block.air.set_loss(3, 2, 0.0)
    missed = [p for p in air.frames if wire.peek_origin(p)[0] == 3 and p[1] == wire.FrameType.HEARTBEAT][-1]
    assert not block.nodes[2].store.seen(*wire.peek_origin(missed))
    block.scheduler.run_for(60)
    assert all(status(block.nodes[i], 3) == "ok" for i in (1, 2))

    block.air.radios[3].plugged = False
    assert block.scheduler.run_until_true(
        lambda: status(block.nodes[2], 3) == "silent" and status(block.nodes[1], 3) == "silent", limit=400)
    block.scheduler.run_for(5)
    heartbeats = air.signed_by(3, wire.FrameType.HEARTBEAT)
    assert len(heartbeats) >= 4
    # From node 2's position (node 1 hears them: it never saw node 3's counters), then from node 1's.
    for position in (2, 1):
        for payload in heartbeats:
            block.air.radios[position].emit(payload, hop_limit=0)
        block.scheduler.run_for(20)
    play(block, missed, position=1, listener=2)   # the one node 2 missed
    assert status(block.nodes[1], 3) == "silent" and status(block.nodes[2], 3) == "silent"
    assert block.nodes[1].counts["stale-heartbeat"] >= len(heartbeats), (block.nodes[1].counts, block.nodes[2].counts)
    assert block.nodes[2].counts["stale-heartbeat"] >= 1, "the heartbeat node 2 missed was played back"
    # (The verdict is kept for later: nodes 1 and 3 never heard it.)
    replay_changes_nothing(block, [p for p in air.old() if p[1] != wire.FrameType.SILENT],
                           "every frame, building 3 silent")

    # Building 3 comes back; the recorded verdict, played back now, is old news.
    assert block.scheduler.run_until_true(lambda: air.signed_by(2, wire.FrameType.SILENT), limit=FRESH + 10), \
        "node 2 judged building 3 silent"   # (and its verdict is an old recording by now)
    verdicts = air.signed_by(2, wire.FrameType.SILENT)
    block.air.radios[3].plugged = True
    assert block.scheduler.run_until_true(
        lambda: all(status(block.nodes[i], 3) == "ok" for i in (1, 2)), limit=200)
    air.jam.clear()
    for payload in verdicts:
        play(block, payload, position=2, listener=1)
    assert all(status(block.nodes[i], 3) == "ok" for i in (1, 2))
    assert block.nodes[1].counts["stale-verdict"] == len(verdicts)
    replay_changes_nothing(block, air.old(), "every frame, building 3 back")

    # Every node restarts in turn; after each, every recorded frame changes nothing anywhere.
    for i in (1, 2, 3):
        block.restart(i)
        block.scheduler.run_for(5)
        replay_changes_nothing(block, air.old(), f"every frame after node {i} restarted")
    block.scheduler.run_for(300)
    assert all(status(block.nodes[i], j) == "ok" for i in (1, 2, 3) for j in (1, 2, 3))
    replay_changes_nothing(block, air.old(), "every frame, later")


def test_every_node_converges_on_the_fastest_clock_and_none_goes_back(tmp_path):
    block = Block(tmp_path / "block", 3, "line", seed=2, hold_time=0.05)
    block.start()
    try:
        block.nodes[3].signer.clock.offset += 500.0   # node 3's clock runs 500 s ahead
        block.scheduler.run_for(400)
        stamps = [block.nodes[i].signer.clock.stamp(block.clock()) for i in (1, 2, 3)]
        assert max(stamps) - min(stamps) <= 2
        assert all(status(block.nodes[i], j) == "ok" for i in (1, 2, 3) for j in (1, 2, 3))
        before = block.nodes[1].signer.clock.stamp(block.clock())
        node = block.restart(1)
        assert node.signer.clock.stamp(block.clock()) >= before
    finally:
        block.stop()


REFUSED = ("replayed", "own-echo", "stale-heartbeat", "stale-receipt", "stale-verdict", "known-verdict")


def test_frames_recorded_through_the_real_library_change_nothing_when_played_back(tmp_path):
    """Frames the nodes handed their radios through ``meshtastic``, played back from another radio.

    Heartbeats every 2 s keep it short in real time; the block's clocks then move two minutes on
    together (as if the recording waited that long), and every recorded frame goes on air again,
    from node 2's radio (nodes 1 and 3 hear it) and from node 1's (node 2 hears it).
    """
    block = Block(tmp_path / "b", 3, "line", scale=1.0, radio="serial", hold_time=0.05, preset="SHORT_FAST",
                  overrides={"supervision.heartbeat_interval": 2.0})
    base, skew = block.clock, [0.0]
    block.clock = lambda: base() + skew[0]
    block.start()
    try:
        nodes, radios = block.nodes, block.radios
        for node in nodes.values():
            assert node.link.connected.wait(CONNECT), node.link.troubles
        alert = nodes[1].report()
        for node in nodes.values():
            assert node.wait_for(lambda node=node: node.store.get_alert(alert.id) is not None, timeout=CONNECT)

        def sent(i: int) -> list[bytes]:
            return [bytes(p.decoded.payload) for p in list(radios[i].sent) if p.decoded.portnum == 256]

        def heartbeats(i: int) -> int:
            return sum(1 for p in sent(i) if p[1] == wire.FrameType.HEARTBEAT)

        assert nodes[1].wait_for(lambda: min(heartbeats(i) for i in (1, 2, 3)) >= 2, timeout=CONNECT)
        recorded = list(dict.fromkeys(p for i in (1, 2, 3) for p in sent(i)))
        kinds = {p[1] for p in recorded}
        assert {wire.FrameType.TRANSITION, wire.FrameType.HEARTBEAT} <= kinds

        skew[0] += 120.0
        # Each node's fate for every recorded frame that reaches it: what its counts did.
        fates: dict[int, list] = {i: [] for i in nodes}
        copies, landed = set(recorded), threading.Condition()
        for i, node in nodes.items():
            inner = node.inbox.on_frame

            def on_frame(data, node=node, inner=inner, i=i):
                with node.lock:
                    before = node.counts.copy()
                    inner(data)
                    if bytes(data) in copies:
                        with landed:
                            fates[i].append((bytes(data), node.counts - before))
                            landed.notify_all()
            node.inbox.on_frame = on_frame
        events = {i: {(e["signer"], e["counter"]) for e in n.store.events()} for i, n in nodes.items()}
        # From node 2's radio (nodes 1 and 3 hear it), then from node 1's (node 2 hears it). A copy
        # may meet a listener's own heartbeat on air (half duplex): it goes again until it lands.
        for position, listeners in ((2, (1, 3)), (1, (2,))):
            for payload in recorded:
                for _ in range(6):
                    radios[position].air_radio.emit(payload, hop_limit=0)
                    with landed:
                        if landed.wait_for(lambda: all(payload in {d for d, _ in fates[i]} for i in listeners),
                                           timeout=3.0):
                            break
                else:
                    raise AssertionError(f"nodes {listeners} never heard a frame played from radio {position}")
        for i, node in nodes.items():
            with node.lock:
                # ("accepted": it passed the signature and replay checks; a stale one is then dropped)
                refused = [set(fate) - {"accepted"} for _, fate in fates[i]]
                assert all(len(keys) == 1 and keys <= set(REFUSED) for keys in refused), (i, fates[i])
                assert any(keys == {"stale-heartbeat"} for keys in refused) or i == 2, \
                    f"node {i} heard a neighbour's neighbour's heartbeat"
                new = {(e["signer"], e["counter"]) for e in node.store.events()} - events[i]
                assert not new & {wire.peek_origin(p) for p in recorded}, f"a replay went into node {i}'s log"
                # No building made silent, out of reach or in trouble by a replay. A building two hops
                # away may still be "unknown" (waiting for first contact): which live heartbeat first
                # carried news of it before the check is a matter of timing on the air.
                statuses = {j: node.supervisor.status(j, node.clock()) for j in (1, 2, 3)}
                assert set(statuses.values()) <= {"ok", "unknown"}, (i, statuses, node.store.troubles())
                assert all(statuses[j] == "ok" for j in (1, 2, 3) if abs(i - j) <= 1), (i, statuses)
    finally:
        block.stop()


def test_a_flood_of_old_recordings_cannot_get_a_building_muted_as_flooding(line):
    """The flood limit counts frames that pass the signature and replay checks. Heartbeats go to
    direct neighbours only, so node 1 never saw node 3's counters: played back by the dozen, they
    would count as node 3 flooding, and node 3's next real alert would be dropped. Old news is
    dropped before the flood limit weighs it."""
    block, air = line
    block.scheduler.run_until_true(lambda: air.count(3, wire.FrameType.HEARTBEAT) >= 45, limit=24 * 3600)
    block.scheduler.run_for(FRESH + 5)
    heartbeats = [p for p in air.signed_by(3, wire.FrameType.HEARTBEAT)
                  if not block.nodes[1].store.seen(*wire.peek_origin(p))]
    assert len(heartbeats) >= 40, len(heartbeats)
    one = block.nodes[1]
    for payload in heartbeats:
        one.on_frame(payload)   # as if heard from a radio in range, one after another
    assert one.counts["rate-limited"] == 0 and "flooding" not in one.store.troubles()
    assert one.counts["stale-heartbeat"] >= len(heartbeats)
    alert = block.nodes[3].report(location=103)
    assert block.scheduler.run_until_true(lambda: one.store.get_alert(alert.id) is not None, limit=60) is not None
