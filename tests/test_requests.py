"""Captains' requests: each one's outcome commits with its effect (issue 17, item 10)."""

from __future__ import annotations

import pytest

from node.daemon.node import Node
from node.errors import TransitionError
from node.hardware.devices import mock_factory
from node.protocol import wire
from node.sim import provision
from node.store import WEB_TABLES, Store


@pytest.fixture
def node(tmp_path):
    cfg = provision(tmp_path / "block", 2).configs[0]
    node = Node(cfg, pin_factory=mock_factory(), clock=lambda: 1_800_000_000.0).start()
    yield node
    node.stop()


class Crash(BaseException):
    """The daemon killed at this point (kill -9 commits nothing more)."""


@pytest.mark.parametrize("actions", [("raise",), ("raise", "cancel")], ids=["raise", "cancel"])
def test_a_crash_between_a_requests_effect_and_its_outcome_neither_repeats_nor_misreports_it(
        node, monkeypatch, actions):
    """Issue 17, item 10: the outcome of a captain's request commits with its effect, or neither does."""
    now = node.clock()
    alert_id = ""
    for action in actions:
        with Store(node.config.db_file, writes=WEB_TABLES) as web:
            request = web.add_request(action, captain="ana", now=now, location=node.location, alert_id=alert_id)
        finish = node.store.finish_request
        crashes = []

        def crash_once(*args, **kwargs):
            if not crashes:
                crashes.append(args)
                raise Crash()
            return finish(*args, **kwargs)

        monkeypatch.setattr(node.store, "finish_request", crash_once)
        with pytest.raises(Crash):
            node.chores.process_requests(now)
        monkeypatch.setattr(node.store, "finish_request", finish)
        node.process_requests()   # the daemon after its restart: the request is still pending
        row = node.store.get_request(request)
        assert row["status"] == "signed", (action, row)
        alert_id = row["result_alert_id"]
        events = [(e["state"], e["outcome"]) for e in node.store.events(alert_id)]
        assert all(outcome not in ("rejected", "duplicate") for _, outcome in events), events
    frames = [wire.decode(frame, node.roster) for _, frame in node.store.db.execute(
        "SELECT seq, frame FROM outbox").fetchall()]
    transitions = [f for f in frames if isinstance(f, wire.TransitionFrame)]
    assert len(transitions) == len(actions), "each request signed exactly one frame"


def test_a_quick_cancel_leaves_no_refusal_in_any_incident_log(tmp_path):
    """Issue 17, item 4: a neighbour's relay of REPORTED that lands after CANCELLED is old news."""
    from node.sim import Block

    block = Block(tmp_path / "b", 5, "line", scale=None, seed=4).start()
    try:
        alert = block.nodes[1].report()
        block.scheduler.run_for(0.8)   # the report is on its way along the line
        block.nodes[1].act("cancel", alert.id)
        block.scheduler.run_for(120)
        for number, node in block.nodes.items():
            outcomes = [e["outcome"] for e in node.store.events(alert.id)]
            assert "rejected" not in outcomes and "stale" not in outcomes, (number, outcomes)
            assert node.store.get_alert(alert.id).state.word == "cancelled", number
    finally:
        block.stop()


def _request(block, i: int, action: str, captain: str, alert_id: str = "") -> dict:
    node = block.nodes[i]
    with Store(node.config.db_file, writes=WEB_TABLES) as web:
        request = web.add_request(action, captain=captain, now=block.clock(), location=node.location,
                                  alert_id=alert_id)
    node.process_requests()
    return node.store.get_request(request)


@pytest.mark.parametrize("dispatcher", [True, False], ids=["dispatcher", "plain node"])
def test_only_a_dispatcher_node_confirms_its_own_report_and_only_for_a_second_person(tmp_path, dispatcher):
    """The SMS gateway signs every responder's texted REPORT and CONFIRM: two people, one node.
    A node the signed roster marks as the dispatcher may confirm a report it signed, when a
    second captain or responder asks; the same person cannot, nor can the node's buttons. Any
    other node still needs another node to confirm, and the block refuses its self-confirmation."""
    from node.sim import Block

    # Node 1 marked as the roster's dispatcher, as 'silbato sim --sms' does.
    block = Block(tmp_path / "b", 3, "line", scale=None, seed=2, dispatchers=(1,) if dispatcher else ()).start()
    try:
        assert block.nodes[1].roster.dispatchers == (frozenset({1}) if dispatcher else frozenset())
        report = _request(block, 1, "raise", "sms:r-ana")
        assert report["status"] == "signed"
        alert_id = report["result_alert_id"]
        block.scheduler.run_for(30)
        same = _request(block, 1, "confirm", "sms:r-ana", alert_id)
        assert same["status"] == "refused" and "reported" in same["reason"]
        second = _request(block, 1, "confirm", "sms:r-ben", alert_id)
        block.scheduler.run_for(60)
        states = {i: node.store.get_alert(alert_id).state.word for i, node in block.nodes.items()}
        if dispatcher:
            assert second["status"] == "signed" and states == {1: "confirmed", 2: "confirmed", 3: "confirmed"}
        else:
            assert second["status"] == "refused" and "signer other than the reporter" in second["reason"]
            assert states == {1: "reported", 2: "reported", 3: "reported"}
        # The node's own button report: never confirmed by the same node, dispatcher or not.
        block.nodes[1].act("all_clear" if dispatcher else "cancel", alert_id)
        block.scheduler.run_for(30)
        button = block.nodes[1].report()
        assert button.id != alert_id
        block.scheduler.run_for(30)
        with pytest.raises(TransitionError, match="signer other than the reporter"):
            block.nodes[1].act("confirm", button.id)
        console = _request(block, 1, "confirm", "ana", button.id)
        assert console["status"] == "refused"
    finally:
        block.stop()
