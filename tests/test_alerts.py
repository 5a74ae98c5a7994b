"""The alert lifecycle state machine: pure functions, the clock passed in as ``now``."""

from __future__ import annotations

from dataclasses import replace

import pytest

from node.protocol.alerts import (ENDED, ON_AIR, Alert, Kind, Outcome, State, Transition, alert_id, apply, expired,
                         merge_target, parse_alert_id, request)
from node.errors import TransitionError

REPORTER, CAPTAIN, NEIGHBOR = 1, 2, 3
ID = "1-5"
T0 = 1_000.0


def tr(state: State, signer: int = CAPTAIN, **changes) -> Transition:
    return replace(Transition(ID, Kind.RAID, 101, REPORTER, state, signer), **changes)


def alert(state: State = State.REPORTED, signer: int = REPORTER, **changes) -> Alert:
    base = Alert(id=ID, kind=Kind.RAID, location=101, reporter=REPORTER, state=state, signer=signer,
                 opened_at=T0, updated_at=T0, last_report_at=T0)
    return replace(base, **changes)


# -- legal transitions -------------------------------------------------------------------


def test_report_of_unknown_alert_opens_it():
    new, outcome = apply(None, tr(State.REPORTED, signer=REPORTER), now=T0)
    assert outcome is Outcome.NEW
    assert (new.id, new.state, new.signer, new.reporter) == (ID, State.REPORTED, REPORTER, REPORTER)
    assert new.opened_at == new.updated_at == new.last_report_at == T0


def test_confirm_moves_reported_to_confirmed():
    new, outcome = apply(alert(State.REPORTED), tr(State.CONFIRMED), now=T0 + 5)
    assert outcome is Outcome.CHANGED
    assert (new.state, new.signer, new.updated_at, new.opened_at) == (State.CONFIRMED, CAPTAIN, T0 + 5, T0)


def test_all_clear_moves_confirmed_to_all_clear():
    new, outcome = apply(alert(State.CONFIRMED, CAPTAIN), tr(State.ALL_CLEAR, NEIGHBOR), now=T0 + 9)
    assert outcome is Outcome.CHANGED
    assert (new.state, new.signer, new.updated_at) == (State.ALL_CLEAR, NEIGHBOR, T0 + 9)


@pytest.mark.parametrize("start", [State.REPORTED, State.CONFIRMED])
def test_cancel_ends_an_active_alert(start):
    new, outcome = apply(alert(start), tr(State.CANCELLED, REPORTER), now=T0 + 1)
    assert outcome is Outcome.CHANGED
    assert new.state is State.CANCELLED
    assert not new.active


def test_all_clear_from_the_air_is_taken_even_if_confirm_was_missed():
    new, outcome = apply(alert(State.REPORTED), tr(State.ALL_CLEAR), now=T0 + 1)
    assert (new.state, outcome) == (State.ALL_CLEAR, Outcome.CHANGED)


def test_confirm_of_unknown_alert_opens_it_confirmed():
    new, outcome = apply(None, tr(State.CONFIRMED, CAPTAIN), now=T0)
    assert outcome is Outcome.NEW
    assert (new.state, new.reporter, new.signer) == (State.CONFIRMED, REPORTER, CAPTAIN)


def test_only_new_and_changed_sound():
    assert {o for o in Outcome if o.sounds} == {Outcome.NEW, Outcome.CHANGED}


# -- illegal transitions -----------------------------------------------------------------


def test_confirming_a_cancelled_alert_is_refused():
    with pytest.raises(TransitionError, match="cannot mark cancelled alert"):
        apply(alert(State.CANCELLED), tr(State.CONFIRMED), now=T0)


@pytest.mark.parametrize("state", [State.ALL_CLEAR, State.CANCELLED])
def test_ending_an_unknown_alert_is_refused(state):
    with pytest.raises(TransitionError, match="unknown alert"):
        apply(None, tr(state), now=T0)


@pytest.mark.parametrize("ended, target", [(e, t) for e in sorted(ENDED) for t in sorted(ON_AIR) if e is not t])
def test_nothing_leaves_an_ended_state(ended, target):
    if target is State.REPORTED:  # a late copy of the report: old news, the alert stays as it was
        assert apply(alert(ended), tr(target), now=T0) == (alert(ended), Outcome.STALE)
        return
    with pytest.raises(TransitionError):
        apply(alert(ended), tr(target), now=T0)


@pytest.mark.parametrize("current", [None, alert(State.REPORTED), alert(State.CONFIRMED)])
def test_expired_cannot_be_requested(current):
    with pytest.raises(TransitionError, match="expired cannot be requested"):
        apply(current, tr(State.EXPIRED), now=T0)


@pytest.mark.parametrize("field, value", [("kind", Kind.TEST), ("location", 102), ("reporter", NEIGHBOR)])
def test_transition_must_match_the_alert(field, value):
    with pytest.raises(TransitionError, match="does not match"):
        apply(alert(State.REPORTED), tr(State.CONFIRMED, **{field: value}), now=T0)


# -- duplicates and stale states -----------------------------------------------------------


def test_repeated_report_is_a_duplicate_that_refreshes_last_report():
    new, outcome = apply(alert(State.REPORTED), tr(State.REPORTED, REPORTER), now=T0 + 30)
    assert outcome is Outcome.DUPLICATE
    assert new.last_report_at == T0 + 30
    assert new.updated_at == T0  # a re-send is not a state change


@pytest.mark.parametrize("state", [State.CONFIRMED, State.ALL_CLEAR, State.CANCELLED])
def test_same_state_again_is_a_duplicate_and_changes_nothing(state):
    current = alert(state, CAPTAIN)
    new, outcome = apply(current, tr(state, NEIGHBOR), now=T0 + 30)
    assert outcome is Outcome.DUPLICATE
    assert new == current


def test_late_report_after_confirm_is_stale():
    current = alert(State.CONFIRMED, CAPTAIN)
    new, outcome = apply(current, tr(State.REPORTED, REPORTER), now=T0 + 30)
    assert outcome is Outcome.STALE
    assert new == current


# -- the different-signer rule ---------------------------------------------------------------


def test_reporter_cannot_confirm_own_report():
    with pytest.raises(TransitionError, match="signer other than the reporter"):
        apply(alert(State.REPORTED), tr(State.CONFIRMED, REPORTER), now=T0)


def test_reporter_cannot_confirm_unknown_alert_it_reported():
    with pytest.raises(TransitionError, match="signer other than the reporter"):
        apply(None, tr(State.CONFIRMED, REPORTER), now=T0)


# -- request(): this node's own actions ----------------------------------------------------------


@pytest.mark.parametrize("action, start, state", [
    ("confirm", State.REPORTED, State.CONFIRMED),
    ("all_clear", State.CONFIRMED, State.ALL_CLEAR),
    ("cancel", State.REPORTED, State.CANCELLED),
    ("cancel", State.CONFIRMED, State.CANCELLED),
])
def test_request_builds_the_transition(action, start, state):
    t = request(alert(start), action, CAPTAIN)
    assert t == Transition(ID, Kind.RAID, 101, REPORTER, state, CAPTAIN)


def test_request_all_clear_of_reported_alert_is_refused():
    with pytest.raises(TransitionError, match="not confirmed; cancel it"):
        request(alert(State.REPORTED), "all_clear", CAPTAIN)


@pytest.mark.parametrize("action", ["confirm", "all_clear", "cancel"])
def test_request_on_unknown_alert_is_refused(action):
    with pytest.raises(TransitionError, match="unknown alert 9-9"):
        request(None, action, CAPTAIN, "9-9")


@pytest.mark.parametrize("ended", sorted(ENDED))
@pytest.mark.parametrize("action", ["confirm", "all_clear", "cancel"])
def test_request_on_ended_alert_is_refused(ended, action):
    with pytest.raises(TransitionError):
        request(alert(ended), action, CAPTAIN)


def test_request_unknown_action_is_refused():
    with pytest.raises(TransitionError, match="unknown action"):
        request(alert(State.REPORTED), "expire", CAPTAIN)


# -- merge_target ----------------------------------------------------------------------------------


WINDOW = 600.0


def test_merge_target_at_window_edge_is_found():
    current = alert(last_report_at=T0)
    assert merge_target([current], Kind.RAID, 101, now=T0 + WINDOW, window=WINDOW) == current


def test_merge_target_just_past_window_is_none():
    current = alert(last_report_at=T0)
    assert merge_target([current], Kind.RAID, 101, now=T0 + WINDOW + 0.001, window=WINDOW) is None


def test_merge_target_counts_from_the_last_report():
    current = alert(opened_at=T0, last_report_at=T0 + 500)
    assert merge_target([current], Kind.RAID, 101, now=T0 + 1000, window=WINDOW) == current


@pytest.mark.parametrize("kind, location, exclude, state", [
    (Kind.TEST, 101, "", State.REPORTED),
    (Kind.RAID, 102, "", State.REPORTED),
    (Kind.RAID, 101, ID, State.REPORTED),
    (Kind.RAID, 101, "", State.CANCELLED),
])
def test_merge_target_needs_same_kind_place_and_an_active_alert(kind, location, exclude, state):
    current = alert(state)
    assert merge_target([current], kind, location, now=T0, window=WINDOW, exclude=exclude) is None


def test_merge_target_picks_the_matching_alert_among_others():
    other = alert(id="2-7", location=102)
    current = alert(State.CONFIRMED, CAPTAIN)
    assert merge_target([other, current], Kind.RAID, 101, now=T0, window=WINDOW) == current


# -- expired ---------------------------------------------------------------------------------------


QUIET = 3600.0


def test_not_expired_just_before_quiet_period():
    assert expired([alert()], now=T0 + QUIET - 0.001, quiet=QUIET) == []


def test_expired_at_quiet_period():
    (gone,) = expired([alert(State.CONFIRMED, CAPTAIN)], now=T0 + QUIET, quiet=QUIET)
    assert (gone.state, gone.updated_at, gone.signer) == (State.EXPIRED, T0 + QUIET, CAPTAIN)


def test_re_sent_reports_do_not_postpone_expiry():
    current = alert(last_report_at=T0 + QUIET - 1)
    assert [a.id for a in expired([current], now=T0 + QUIET, quiet=QUIET)] == [ID]


@pytest.mark.parametrize("ended", sorted(ENDED))
def test_ended_alerts_do_not_expire(ended):
    assert expired([alert(ended)], now=T0 + 10 * QUIET, quiet=QUIET) == []


# -- alert ids -------------------------------------------------------------------------------------


def test_alert_id_round_trips():
    assert parse_alert_id(alert_id(3, 17)) == (3, 17)
    assert parse_alert_id(alert_id(65535, 2**32 - 1)) == (65535, 2**32 - 1)


@pytest.mark.parametrize("text", ["", "3", "3-", "-17", "3-17-1", "a-b", "0-17", "3-0",
                                  "65536-1", "1-4294967296", "-3-17", None, 17])
def test_parse_alert_id_refuses_anything_else(text):
    with pytest.raises(TransitionError, match="not an alert id"):
        parse_alert_id(text)


@pytest.mark.parametrize("ended", [State.CANCELLED, State.ALL_CLEAR, State.EXPIRED])
def test_a_late_report_after_the_alert_ended_is_old_news_not_a_refusal(ended):
    """Issue 17, item 4: a neighbour's relay of REPORTED that arrives after CANCELLED."""
    current = alert(ended, CAPTAIN)
    new, outcome = apply(current, tr(State.REPORTED, REPORTER), now=T0 + 3)
    assert outcome is Outcome.STALE and new == current


def test_a_dispatcher_may_confirm_its_own_report_and_no_other_node_may():
    from node.protocol.alerts import Transition, apply

    report = Transition("1-1", Kind.RAID, 101, 1, State.REPORTED, 1)
    alert, _ = apply(None, report, 0.0)
    own = Transition("1-1", Kind.RAID, 101, 1, State.CONFIRMED, 1)
    with pytest.raises(TransitionError, match="signer other than the reporter"):
        apply(alert, own, 1.0)
    with pytest.raises(TransitionError):
        apply(alert, own, 1.0, dispatchers={2})
    assert apply(alert, own, 1.0, dispatchers={1})[0].state is State.CONFIRMED
