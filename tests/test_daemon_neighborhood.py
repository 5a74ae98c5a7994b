"""The daemon's side of the neighborhood (node/daemon/neighborhood.py), on a simulated block and virtual time.

No broker: a test writes what the bridge would have taken into ``bridge_in`` and reads what the
daemon queued from ``bridge_out`` (the store contract of node/bridgequeue.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from node import config as config_mod
from node.bridgequeue import BridgeQueue, topic
from node.protocol import wire
from node.protocol.alerts import Kind, State
from node.protocol.keys import SigningKey, public_body, sign_roster
from node.protocol.neighborhood import block_entry, sign_neighborhood
from node.sim import Block
from websupport import app_for

HOOD = "eastside"


@dataclass
class Foreign:
    """Another block of the neighborhood: its organizers' key, its nodes' keys and signed roster."""

    name: str
    organizer: SigningKey = field(default_factory=SigningKey.generate)
    keys: dict = field(default_factory=lambda: {i: SigningKey.generate() for i in (1, 2)})
    counter: int = 0

    def roster(self, version: int = 1) -> dict:
        return sign_roster({"block": self.name, "version": version, "nodes": [
            {"id": i, "name": f"O{i}", "location": 200 + i, "place": f"{self.name} house {i}",
             "public_key": k.public_b64} for i, k in self.keys.items()]}, self.organizer)

    def public(self, version: int = 1) -> dict:
        """The roster as its bridge node publishes it: without place names."""
        document = self.roster(version)
        return {"roster": public_body(document["roster"]), "public_signature": document["public_signature"]}

    def frame(self, state: State, *, kind: Kind = Kind.RAID, alert: tuple[int, int] = (1, 1), origin: int = 1,
              location: int = 201) -> bytes:
        self.counter += 1
        return wire.encode(wire.TransitionFrame(origin, self.counter, alert[0], alert[1], kind, state, location),
                           self.keys[origin], self.name)


class Hood:
    def __init__(self, tmp_path, n: int = 3, bridges=(1, 2), policy: dict | None = None):
        self.organizer = SigningKey.generate()
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "hood.pub").write_text(self.organizer.public_b64 + "\n")
        self.block = Block(tmp_path / "b", n, "line", overrides={
            "neighborhood.name": HOOD, "neighborhood.organizer_key": str(tmp_path / "hood.pub")})
        configs = self.block.files.configs
        for i in range(n):
            configs[i] = config_mod.from_mapping({"bridge.enabled": i + 1 in bridges}, base=dict(configs[i]))
        self.oak, self.far, self.gone = Foreign("oak-st"), Foreign("far-st"), Foreign("gone-st")
        self.body = {"name": HOOD, "version": 1, "blocks": [
            block_entry("sim-block", self.block.files.organizer.public, "Sim St 1-50", ["oak-st"]),
            block_entry("oak-st", self.oak.organizer.public, "Oak St 1-99"),
            block_entry("far-st", self.far.organizer.public, "Far St"),
            {**block_entry("gone-st", self.gone.organizer.public, "Gone St"), "revoked": True}]}
        if policy:
            self.body["policy"] = policy
        document = sign_neighborhood(self.body, self.organizer)
        for cfg in configs:
            (cfg.state_dir / "neighborhood.json").write_text(json.dumps(document))
        self.block.start()

    def node(self, i: int):
        return self.block.nodes[i]

    def give(self, i: int, where: str, payload: bytes) -> None:
        """What node i's bridge took from the broker."""
        BridgeQueue(self.node(i).store).received(where, payload, self.block.clock())

    def give_roster(self, i: int, foreign: Foreign, version: int = 1) -> None:
        self.give(i, topic(HOOD, foreign.name), json.dumps(foreign.public(version)).encode())

    def give_frame(self, i: int, foreign: Foreign, data: bytes) -> None:
        self.give(i, topic(HOOD, foreign.name, "frames"), data)

    def run(self, seconds: float = 30.0) -> None:
        self.block.scheduler.run_for(seconds)

    def nearby(self, i: int) -> list[dict]:
        return self.node(i).store.nearby(self.block.clock(), 7200)

    def drops(self, i: int) -> dict:
        return self.node(i).store.drops()

    def out(self, i: int) -> list[dict]:
        return BridgeQueue(self.node(i).store).unsent(1000)


@pytest.fixture
def make_hood(tmp_path):
    hoods = []

    def make(**kw):
        hood = Hood(tmp_path / f"h{len(hoods)}", **kw)
        hoods.append(hood)
        return hood

    yield make
    for hood in hoods:
        hood.block.stop()


def test_a_confirmed_raid_next_door_shows_as_nearby_on_every_node_and_on_the_page(make_hood):
    hood = make_hood(bridges=(1,))
    hood.give_roster(1, hood.oak)
    hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED))
    hood.run(60)
    for i in (1, 2, 3):
        rows = hood.nearby(i)
        assert [(r["block"], r["state"], r["reporter"], r["counter"]) for r in rows] == \
            [("oak-st", int(State.CONFIRMED), 1, 1)], i
    # Place names never leave their block: every node, the bridge node too, names the block's area.
    assert hood.nearby(1)[0]["place"] == "Oak St 1-99" and hood.nearby(3)[0]["place"] == "Oak St 1-99"
    # A chime, not the siren: the siren pin played the nearby pattern.
    assert hood.node(3).hardware.siren.playing in ("nearby", None)
    assert hood.node(3).counts["nearby-chime"] == 1
    # Only the NEARBY went on the local mesh: nothing of it is an alert of this block.
    assert all(not hood.node(i).store.active_alerts() for i in (1, 2, 3))
    client = app_for(hood.block, 3).test_client()
    page = client.get("/?lang=en").get_data(as_text=True)
    assert "Raid confirmed nearby: oak-st, Oak St 1-99" in page
    assert client.get("/api/nearby").get_json()[0] | {"received_at": None, "received_ts": None} == {
        "block": "oak-st", "area": "Oak St 1-99", "place": "Oak St 1-99", "state": "confirmed", "alert": "1-1",
        "received_at": None, "received_ts": None}
    es = client.get("/?lang=es").get_data(as_text=True)
    assert "Redada confirmada cerca: oak-st, Oak St 1-99" in es
    # The ALL CLEAR ends it everywhere.
    hood.give_frame(1, hood.oak, hood.oak.frame(State.ALL_CLEAR))
    hood.run(60)
    assert all(hood.nearby(i) == [] for i in (1, 2, 3))
    assert "Raid confirmed nearby" not in client.get("/?lang=en").get_data(as_text=True)


def test_a_nearby_alert_shows_two_hours_at_most(make_hood):
    hood = make_hood(bridges=(1,))
    hood.give_roster(1, hood.oak)
    hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED))
    hood.run(60)
    assert hood.nearby(3)
    hood.run(2 * 3600)
    assert hood.nearby(3) == []


def test_two_bridge_nodes_give_one_nearby_per_state(make_hood):
    hood = make_hood(bridges=(1, 2))
    for i in (1, 2):
        hood.give_roster(i, hood.oak)
    confirmed = hood.oak.frame(State.CONFIRMED)
    hood.give_frame(1, hood.oak, confirmed)
    hood.run(60)
    hood.give_frame(2, hood.oak, confirmed)   # the broker's copy reaches the second bridge later
    hood.run(60)
    for i in (1, 2, 3):
        assert len(hood.nearby(i)) == 1
        assert hood.node(i).counts["nearby-chime"] <= 1
    # Node 2 heard node 1's NEARBY over LoRa first, so it signed none of its own.
    assert hood.node(2).counts["nearby-heard-first"] == 1
    nearby_frames = [f for f in hood.node(2).store.pending()]
    assert nearby_frames == []


def test_both_bridge_nodes_at_once_still_show_one_alert(make_hood):
    hood = make_hood(bridges=(1, 2))
    confirmed = hood.oak.frame(State.CONFIRMED)
    for i in (1, 2):
        hood.give_roster(i, hood.oak)
        hood.give_frame(i, hood.oak, confirmed)   # both take it in the same second: two NEARBY frames on air
    hood.run(90)
    for i in (1, 2, 3):
        assert len(hood.nearby(i)) == 1 and hood.node(i).store.db.execute(
            "SELECT COUNT(*) FROM nearby").fetchone()[0] == 1


def test_each_drop_reason_is_counted_and_nothing_is_shown(make_hood, caplog):
    hood = make_hood(bridges=(1,))
    oak, far, gone = hood.oak, hood.far, hood.gone
    stranger = Foreign("stranger-st")
    hood.give_frame(1, oak, oak.frame(State.CONFIRMED))                            # unknown-roster
    hood.give_roster(1, oak, version=2)
    hood.give_roster(1, oak, version=1)                                            # stale-roster
    impostor = Foreign("oak-st")                                                   # signed by another key
    hood.give(1, topic(HOOD, "oak-st"), json.dumps(impostor.public(3)).encode())  # bad-signature
    hood.give_frame(1, oak, wire.encode(wire.TransitionFrame(1, 99, 1, 1, Kind.RAID, State.CONFIRMED, 201),
                                        impostor.keys[1], "oak-st"))              # bad-signature
    hood.give_frame(1, stranger, stranger.frame(State.CONFIRMED))                 # unknown-block
    hood.give_frame(1, gone, gone.frame(State.CONFIRMED))                         # revoked
    hood.give_frame(1, far, far.frame(State.CONFIRMED))                           # not-neighbor
    hood.give_frame(1, oak, b"\x02" * 200)                                        # oversized
    hood.give(1, topic(HOOD, "oak-st", "frames"), b"hello, broker")              # not-silbato
    hood.give(1, "silbato/westside/oak-st/frames", oak.frame(State.CONFIRMED))    # not-silbato (another hood)
    hood.give_frame(1, oak, oak.frame(State.REPORTED, alert=(1, 7)))              # not-crossing (a report)
    hood.give_frame(1, oak, oak.frame(State.CONFIRMED, kind=Kind.TEST, alert=(1, 8)))  # not-crossing (a test)
    replayed = oak.frame(State.CONFIRMED, alert=(2, 3), location=202)
    hood.give_frame(1, oak, replayed)
    hood.give_frame(1, oak, replayed)                                             # replay
    hood.run(5)
    for i in range(31):                                                           # flooding: 30 at once pass
        hood.give_frame(1, oak, oak.frame(State.CANCELLED, alert=(1, 100 + i)))
    hood.run(5)
    drops = hood.drops(1)
    assert drops.pop("flooding") >= 1   # the frames above spent part of oak-st's allowance
    assert drops == {"unknown-roster": 1, "stale-roster": 1, "bad-signature": 2, "unknown-block": 1, "revoked": 1,
                     "not-neighbor": 1, "oversized": 1, "not-silbato": 2, "not-crossing": 2, "replay": 1}, drops
    # Only the one good confirmed frame became an alert here; every message was consumed.
    assert [(r["reporter"], r["counter"]) for r in hood.nearby(1)] == [(2, 3)]
    assert BridgeQueue(hood.node(1).store).incoming() == []
    # Logged once per reason burst, not once per message.
    assert sum("foreign message dropped (flooding" in r.getMessage() for r in caplog.records
               if r.levelname == "WARNING") == 1


def test_a_newer_neighborhood_roster_from_the_broker_is_taken_and_an_older_one_refused(make_hood, tmp_path):
    hood = make_hood(bridges=(1,))
    body = {**hood.body, "version": 2}
    body["blocks"] = [*hood.body["blocks"][:2], {**hood.body["blocks"][2], "neighbors": ["sim-block"]},
                      hood.body["blocks"][3]]
    hood.give(1, topic(HOOD), json.dumps(sign_neighborhood(body, hood.organizer)).encode())
    hood.give(1, topic(HOOD), json.dumps(sign_neighborhood(hood.body, hood.organizer)).encode())
    forged = sign_neighborhood({**body, "version": 9}, SigningKey.generate())
    hood.give(1, topic(HOOD), json.dumps(forged).encode())
    hood.give_roster(1, hood.far)
    hood.give_frame(1, hood.far, hood.far.frame(State.CONFIRMED))   # far-st is a neighbor from version 2
    hood.run(30)
    assert hood.drops(1) == {"stale-roster": 1, "bad-signature": 1}
    assert hood.node(1).neighborhood.hood.version == 2
    assert json.loads((hood.block.files.configs[0].state_dir / "neighborhood.json").read_text()
                      )["neighborhood"]["version"] == 2
    assert [r["block"] for r in hood.nearby(1)] == ["far-st"]


def test_the_policy_can_widen_to_every_block(make_hood):
    hood = make_hood(bridges=(1,), policy={"states": ["reported", "confirmed", "all_clear", "cancelled"], "to": "all"})
    hood.give_roster(1, hood.far)
    hood.give_frame(1, hood.far, hood.far.frame(State.REPORTED))
    hood.run(30)
    assert [(r["block"], r["state"]) for r in hood.nearby(3)] == [("far-st", int(State.REPORTED))]
    assert "Raid reported nearby: far-st, Far St" in app_for(hood.block, 3).test_client().get(
        "/?lang=en").get_data(as_text=True)


def test_own_crossing_states_are_queued_once_across_a_restart_and_the_roster_retained(make_hood):
    hood = make_hood(bridges=(1, 2))
    hood.run(5)
    out = hood.out(1)
    assert [(r["topic"], r["retain"]) for r in out] == [(topic(HOOD, "sim-block"), 1)]
    assert json.loads(out[0]["payload"]) == hood.node(1).roster.public_document()
    assert b'"place"' not in out[0]["payload"] and b"Building" not in out[0]["payload"]
    alert = hood.node(3).report()
    hood.run(60)
    hood.node(2).act("confirm", alert.id)
    hood.run(60)
    hood.node(3).act("all_clear", alert.id)
    hood.run(60)
    frames = topic(HOOD, "sim-block", "frames")

    def shared(i):
        return [wire.decode(bytes(r["payload"]), hood.node(i).roster) for r in hood.out(i) if r["topic"] == frames]

    for i in (1, 2):   # each bridge node shares what the block holds: the confirmation and the all clear
        assert [(f.alert_id, f.state) for f in shared(i)] == [(alert.id, State.CONFIRMED), (alert.id, State.ALL_CLEAR)]
    hood.block.restart(1)
    hood.run(60)
    assert len(shared(1)) == 2
    # Not for tests: a TEST never leaves the block.
    test_alert = hood.node(3).report(Kind.TEST)
    hood.run(30)
    hood.node(2).act("confirm", test_alert.id)
    hood.run(60)
    assert len(shared(1)) == 2
    # This block's own messages, echoed back by the broker, are not news.
    for r in hood.out(1):
        hood.give(1, r["topic"], bytes(r["payload"]))
    hood.run(5)
    assert hood.drops(1) == {} and hood.nearby(1) == []


def test_a_node_without_the_neighborhood_shares_nothing(tmp_path):
    block = Block(tmp_path / "b", 2, "line", overrides={"bridge.enabled": True}).start()
    try:
        alert = block.nodes[1].report()
        block.scheduler.run_for(30)
        block.nodes[2].act("confirm", alert.id)
        block.scheduler.run_for(30)
        assert BridgeQueue(block.nodes[1].store).unsent() == []
    finally:
        block.stop()


def test_a_replayed_nearby_frame_is_refused(make_hood):
    hood = make_hood(bridges=(1,))
    hood.give_roster(1, hood.oak)
    hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED))
    hood.run(60)
    signed = [r["frame"] for r in hood.node(1).store.db.query("SELECT frame FROM outbox")]
    nearby = [f for f in signed if wire.decode(bytes(f), hood.node(1).roster).type is wire.FrameType.NEARBY]
    assert len(nearby) == 1
    before = hood.node(3).counts["replayed"]
    hood.node(3).on_frame(bytes(nearby[0]))
    assert hood.node(3).counts["replayed"] == before + 1
    # And the nearby row is gone with the retention purge.
    store = hood.node(3).store
    store.purge(hood.block.clock() + hood.node(3).config["alerts.retention"] + 1, hood.node(3).config["alerts.retention"])
    assert store.db.execute("SELECT COUNT(*) FROM nearby").fetchone()[0] == 0


def test_a_nearby_lost_on_air_reaches_the_block_by_the_bridge_nodes_repeats(make_hood):
    """A NEARBY has no receipts: when its first copy is lost (here: node 1's link to node 2 down
    while it goes out), the bridge node's repeats still bring it to every node."""
    hood = make_hood(bridges=(1,))
    hood.give_roster(1, hood.oak)
    hood.run(5)
    air = hood.block.air
    air.set_loss(1, 2, 1.0)
    hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED))
    hood.run(5)                       # the first copy went out, and was lost
    assert hood.nearby(1) and not hood.nearby(2) and not hood.nearby(3)
    air.set_loss(1, 2, 0.0)
    hood.run(120)
    assert all(len(hood.nearby(i)) == 1 for i in (1, 2, 3))
    assert hood.node(1).counts["nearby-repeat"] >= 1


def test_a_busy_neighborhood_never_gets_the_bridge_nodes_own_raid_dropped_on_its_block(make_hood):
    """Review finding: 60 crossing states from two blocks made the bridge node sign 60 NEARBY
    at once; every node counted them against the bridge node's flood limit, dropped its frames
    and missed its own raid for minutes. NEARBY frames now have a budget of their own, well under
    the flood limit: the rest wait (newest state of each alert), and every one still arrives."""
    from node.daemon.neighborhood import NEARBY_BURST

    hood = make_hood(bridges=(1,), policy={"states": ["confirmed", "all_clear", "cancelled"], "to": "all"})
    hood.give_roster(1, hood.oak)
    hood.give_roster(1, hood.far)
    for k in range(1, 31):
        hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED, alert=(1, 100 + k)))
        hood.give_frame(1, hood.far, hood.far.frame(State.CONFIRMED, alert=(1, 100 + k)))
    hood.run(5)
    bridge, node2 = hood.node(1), hood.node(2)
    assert bridge.counts["nearby-sent"] <= NEARBY_BURST + 1 and bridge.counts["nearby-waiting"] >= 50
    alert = bridge.report()
    hood.run(30)
    assert node2.store.get_alert(alert.id) is not None, "the bridge node's own raid reached its block"
    assert node2.counts["rate-limited"] == 0 and "flooding" not in node2.store.troubles()
    hood.run(2400)   # the waiting NEARBY, then their repeats, go out at the budget's pace: all 60 reach every node
    assert len(hood.nearby(3)) == 60 and node2.counts["rate-limited"] == 0


def test_a_block_whose_organizer_key_is_replaced_is_heard_only_under_its_new_key(make_hood):
    """Review finding: after the neighborhood roster replaced a block's (leaked) organizer key,
    the roster kept under the old key went on verifying that key's frames."""
    import copy

    from node.protocol.keys import SigningKey
    from node.protocol.neighborhood import block_entry, sign_neighborhood

    hood = make_hood(bridges=(1,))
    hood.give_roster(1, hood.oak)
    hood.run(5)
    new_oak = Foreign("oak-st")
    body = copy.deepcopy(hood.body)
    body["version"] = 2
    body["blocks"][1] = block_entry("oak-st", new_oak.organizer.public, "Oak St 1-99")
    hood.give(1, topic(HOOD), json.dumps(sign_neighborhood(body, hood.organizer)).encode())
    hood.run(5)
    hood.give_frame(1, hood.oak, hood.oak.frame(State.CONFIRMED, alert=(1, 77)))   # the old, leaked keys
    hood.run(30)
    assert hood.nearby(2) == [] and hood.drops(1).get("unknown-roster") == 1
    hood.give_roster(1, new_oak)                                                     # the block, re-keyed
    hood.give_frame(1, new_oak, new_oak.frame(State.CONFIRMED, alert=(1, 78)))
    hood.run(30)
    assert [(r["counter"], r["state"]) for r in hood.nearby(2)] == [(78, int(State.CONFIRMED))]
    assert SigningKey  # noqa: B018 - imported for the reader: keys are made by Foreign


def test_garbage_from_a_member_block_is_counted_not_logged_each_time(make_hood, caplog):
    """Review finding: deeply nested JSON on a block's roster topic raised RecursionError and
    logged a traceback per message."""
    hood = make_hood(bridges=(1,))
    for _ in range(5):
        hood.give(1, topic(HOOD, "oak-st"), b"[" * 16000)
    hood.run(5)
    assert hood.drops(1) == {"not-silbato": 5}
    assert "Traceback" not in caplog.text and hood.node(1).counts["error"] == 0
