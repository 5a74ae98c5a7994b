"""Coverage that settles sooner after the last building receives (issue 17): the first node to learn
that every building holds a state says so to the whole block in one flooded receipt, and no node
waits more than 160 s to say again what a neighbour may lack. A simulated block on virtual time,
fixed seeds."""

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


def test_a_node_rechecks_its_neighbours_at_least_every_160_s_however_many_receipts_it_sent(tmp_path):
    """The recheck (a receipt can be lost: say it again, 20, 40, 80, 160 s after, until every live
    neighbour's own receipt shows it knows as much) stops doubling at 160 s. Doubling on, a node that
    learned the last buildings after its sixth receipt rechecked 640 s later, and a leaf whose one
    neighbour's news was lost stayed short of the truth for good (benchmark P10's line, seed 3, and a
    30-node block, seed 4, with the flooded receipt above)."""
    block = Block(tmp_path / "b", 3, "line", seed=2).start()
    try:
        block.scheduler.run_for(120)
        alert = block.nodes[1].report()
        block.scheduler.run_for(60)
        middle = block.nodes[2]
        receipts = middle.receipts
        with middle.lock:
            receipt = receipts._receipts[(alert.id, State.REPORTED)]
            receipt.sent = 6                      # as if it had spent six receipts on the state already
            receipts.schedule(alert.id, State.REPORTED, block.clock(), news=True)
        before = middle.counts["receipt"]
        assert block.scheduler.run_until_true(lambda: middle.counts["receipt"] > before, limit=30) is not None
        assert receipt.recheck - block.clock() <= 160.0 + 0.5, receipt.recheck - block.clock()
    finally:
        block.stop()
