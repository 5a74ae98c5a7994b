"""Coverage that re-converges after an outage, an all clear as fast as the report, and repairs
driven by receipts: a simulated block on virtual time, fixed seeds (issue 17, items 2 and 3)."""

import pytest

from node.protocol import coverage, wire
from node.protocol.alerts import State, parse_alert_id
from node.sim import Block

EVERYONE = [1, 2, 3, 4, 5]


@pytest.fixture
def make_block(tmp_path):
    blocks = []

    def make(n, topology="line", **kw):
        block = Block(tmp_path / f"b{len(blocks)}", n, topology, **kw).start()
        blocks.append(block)
        return block

    yield make
    for block in blocks:
        block.stop()


def has(block, i, alert_id, state):
    alert = block.nodes[i].store.get_alert(alert_id)
    return alert is not None and alert.state is state


def all_have(block, alert_id, state):
    return all(has(block, i, alert_id, state) for i in block.nodes)


def coverage_everywhere(block, alert_id):
    return all(block.nodes[i].coverage_view(alert_id)["received"] == EVERYONE for i in block.nodes)


# Bound: every node's coverage equals the truth (5 of 5) within this many seconds of the last
# building receiving the state, after the middle node's radio comes back. Before: 62-91 s, or never
# (stuck at "missing: B4, B5" until the re-sends ran out); now 25-65 s here (the target, 30 s
# p95, is not met yet in this line: hidden neighbours' receipts still collide).
CONVERGED_WITHIN = 70.0


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("state", ["confirm", "all_clear"])
def test_coverage_converges_on_every_node_after_the_middle_node_was_away(make_block, seed, state):
    block = make_block(5, seed=seed)
    run = block.scheduler
    run.run_for(120)
    alert = block.nodes[1].report()
    assert run.run_until_true(lambda: all_have(block, alert.id, State.REPORTED), limit=60) is not None
    if state == "all_clear":
        run.run_for(30)
        block.nodes[2].act("confirm", alert.id)
        assert run.run_until_true(lambda: all_have(block, alert.id, State.CONFIRMED), limit=60) is not None
    run.run_for(30)
    block.air.radios[3].plugged = False             # the middle node's radio is away
    run.run_for(20)
    block.nodes[2 if state == "confirm" else 1].act(state, alert.id)
    target = State.CONFIRMED if state == "confirm" else State.ALL_CLEAR
    run.run_for(90)
    assert not has(block, 4, alert.id, target) and not has(block, 5, alert.id, target)
    block.air.radios[3].plugged = True              # back
    last = run.run_until_true(lambda: all_have(block, alert.id, target), limit=180, step=0.5)
    assert last is not None
    converged = run.run_until_true(lambda: coverage_everywhere(block, alert.id), limit=600, step=0.5)
    views = {i: block.nodes[i].coverage_view(alert.id)["summary"] for i in block.nodes}
    assert converged is not None and converged - last <= CONVERGED_WITHIN, (converged and converged - last, views)


# Bound: at 0% loss the all clear reaches the far end of a 5-node line, even when the captain clears
# just after the confirm, in at most 3 times the report's time at the median and 8 times at worst
# (the report takes 2-3 s). Before: 26-34 s in four of these six cases (a heartbeat's repair); now 2.5-17 s.
def test_an_all_clear_reaches_the_far_end_as_fast_as_the_report(make_block):
    slowest = []
    for seed, gap in [(3, 2.5), (4, 0.5), (4, 1.5), (5, 1.0), (6, 0.5), (7, 4.0)]:
        block = make_block(5, seed=seed)
        run = block.scheduler
        run.run_for(60)
        alert = block.nodes[1].report()
        start = run.now()
        report = run.run_until_true(lambda: has(block, 5, alert.id, State.REPORTED), limit=60, step=0.05) - start
        run.run_for(10)
        block.nodes[3].act("confirm", alert.id)
        assert run.run_until_true(lambda: has(block, 5, alert.id, State.CONFIRMED), limit=60, step=0.05)
        run.run_for(gap)
        block.nodes[1].act("all_clear", alert.id)
        start = run.now()
        done = run.run_until_true(lambda: has(block, 5, alert.id, State.ALL_CLEAR), limit=120, step=0.05)
        slowest.append((seed, gap, round(report, 1), done and round(done - start, 1)))
        block.stop()
    ratios = sorted(took / report if took is not None else float("inf") for _, _, report, took in slowest)
    assert ratios[len(ratios) // 2] <= 3 and ratios[-1] <= 8, slowest


def test_a_neighbour_behind_in_the_receipts_is_repaired_before_its_next_heartbeat(make_block):
    block = make_block(3, seed=2)
    run = block.scheduler
    run.run_for(120)
    alert = block.nodes[1].report()
    assert run.run_until_true(lambda: all_have(block, alert.id, State.REPORTED), limit=60) is not None
    run.run_for(30)
    block.air.radios[3].plugged = False
    block.nodes[1].act("cancel", alert.id)
    assert run.run_until_true(lambda: has(block, 2, alert.id, State.CANCELLED), limit=60) is not None
    run.run_for(10)
    block.nodes.pop(1).stop()                       # no re-sends: node 2 alone can tell node 3
    block.air.radios[1].plugged = False
    block.air.radios[3].plugged = True
    two, three = block.nodes[2], block.nodes[3]
    # Node 2 misses node 3's next heartbeat (which would show it is behind): the one after is far off.
    block.air.set_loss(2, 3, 1.0)
    beats = three.counts["heartbeat"]
    assert run.run_until_true(lambda: three.counts["heartbeat"] > beats, limit=120, step=0.05) is not None
    run.run_for(1)
    block.air.set_loss(2, 3, 0.0)
    next_heartbeat = three.liveness.next_heartbeat
    assert not has(block, 3, alert.id, State.CANCELLED)
    # Node 3's receipt of the report reaches node 2: its bitmaps show node 3 lacks the withdrawal.
    with three.store.transaction():
        counter = three.store.next_counter()
    receipt = wire.ReceiptFrame(3, counter, *parse_alert_id(alert.id), State.REPORTED, three.roster.version,
                                coverage.to_bitmap({1, 2, 3}, three.members), coverage.to_bitmap({1, 2, 3}, three.members),
                                three.signer.stamp(block.clock()))
    heard = run.now()
    two.on_frame(wire.encode(receipt, three.key, three.roster.block))
    repaired = run.run_until_true(lambda: has(block, 3, alert.id, State.CANCELLED), limit=60, step=0.05)
    assert repaired is not None and repaired < next_heartbeat - block.clock() + run.now() and repaired - heard < 10, \
        (repaired and repaired - heard, next_heartbeat - block.clock())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_node_back_after_five_minutes_gets_every_alert_raised_meanwhile(make_block, seed):
    """Two alerts raised at both ends while the middle node's radio is away for 5 minutes: its
    heartbeat shows only its latest alert, and the repairs of the alerts' gaps were spent while it
    was away, so only its neighbours' noticing it is back can bring it both (benchmark P10)."""
    block = make_block(5, seed=seed)
    run = block.scheduler
    run.run_for(200)
    block.air.radios[3].plugged = False
    run.run_for(10)
    raised = [block.nodes[1].report(), block.nodes[5].report(location=105)]
    run.run_for(290)
    block.air.radios[3].plugged = True
    back = run.now()
    done = run.run_until_true(lambda: all(all_have(block, a.id, State.REPORTED) and coverage_everywhere(block, a.id)
                                          for a in raised), limit=600)
    assert done is not None and done - back <= 120, \
        f"seed {seed}: every node held both alerts and saw everyone had them {done and done - back} s after the return"


def test_a_neighbour_that_needed_a_repair_has_every_later_state_relayed_whatever_copies_are_heard(make_block):
    """A building joined to the block by one node in its dense middle hears only that node, and
    that node hears enough copies from its other neighbours to stand down: once the building had to
    be repaired (P3 seed 1: node 15, off node 7), its neighbour relays every new state."""
    block = make_block(3, seed=1)
    run = block.scheduler
    run.run_for(300)
    two = block.nodes[2]
    block.air.set_loss(2, 3, 1.0)
    alert = block.nodes[1].report()
    assert run.run_until_true(lambda: has(block, 2, alert.id, State.REPORTED), limit=30) is not None
    assert two.relays.needy(block.clock()) == set()
    run.run_for(15)                                  # node 2's relay and copies are long past
    block.air.set_loss(2, 3, 0.0)
    assert run.run_until_true(lambda: has(block, 3, alert.id, State.REPORTED), limit=300) is not None
    assert two.counts["repair"] >= 1 and two.relays.needy(block.clock()) == {3}
    relayed = two.counts["relay"]
    block.nodes[1].act("cancel", alert.id)
    assert run.run_until_true(lambda: two.counts["relay-for-needy"] >= 1, limit=30, step=0.05) is not None
    for _ in range(3):   # copies heard from other neighbours, as in a dense middle
        two.relays.count_copy((alert.id, State.CANCELLED))
    assert run.run_until_true(lambda: two.counts["relay"] > relayed, limit=5, step=0.05) is not None
    assert two.counts["relay-suppressed"] == 0


def test_a_reporter_with_a_needy_neighbour_sends_its_second_copy_whatever_copy_comes_back(make_block):
    """Node 2 reports in the middle of a line; node 3, which needed a repair before, loses the
    first copy, and node 1 (a dead end) passes it back. A copy does not say who sent it: the
    reporter's second copy still goes, so node 3 has the report within seconds, not at a repair
    much later (P3 seed 1: a reporter whose one weak link into the block lost the first copy kept
    the whole block waiting 10-50 s, because a neighbour at the edge passed it back)."""
    block = make_block(3, seed=1)
    run = block.scheduler
    run.run_for(300)
    reporter, edge = block.nodes[2], block.nodes[1]
    block.air.set_loss(2, 3, 1.0)                    # node 3 misses an alert, and is repaired
    earlier = block.nodes[1].report()
    run.run_for(20)
    block.air.set_loss(2, 3, 0.0)
    assert run.run_until_true(lambda: has(block, 3, earlier.id, State.REPORTED), limit=300) is not None
    assert reporter.relays.needy(block.clock()) == {3}
    run.run_for(30)
    block.air.set_loss(2, 3, 1.0)
    relayed, heard = reporter.counts["relay"], edge.counts["relay"]
    alert = reporter.report(location=102)
    assert run.run_until_true(lambda: edge.counts["relay"] > heard, limit=10, step=0.05) is not None
    run.run_for(0.5)   # node 1's relay is on air and heard back
    assert reporter.counts["relay"] == relayed, "the second copy was due before node 1's relay: nothing tested"
    block.air.set_loss(2, 3, 0.0)
    got = run.run_until_true(lambda: has(block, 3, alert.id, State.REPORTED), limit=6, step=0.05)
    assert got is not None, reporter.counts
    assert reporter.counts["relay"] >= relayed + 1


def test_a_node_that_learned_it_was_behind_relays_the_state_when_it_comes_whatever_copies_are_heard(make_block):
    """A neighbour's receipt or heartbeat showed node 3 a state it lacked: the flood missed this
    part of the block, so whoever is beyond node 3 probably lacks it too. When the repair brings
    it, node 3 relays it whatever copies it hears (P3 seed 2: a confirm
    crossed a chain of six buildings one late repair at a time, 17-37 s)."""
    block = make_block(3, seed=1)
    run = block.scheduler
    run.run_for(300)
    three = block.nodes[3]
    block.air.set_loss(2, 3, 1.0)
    alert = block.nodes[1].report()
    assert run.run_until_true(lambda: has(block, 2, alert.id, State.REPORTED), limit=30) is not None
    run.run_for(5)                                   # node 2's relay is long gone; node 3 heard nothing
    block.air.set_loss(2, 3, 0.0)
    assert run.run_until_true(lambda: three.relays._behind or has(block, 3, alert.id, State.REPORTED),
                              limit=300, step=0.05) is not None
    assert not has(block, 3, alert.id, State.REPORTED), "repaired before it knew it was behind: nothing tested"
    relayed = three.counts["relay"]
    assert run.run_until_true(lambda: has(block, 3, alert.id, State.REPORTED), limit=120, step=0.05) is not None
    for _ in range(3):   # copies heard from other neighbours, as in a dense middle
        three.relays.count_copy((alert.id, State.REPORTED))
    assert run.run_until_true(lambda: three.counts["relay"] > relayed, limit=10, step=0.05) is not None
    assert three.counts["relay-behind"] == 1 and three.counts["relay-suppressed"] == 0
