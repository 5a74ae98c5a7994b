"""Flood: a rostered node gone rogue sends valid frames at the channel's maximum rate.

The per-origin rate limit (``node.protocol.ratelimit.OriginRateLimit``) lets ``FLOOD_BURST`` of its
frames through, drops the rest before they touch the store, and shows
``TROUBLE (flooding)`` naming the building; incident merging folds what got through into
one incident, so the siren sounds once. Forged and replayed floods spend nobody's allowance.
"""

from __future__ import annotations

import pytest

from adversary import TALLY, sign
from node.protocol import wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.protocol.alerts import Kind, State
from node.protocol.ratelimit import FLOOD_BURST, FLOOD_RATE, OriginRateLimit
from node.protocol.keys import SigningKey
from node.sim import Block

PRESET = "SHORT_FAST"  # the fastest channel: the worst flood
FLOOD = 600            # frames: a minute of the channel on SHORT_FAST
# The channel's maximum rate: one transition after another, back to back.
GAP = time_on_air(wire.frame_size(wire.FrameType.TRANSITION) + MESH_OVERHEAD, PRESET)


# -- the rate limit itself ----------------------------------------------------------------------


def test_a_legitimate_node_is_never_limited():
    """Well above the measured worst case (a burst of 8, then about 3 frames a minute)."""
    limit = OriginRateLimit()
    now = 0.0
    assert all(limit.allow(1, now) for _ in range(FLOOD_BURST // 2))
    for _ in range(600):  # then one frame every 6 s for an hour
        now += 6.0
        assert limit.allow(1, now)
    assert not limit.flooding


def test_a_flood_at_the_channel_rate_gets_one_burst_through_in_all():
    limit = OriginRateLimit()
    taken = sum(limit.allow(7, i * GAP) for i in range(10 * FLOOD))
    assert taken == FLOOD_BURST
    assert limit.flooding == {7}
    assert limit.allow(8, 10 * FLOOD * GAP), "another origin is not affected"


def test_a_flooder_is_heard_again_once_it_calms_down():
    limit = OriginRateLimit()
    for i in range(FLOOD):
        limit.allow(7, i * GAP)
    end = FLOOD * GAP
    assert limit.calmed(end + 10) == []
    assert limit.calmed(end + FLOOD_BURST / FLOOD_RATE) == [7]
    assert limit.allow(7, end + FLOOD_BURST / FLOOD_RATE + 1)


def test_a_flooder_that_slows_to_a_legitimate_pace_is_heard_again():
    limit = OriginRateLimit()
    for i in range(FLOOD):
        limit.allow(7, i * GAP)
    now, taken = FLOOD * GAP, []
    for _ in range(100):  # then one frame every 6 s (10 a minute, half the limit)
        now += 6.0
        taken.append(limit.allow(7, now))
    assert not any(taken[:20]) and all(taken[-50:])


def test_a_clock_set_back_locks_no_one_out():
    limit = OriginRateLimit()
    assert limit.allow(1, 1_800_000_000.0)
    assert all(limit.allow(1, 1_800_000_000.0 - 365 * 86400 + i * 6.0) for i in range(100))


def test_the_flooding_trouble_comes_and_goes_with_the_flood(tmp_path):
    """On one node, frames handed straight to it: the trouble names the building, and clears
    once the origin calms down, whether its next frame or the next tick notices first."""
    from adversary import install
    from node.daemon.node import Node
    from node.hardware.devices import mock_factory

    clock = [1_800_000_000.0]
    node = Node(install(tmp_path)[2], pin_factory=mock_factory(), clock=lambda: clock[0]).start()
    try:
        counter = iter(range(1, 10_000))

        def heartbeat(origin: int) -> bytes:
            # stamped with the node's block time: fresh news (an old one is dropped before the flood limit)
            return sign(wire.HeartbeatFrame(origin, next(counter), 0, 2, 0, 0, 0, b"", node.signer.stamp(clock[0])))

        for _ in range(FLOOD):
            clock[0] += GAP
            node.on_frame(heartbeat(1))
        assert node.counts["accepted"] == FLOOD_BURST and node.counts["rate-limited"] == FLOOD - FLOOD_BURST
        assert node.store.troubles()["flooding"].startswith("B1 (Building 1): ")
        node.on_frame(heartbeat(3))
        assert node.counts["accepted"] == FLOOD_BURST + 1, "another building is heard meanwhile"
        clock[0] += FLOOD_BURST / FLOOD_RATE + 1
        node.on_frame(heartbeat(1))  # calm again: taken, and the next tick clears the trouble
        assert node.counts["accepted"] == FLOOD_BURST + 2
        node.tick()
        assert "flooding" not in node.store.troubles()
        for _ in range(FLOOD):  # a second flood; this time it just stops, and a tick notices
            clock[0] += GAP
            node.on_frame(heartbeat(1))
        assert "flooding" in node.store.troubles()
        clock[0] += FLOOD_BURST / FLOOD_RATE + 1
        node.tick()
        assert "flooding" not in node.store.troubles()
    finally:
        node.stop()


# -- a rogue node on the air ------------------------------------------------------------------------


@pytest.fixture
def block(tmp_path):
    b = Block(tmp_path / "block", 3, "line", preset=PRESET, seed=5, hold_time=0.05).start()
    yield b
    b.stop()


def incidents(node) -> list[str]:
    return [a.id for a in node.store.alerts()]


def sounding_events(node, alert_id: str) -> list[dict]:
    """The events that sounded a siren: a new incident or a change of state."""
    return [e for e in node.store.events(alert_id) if e["outcome"] in ("new", "changed")]


def flood(block, frames: list[bytes]) -> None:
    """Node 1's radio sends ``frames`` back to back, as fast as the channel allows; wait until all are out."""
    radio = block.air.radios[1]
    for data in frames:
        radio.emit(data)
    assert block.scheduler.run_until_true(lambda: not radio.queue, limit=len(frames) * GAP * 3) is not None


def rogue_counters(block, count: int) -> list[int]:
    """Node 1 gone rogue signs with its own counters, reserved as its daemon would (never reused)."""
    node = block.nodes[1]
    with node.store.transaction():
        return [node.store.next_counter() for _ in range(count)]


def rogue_reports(block, count: int, locations=(101,)) -> list[bytes]:
    """Fresh, validly signed RAID reports from node 1, one after another."""
    key, roster = block.nodes[1].key, block.nodes[1].roster
    return [wire.encode(wire.TransitionFrame(1, c, 1, c, Kind.RAID, State.REPORTED, locations[c % len(locations)]),
                        key, roster.block) for c in rogue_counters(block, count)]


def test_a_rogue_node_flooding_reports_makes_one_incident_and_a_trouble(block):
    frames = rogue_reports(block, FLOOD)
    flood(block, frames)
    TALLY["flood frames sent (rogue node)"] += len(frames)
    first = "1-%d" % wire.peek_origin(frames[0])[1]
    for i in (2, 3):
        node = block.nodes[i]
        # Node 3 hears the flood through node 2's rebroadcasts, which wait until node 1 stops.
        assert block.scheduler.run_until_true(lambda: node.counts["rate-limited"] > FLOOD / 3,
                                              limit=len(frames) * GAP * 3) is not None
        assert incidents(node) == [first], "one incident, not hundreds"
        assert len(sounding_events(node, first)) == 1, "the siren sounds once"
        assert node.counts["accepted"] <= FLOOD_BURST + 10  # its burst, and the block's own frames
        assert len(node.store.events()) <= FLOOD_BURST, "dropped frames never touch the store"
        assert "B1 (Building 1)" in node.store.troubles()["flooding"]
        TALLY["flood frames dropped by the rate limit"] += node.counts["rate-limited"]
    # The rogue stops (and node 2 has passed its flood on): the trouble clears, and node 1's own frames are heard again.
    assert block.scheduler.run_until_true(lambda: not any(r.queue for r in block.air.radios.values()),
                                          limit=len(frames) * GAP * 3) is not None
    block.scheduler.run_for(FLOOD_BURST / FLOOD_RATE + 30)
    assert all("flooding" not in block.nodes[i].store.troubles() for i in (2, 3))
    report = block.nodes[1].report(location=102)
    assert block.scheduler.run_until_true(
        lambda: all(block.nodes[i].store.get_alert(report.id) for i in (2, 3)), limit=60) is not None


def test_a_rogue_node_reporting_every_place_and_withdrawing_is_bounded(block):
    """Reports of every place, each withdrawn at once: merging cannot fold these, the rate limit bounds them."""
    key, roster = block.nodes[1].key, block.nodes[1].roster
    frames = []
    counters = rogue_counters(block, FLOOD)
    for k in range(0, FLOOD, 2):
        c, location = counters[k], 101 + k // 2 % 3
        frames.append(wire.encode(wire.TransitionFrame(1, c, 1, c, Kind.RAID, State.REPORTED, location), key,
                                  roster.block))
        frames.append(wire.encode(wire.TransitionFrame(1, counters[k + 1], 1, c, Kind.RAID, State.CANCELLED,
                                                       location), key, roster.block))
    flood(block, frames)
    TALLY["flood frames sent (rogue node)"] += len(frames)
    # node 3 hears it through node 2's rebroadcasts, which wait until node 1 stops
    assert block.scheduler.run_until_true(lambda: not any(r.queue for r in block.air.radios.values()),
                                          limit=len(frames) * GAP * 3) is not None
    for i in (2, 3):
        # At most a burst of frames is taken; relayed, reports and withdrawals need not arrive in pairs.
        assert 1 <= len(incidents(block.nodes[i])) <= FLOOD_BURST, "bounded by the burst, not hundreds"


def test_a_legitimate_node_is_heard_during_a_flood(block):
    frames = rogue_reports(block, FLOOD)
    for data in frames:
        block.air.radios[1].emit(data)
    block.scheduler.run_for(10)
    report = block.nodes[3].report()
    assert block.scheduler.run_until_true(lambda: block.nodes[2].store.get_alert(report.id) is not None,
                                          limit=FLOOD * GAP * 3) is not None
    assert "B3" not in block.nodes[2].store.troubles().get("flooding", "")


def test_forged_and_replayed_floods_spend_nobody_s_allowance(block):
    """Frames the limit counts are verified ones: a forger or a replayer cannot silence node 1."""
    node = block.nodes[2]
    stranger = SigningKey.generate()
    forged = [wire.encode(wire.TransitionFrame(1, c, 1, c, Kind.RAID, State.REPORTED, 101), stranger,
                          node.roster.block) for c in range(1_000_000, 1_000_000 + FLOOD)]
    recorded = rogue_reports(block, 1)
    node.on_frame(recorded[0])
    for data in forged + recorded * FLOOD:
        node.on_frame(data)
    TALLY["flood frames sent (forged or replayed)"] += 2 * FLOOD
    assert node.counts["bad-signature"] == FLOOD and node.counts["replayed"] >= FLOOD
    assert node.counts["rate-limited"] == 0 and "flooding" not in node.store.troubles()
    node.on_frame(rogue_reports(block, 1, locations=(102,))[0])  # node 1's next frame is taken
    assert [a.location for a in node.store.active_alerts()] == [101, 102]
    assert node.counts["rate-limited"] == 0


def test_the_adversary_s_own_frames_are_well_formed():
    """The flood's frames are valid: the rate limit, not the codec, is what stops them."""
    from adversary import ROSTER

    data = sign(wire.TransitionFrame(1, 7, 1, 7, Kind.RAID, State.REPORTED, 101))
    assert wire.decode(data, ROSTER).alert_id == "1-7"
