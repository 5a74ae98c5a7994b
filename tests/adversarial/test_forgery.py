"""Forgery: frames signed by an unknown key, a revoked key or a key from an older roster, and every
single-bit flip of every kind of valid frame, are refused by a running node, which changes nothing.

The codec's own bit-flip test (``tests/test_wire.py``) covers one frame per type; this one
delivers flips of every seed frame (every kind, state and size, up to 119 bytes) to a node.
"""

from __future__ import annotations

import pytest

from adversary import TALLY, forged_frames, install, sign, siren, snapshot, sounded, valid_frames
from node.protocol.alerts import Kind, State
from node.daemon.node import Node
from node.hardware.devices import mock_factory
from node.protocol.wire import TransitionFrame


@pytest.fixture
def node(tmp_path):
    """Node 2 of the adversary's block (roster v2, node 4 revoked, node 3's key replaced)."""
    node = Node(install(tmp_path)[2], pin_factory=mock_factory()).start()
    siren(node).clear_states()
    yield node
    node.stop()


@pytest.mark.parametrize("why, reason", [
    ("stranger's key, as node 1", "bad-signature"),
    ("stranger's key, as an unknown origin", "unknown-key"),
    ("revoked node 4's own key", "revoked-key"),
    ("node 3's key from roster v1", "bad-signature"),
    ("node 2's key, as node 1", "bad-signature"),
    ("node 1's key, for another block", "bad-signature"),
])
def test_a_frame_signed_by_the_wrong_key_changes_nothing(node, why, reason):
    before = snapshot(node)
    node.counts.clear()
    node.on_frame(forged_frames()[why])
    TALLY["forged frames (wrong key)"] += 1
    assert dict(node.counts) == {reason: 1}
    assert snapshot(node) == before
    assert not sounded(node)


def test_the_same_report_signed_right_is_taken(node):
    """The control for the test above: the forged frames fail for their key, not their content."""
    node.on_frame(sign(TransitionFrame(1, 5000, 1, 5000, Kind.RAID, State.REPORTED, 101)))
    assert node.counts["accepted"] == 1
    assert node.store.get_alert("1-5000").state is State.REPORTED
    assert node.wait_for(lambda: sounded(node), timeout=5)


def test_every_single_bit_flip_of_every_valid_frame_is_refused(node):
    before = snapshot(node)
    node.counts.clear()
    flips = 0
    for frame in valid_frames():
        for bit in range(len(frame) * 8):
            flipped = bytearray(frame)
            flipped[bit // 8] ^= 1 << bit % 8
            node.on_frame(bytes(flipped))
            flips += 1
    TALLY["forged frames (single-bit flips)"] += flips
    assert flips > 7_000
    assert node.counts["accepted"] == 0 and node.counts["error"] == 0, node.counts
    assert sum(node.counts.values()) == flips
    assert snapshot(node) == before
    assert not sounded(node)
    # and each unflipped frame is still taken: the flips were refused for the flip
    for frame in valid_frames():
        node.on_frame(frame)
    # (those the node signed itself come back to it as its own echo: dropped as such; heartbeats and
    # receipts stamped long before the node's block clock are old news, dropped before the flood limit)
    taken = ("accepted", "own-echo", "stale-heartbeat", "stale-receipt")
    assert sum(node.counts[k] for k in taken) == len(valid_frames()), node.counts
