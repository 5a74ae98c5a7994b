"""End to end: a simulated block of complete nodes, on virtual time with fixed seeds."""

import pytest

from node.protocol.alerts import State
from node.sim import Block

HOLD = 0.05  # wall-clock seconds for the button hold in these tests


@pytest.fixture
def make_block(tmp_path):
    blocks = []

    def make(n=5, topology="line", **kw):
        block = Block(tmp_path / f"block{len(blocks)}", n, topology, hold_time=HOLD, **kw).start()
        blocks.append(block)
        return block

    yield make
    for block in blocks:
        block.stop()


def press_and_wait(block, i):
    """Hold node i's button past hold_time and wait (on the node's change event) for its report."""
    node = block.nodes[i]
    block.button_pin(i).drive_low()
    assert node.wait_for(lambda: bool(node.store.active_alerts()), timeout=10), "the hold raised nothing"
    block.button_pin(i).drive_high()
    return node.store.active_alerts()[0]


def states(block, alert_id):
    return {i: (n.store.get_alert(alert_id).state if n.store.get_alert(alert_id) else None)
            for i, n in block.nodes.items()}


def run_until_all(block, alert_id, state, limit):
    return block.scheduler.run_until_true(
        lambda: all(s is state for s in states(block, alert_id).values()), limit=limit, step=0.5)


def test_alert_crosses_a_five_node_line_through_its_whole_lifecycle(make_block):
    block = make_block()
    alert = press_and_wait(block, 1)
    assert alert.state is State.REPORTED and alert.reporter == 1
    t_reported = run_until_all(block, alert.id, State.REPORTED, limit=60)
    assert t_reported is not None, states(block, alert.id)
    # node 5 heard it through four relays: every hop takes at least one airtime
    received = block.nodes[5].store.get_alert(alert.id).opened_at - block.EPOCH
    assert 4 * 0.29 < received < 10

    block.nodes[3].act("confirm", alert.id)
    assert run_until_all(block, alert.id, State.CONFIRMED, limit=60) is not None, states(block, alert.id)
    block.nodes[1].act("all_clear", alert.id)
    assert run_until_all(block, alert.id, State.ALL_CLEAR, limit=60) is not None, states(block, alert.id)

    events = block.nodes[5].store.events(alert.id)
    assert [(e["state"], e["signer"], e["source"]) for e in events if e["outcome"] in ("new", "changed")] == [
        (State.REPORTED, 1, "air"), (State.CONFIRMED, 3, "air"), (State.ALL_CLEAR, 1, "air")]


def test_every_node_gets_it_with_twenty_percent_loss_on_every_link(make_block):
    block = make_block(loss=0.2, seed=7)
    alert = press_and_wait(block, 1)
    t = run_until_all(block, alert.id, State.REPORTED, limit=1800)
    assert t is not None, states(block, alert.id)
    block.nodes[3].act("confirm", alert.id)
    assert run_until_all(block, alert.id, State.CONFIRMED, limit=1800) is not None, states(block, alert.id)
    block.nodes[1].act("all_clear", alert.id)
    assert run_until_all(block, alert.id, State.ALL_CLEAR, limit=1800) is not None, states(block, alert.id)


@pytest.mark.parametrize("seed", range(10))
def test_lossy_line_delivers_to_all_within_the_repeat_schedule(make_block, seed):
    """Re-sends make delivery a matter of time, not luck: ten seeds, all nodes, bounded time."""
    block = make_block(loss=0.2, seed=seed)
    alert = block.nodes[1].report()
    assert run_until_all(block, alert.id, State.REPORTED, limit=1800) is not None, states(block, alert.id)


def test_a_report_siren_sounds_on_other_nodes(make_block):
    block = make_block(n=3)
    siren = block.siren_pin(3)
    alert = block.nodes[1].report()
    assert run_until_all(block, alert.id, State.REPORTED, limit=60) is not None
    assert any(state for _, state in siren.states), "node 3's siren never came on"


def test_a_second_report_of_the_same_place_merges_into_one_incident(make_block):
    block = make_block(n=3)
    first = block.nodes[1].report()
    block.scheduler.run_for(60)
    again = press_and_wait_again(block, 1)
    assert again.id == first.id
    block.scheduler.run_for(60)
    for node in block.nodes.values():
        assert [a.id for a in node.store.active_alerts()] == [first.id]


def press_and_wait_again(block, i):
    node = block.nodes[i]
    before = len(node.store.events())
    block.button_pin(i).drive_low()
    assert node.wait_for(lambda: len(node.store.events()) > before, timeout=10)
    block.button_pin(i).drive_high()
    return node.store.active_alerts()[0]


def test_reports_from_two_nodes_about_one_place_merge_everywhere(make_block):
    block = make_block(n=3)
    a = block.nodes[1].report(location=102)
    b = block.nodes[3].report(location=102)  # before either heard the other
    block.scheduler.run_for(120)
    for node in block.nodes.values():
        active = node.store.active_alerts()
        assert len(active) == 1, (node.id, active)
        assert node.store.resolve(a.id) == node.store.resolve(b.id) == active[0].id
    # a confirm of either id lands on each node's one incident
    block.nodes[2].act("confirm", b.id)
    block.scheduler.run_for(120)
    for node in block.nodes.values():
        assert [x.state for x in node.store.active_alerts()] == [State.CONFIRMED]


def test_grid_and_random_topologies_reach_every_node(make_block):
    for topology in ("grid", "random"):
        block = make_block(n=9, topology=topology)
        alert = block.nodes[1].report()
        assert run_until_all(block, alert.id, State.REPORTED, limit=60) is not None, topology


def test_an_unplugged_radio_keeps_the_frame_and_sends_it_once_back(make_block):
    block = make_block(n=3)
    radio = block.air.radios[1]
    radio.plugged = False
    alert = block.nodes[1].report()
    block.scheduler.run_for(5)
    assert block.nodes[1].store.troubles().get("radio") == "radio unplugged"
    assert block.nodes[3].store.get_alert(alert.id) is None
    assert block.nodes[1].store.pending(), "the frame must wait in the outbox"
    radio.plugged = True
    assert run_until_all(block, alert.id, State.REPORTED, limit=30) is not None
    assert "radio" not in block.nodes[1].store.troubles()
    assert block.nodes[1].store.pending() == []


def test_the_demo_tells_its_caller_where_to_look_and_prints_nothing(tmp_path, capfd):
    import json
    import threading

    from test_cli import free_port_base

    from node.sim import run_demo

    base = free_port_base(2)
    stopping, said = threading.Event(), []

    def say(line):
        said.append(line)
        if "Ctrl-C stops the block" in line:
            stopping.set()

    # In a thread: run_demo takes SIGTERM only in the main thread, and pytest's must stay.
    demo = threading.Thread(target=run_demo, args=(tmp_path / "demo", 2, "line"), daemon=True,
                            kwargs={"port_base": base, "loss": 0.0, "preset": "MEDIUM_FAST", "seed": 1,
                                    "scale": 5.0, "stopping": stopping, "say": say})
    demo.start()
    demo.join(60)
    assert not demo.is_alive()
    assert f"  node 2 page: http://127.0.0.1:{base + 2}/" in said
    assert json.loads(said[-1]) == {"stopped": True, "state": str(tmp_path / "demo")}
    assert capfd.readouterr().out == ""
