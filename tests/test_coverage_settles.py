"""Coverage that settles sooner after the last building receives (issue 17): the first node to learn
that every building holds a state says so to the whole block in one flooded receipt. A simulated
block on virtual time, a fixed seed."""

from node.protocol import coverage, wire
from node.protocol.alerts import State
from node.sim import Block
from test_out_of_reach import Recorder


def complete_everywhere(block, alert_id, state, n):
    return all(len(node.store.coverage(alert_id, state)[0]) == n for node in block.nodes.values())


def test_the_first_node_to_learn_that_every_building_has_a_state_floods_one_receipt(tmp_path):
    block = Block(tmp_path / "b", 7, "line", seed=1).start()
    try:
        sent = Recorder(block)
        block.scheduler.run_for(120)
        alert = block.nodes[1].report()
        assert block.scheduler.run_until_true(
            lambda: all(n.store.get_alert(alert.id) for n in block.nodes.values()), limit=60) is not None
        settled = block.scheduler.run_until_true(
            lambda: complete_everywhere(block, alert.id, State.REPORTED, 7), limit=300)
        assert settled is not None
        block.scheduler.run_for(60)
        flooded = [(i, f) for i in block.nodes for f in sent.frames(i, flooded=True)
                   if isinstance(f, wire.ReceiptFrame)]
        # One, or two when a second node put it together before it heard the first: not one a node.
        assert 1 <= len(flooded) <= 2, flooded
        for _, frame in flooded:
            assert coverage.from_bitmap(frame.received, block.nodes[1].members) == set(range(1, 8))
        first = min(t for t, sender, payload, hops in sent.sent if hops != 0 and payload[1] == wire.FrameType.RECEIPT)
        # The flood, not a receipt hop at a time, told the rest of the line.
        assert settled - first < 5.0, (first, settled)
    finally:
        block.stop()
