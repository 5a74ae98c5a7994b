"""Liveness gossip and SILENT verdicts (node.supervision), pure, with an injected clock."""

import pytest

import random

from node.protocol.supervision import (AGE_MAX, AGE_UNIT, BEATS_PER_PERIOD, BUSY_PERIODS, EARLY_WINDOW, FAR_PERIODS,
                                       MIN_INTERVAL, POLL_FROM, SILENT_MARK, Supervisor,
                              VERDICT_LEAD,
                              age_unit, early_delay, effective_period, heartbeat_airtime, heartbeat_interval, trouble_bits,
                              trouble_mask, trouble_names)

MEMBERS = [1, 2, 3, 4]


def sup(me, now=0.0, period=180.0):
    return Supervisor(me, MEMBERS, period=period, now=now)


def test_first_hand_evidence_makes_a_node_alive():
    s = sup(1)
    s.heard(2, 10.0)
    assert s.status(2, 20.0) == "ok" and 2 in s.neighbours


def test_a_vector_carries_ages_rounded_up_and_troubles():
    s = sup(1)
    s.heard(2, 100.0, troubles=0)
    s.heard(3, 90.0, troubles=2)
    vector = s.vector(101.0, own_troubles=1)
    assert vector[0] >> 2 == 0 and vector[0] & 3 == 1          # itself, now, with its radio trouble
    assert vector[1] >> 2 == 1                                  # 1 s old rounds up to one 4 s unit
    assert vector[2] >> 2 == 3 and vector[2] & 3 == 2           # 11 s old: three units
    assert vector[3] >> 2 == AGE_MAX                            # never heard of


def test_gossip_never_makes_evidence_newer_than_it_was():
    a, b = sup(1), sup(2)
    a.heard(3, 100.0)
    b.merge(a.vector(110.0, 0), 110.0)
    assert b.evidence[3] <= 100.0
    # and back again: a dead node 3 does not stay alive by being passed around
    for t in range(120, 400, 10):
        a.merge(b.vector(t, 0), t)
        b.merge(a.vector(t + 5, 0), t + 5)
    assert a.evidence[3] <= 100.0 and b.evidence[3] <= 100.0


def test_a_neighbour_silent_for_the_period_is_due_a_verdict_once():
    s = sup(1)
    s.heard(2, 0.0)
    assert s.due_verdicts(160.0) == []
    assert s.due_verdicts(181.0) == [(2, 0.0)]
    s.verdict(2, 0.0)
    assert s.due_verdicts(200.0) == [] and s.status(2, 200.0) == "silent"
    s.heard(2, 210.0)  # it came back
    assert s.status(2, 211.0) == "ok"


def test_on_a_degraded_channel_a_neighbour_is_silent_only_after_two_periods():
    """LONG_FAST alerts a minute apart kept the busiest node's channel 95% busy, and healthy buildings
    were named silent 13 times in 30 alert states: a period without news is no evidence on a channel
    that busy. While the radio reports it degraded (and for a period after), a silence must last
    BUSY_PERIODS periods; a clear channel goes back to one."""
    assert BUSY_PERIODS == 2
    s = sup(1)
    s.heard(2, 0.0)
    s.channel_busy(100.0)
    assert s.silence_limit(150.0) == 360.0
    assert s.due_verdicts(181.0) == [] and s.status(2, 181.0) == "ok"
    assert s.wants_poll(200.0), "it is still asked after"
    s.channel_busy(250.0)
    assert s.due_verdicts(349.0) == [] and s.status(2, 359.0) == "ok"
    assert s.due_verdicts(351.0) == [(2, 0.0)] and s.status(2, 361.0) == "silent"
    s.heard(2, 400.0)
    assert s.silence_limit(429.0) == 360.0 and s.silence_limit(431.0) == 180.0, "a period after the last report"
    assert s.due_verdicts(581.0) == [(2, 400.0)], "on a clear channel, one period again"


def test_a_verdict_from_a_neighbour_of_it_shows_a_far_node_silent_until_news_of_it():
    s = sup(1)
    s.merge(bytes([0, 0, 2 << 2, AGE_MAX << 2]), 50.0)   # node 3 seen 8 s earlier, through gossip
    assert s.status(3, 60.0) == "ok" and 3 not in s.neighbours
    s.verdict(3, 42.0)
    assert s.status(3, 230.0) == "silent"
    s.merge(bytes([0, 0, 0, AGE_MAX << 2]), 240.0)       # news: node 3 alive again
    assert s.status(3, 241.0) == "ok"


def test_far_nodes_fall_back_on_their_own_evidence_after_three_periods():
    s = sup(1)
    s.merge(bytes([0, 0, 0, AGE_MAX << 2]), 10.0)
    assert s.status(3, 10.0 + 3 * 180.0 - 1) == "ok"
    assert s.status(3, 10.0 + 3 * 180.0 + 5) == "silent"


def test_unknown_until_the_period_has_passed_since_start():
    s = sup(1, now=1000.0)
    assert s.status(4, 1100.0) == "unknown"
    assert s.status(4, 1000.0 + 3 * 180.0 + 1) == "silent"


def test_a_node_notices_its_neighbour_missed_its_heartbeats():
    me = sup(1)
    neighbour = sup(2)
    neighbour.heard(1, 0.0)
    assert not me.stale_about_me(neighbour.vector(40.0, 0), interval=45.0)
    assert me.stale_about_me(neighbour.vector(70.0, 0), interval=45.0)


def test_heartbeat_interval_follows_the_budget_within_bounds():
    assert heartbeat_interval(0.365, neighbours=13, budget=0.05, period=180.0) == pytest.approx(180 / BEATS_PER_PERIOD)
    assert heartbeat_interval(0.365, neighbours=4, budget=0.05, period=180.0) == pytest.approx(5 * 0.365 / 0.05)
    assert heartbeat_interval(0.05, neighbours=1, budget=0.5, period=180.0) == MIN_INTERVAL == 30.0
    assert AGE_UNIT * AGE_MAX > 180.0


def test_trouble_bits_and_mask():
    assert trouble_bits(["radio-firmware"]) == 1 and trouble_bits(["storage", "speaker"]) == 2
    mask = trouble_mask(["radio-mqtt", "storage"])
    assert set(trouble_names(mask)) == {"radio-mqtt", "storage"} and mask & 3 == 3  # low bits: the summary


def test_a_verdict_rides_in_heartbeats_to_a_node_that_missed_it():
    a, b = sup(1), sup(2)
    a.heard(3, 0.0)
    b.merge(a.vector(10.0, 0), 10.0)
    a.verdict(3, 0.0)
    vector = a.vector(200.0, 0)
    assert vector[2] >> 2 == SILENT_MARK
    b.merge(vector, 200.0)
    assert b.status(3, 201.0) == "silent"


def test_the_period_stretches_only_when_the_preset_is_too_slow_for_it():
    assert effective_period(180.0, "SHORT_FAST", 0.05) == 180.0
    assert effective_period(180.0, "MEDIUM_FAST", 0.05) == 180.0
    long_fast = effective_period(180.0, "LONG_FAST", 0.05)
    # 2.5 heartbeats of 1.3 s from nine nodes within 5%: about ten minutes
    assert long_fast == pytest.approx(BEATS_PER_PERIOD * 9 * heartbeat_airtime("LONG_FAST") / 0.05, abs=10.0)
    assert 500.0 < long_fast < 700.0
    assert effective_period(900.0, "LONG_FAST", 0.05) == 900.0          # a longer setting is kept
    assert effective_period(180.0, "LONG_FAST", 0.20) < long_fast        # a bigger budget needs less


def test_ages_can_say_the_whole_of_a_stretched_period():
    assert age_unit("MEDIUM_FAST") == age_unit("SHORT_FAST") == AGE_UNIT
    for preset in ("MEDIUM_SLOW", "LONG_FAST", "LONG_SLOW"):
        assert (SILENT_MARK - 1) * age_unit(preset) > 1.2 * effective_period(180.0, preset, 0.05)
    unit = age_unit("LONG_FAST")
    s = Supervisor(1, MEMBERS, period=590.0, now=0.0, unit=unit)
    s.heard(2, 0.0)
    vector = s.vector(500.0, 0)
    assert s.unit > AGE_UNIT and (vector[1] >> 2) < SILENT_MARK           # 500 s is still an age, not "no news"
    far = Supervisor(3, MEMBERS, period=590.0, now=0.0, unit=unit)
    far.merge(vector, 500.0)
    assert 500.0 - far.evidence[2] == pytest.approx(500.0, abs=s.unit + 1.0)
    assert far.status(2, 501.0) == "ok"


def test_a_node_polls_a_neighbour_quiet_for_most_of_the_period_and_stops_once_it_is_named():
    s = sup(1)
    s.heard(2, 0.0)
    s.heard(3, 80.0)
    assert not s.wants_poll(100.0)
    assert s.wants_poll(POLL_FROM * 180.0 + 1)      # node 2 quiet for over 0.6 of the period
    s.heard(2, 120.0)
    assert not s.wants_poll(150.0)                  # it answered
    assert s.wants_poll(200.0)                      # now node 3 has been quiet for 120 s
    s.verdict(3, 80.0)
    s.heard(2, 199.0)
    assert not s.wants_poll(200.0)                  # node 3 is called silent: no more asking


def test_a_poll_makes_its_subject_answer_before_its_next_regular_heartbeat():
    subject, poller = sup(2), sup(1)
    poller.heard(2, 0.0)
    poll = poller.vector(POLL_FROM * 180.0 + 1, 0)   # node 2 last heard 109 s ago
    assert subject.stale_about_me(poll, interval=90.0)  # 1.3 intervals would be 121 s: the poll still gets an answer
    assert not subject.stale_about_me(poller.vector(80.0, 0), interval=90.0)


def test_a_verdict_falls_due_just_before_the_period_so_the_block_shows_it_by_then():
    s = sup(1)
    s.heard(2, 0.0)
    assert s.due_verdicts(180.0 - VERDICT_LEAD - 1) == []
    assert s.due_verdicts(180.0 - VERDICT_LEAD + 1) == [(2, 0.0)]


def test_early_heartbeats_spread_over_many_airtimes():
    rng = random.Random(5)
    delays = [early_delay(0.365, rng) for _ in range(1000)]
    assert min(delays) >= 1.0 and max(delays) <= 1.0 + EARLY_WINDOW * 0.365
    assert max(delays) - min(delays) > 10 * 0.365   # wide enough that two answers rarely overlap


def test_a_node_without_its_radio_judges_nobody_until_a_period_after_it_is_back():
    s = sup(1)
    s.heard(2, 0.0)
    s.radio(False, 10.0)
    assert s.due_verdicts(400.0) == [], "no verdict while its own radio is down"
    assert s.status(2, 400.0) == "unreachable" and s.through(2, 400.0) == 1, "out of reach through itself"
    s.radio(True, 400.0)
    assert s.due_verdicts(400.0 + 180.0 - VERDICT_LEAD - 1) == [], "freshly back: still listening"
    assert s.status(2, 500.0) == "unreachable"
    assert s.due_verdicts(400.0 + 180.0 - VERDICT_LEAD + 1) == [(2, 0.0)], "a whole period heard nothing"
    s.heard(2, 401.0)
    assert s.status(2, 402.0) == "ok" and s.due_verdicts(500.0) == []


def test_a_building_whose_news_came_through_a_silent_one_is_out_of_reach_through_it():
    s = sup(1)
    s.heard(2, 100.0)
    s.merge(bytes([0, 0, 1 << 2, AGE_MAX << 2]), 100.0, via=2)   # news of 3 through 2
    assert s.via[3] == 2 and s.status(3, 110.0) == "ok"
    s.verdict(2, 100.0)                                            # this node judged 2 silent
    assert s.status(2, 290.0) == "silent"
    assert s.status(3, 290.0) == "unreachable" and s.through(3, 290.0) == 2
    assert s.silent(290.0) == {2} and s.unreachable(290.0) == {3}
    s.merge(bytes([0, 0, 0, AGE_MAX << 2]), 300.0, via=4)          # fresh news of 3 another way
    assert s.status(3, 301.0) == "ok" and s.via[3] == 4


def test_a_neighbour_whose_receipts_come_is_not_judged_silent_though_its_heartbeats_are_lost():
    s = sup(1)
    s.heard(2, 100.0)
    s.merge(bytes([0, 0, 1 << 2, AGE_MAX << 2]), 100.0, via=2)   # news of 3 through 2
    s.receipt(4, 250.0)                                            # never heard first-hand: not a neighbour
    assert 4 not in s.receipts
    s.receipt(2, 250.0)                                            # 2's heartbeats lost, its receipt heard
    assert s.status(2, 300.0) == "ok" and s.due_verdicts(300.0) == []
    assert s.status(3, 300.0) == "ok" and s.through(3, 300.0) is None, "2 is alive: 3 is not beyond a silent one"
    assert s.age(2, 300.0) == 200.0, "ages in the heartbeats still go by heartbeats"
    assert s.wants_poll(260.0), "and 2 is still asked after: its answer carries the gossip"
    assert s.due_verdicts(500.0) == [(2, 250.0)], "a period after its last receipt, it is due a verdict"
    s.verdict(2, 250.0)
    s.receipt(2, 520.0)
    assert s.status(2, 530.0) == "silent", "only a heartbeat brings it back"
    s.heard(2, 540.0)
    assert s.status(2, 541.0) == "ok"


def test_a_stale_far_building_is_out_of_reach_through_the_silent_one_between():
    s = sup(1)
    s.heard(2, 0.0)
    s.merge(bytes([0, 0, 0, 0]), 0.0, via=2)                      # 3 and 4 heard of through 2
    s.verdict(3, 5.0)                                             # a live neighbour of 3 judged it
    for t in range(30, 700, 30):
        s.heard(2, float(t))                                      # 2 is alive, but brings no news of 4
    assert s.status(4, 700.0) == "unreachable" and s.through(4, 700.0) == 3
    # with no building silent between, the far fallback still says silent
    s.verdicts.clear()
    assert s.status(4, 700.0) == "silent"


def test_a_far_building_stays_out_of_reach_for_three_periods_after_the_silent_one_between_is_back():
    """P10 seed 4: the middle node's radio away 5 minutes; once it was back (no longer named silent),
    the news of the 14 buildings beyond it was still old, and its neighbours' neighbours showed them
    all silent (by the far fallback) for up to 135 s, until fresh news flowed through it again. With
    one period's grace, 6 were, once the middle node's return itself spread in seconds (round 7)."""
    s = sup(1)
    s.heard(2, 0.0)
    s.merge(bytes([0, 0, 0, 0]), 0.0, via=2)                      # 3 and 4 heard of through 2
    s.verdict(3, 5.0)                                             # 3 went silent; 4 lies beyond it
    for t in range(30, 600, 30):
        s.heard(2, float(t))                                      # 2 is alive, but brings no news of 4
    s.merge(bytes([0, 0, 0, AGE_MAX << 2]), 600.0, via=2)         # 3 is back: news of it, none yet of 4
    assert s.status(3, 601.0) == "ok"
    assert s.status(4, 620.0) == "unreachable" and s.through(4, 620.0) == 3
    for t in range(630, 1200, 30):
        s.heard(2, float(t))
    assert s.status(4, 600.0 + 2 * 180.0) == "unreachable", "far news may take as long as it ever does"
    assert s.status(4, 600.0 + FAR_PERIODS * 180.0 + 1.0) == "silent", "then no news of 4 is its own silence"
    s.merge(bytes([0, 0, 0, 0]), 1150.0, via=2)                   # fresh news of 4 through 3 and 2
    assert s.status(4, 1151.0) == "ok"


def test_news_of_a_building_named_silent_says_it_is_back_once():
    s = sup(1)
    s.heard(2, 0.0)
    s.merge(bytes([0, 0, 0, 0]), 0.0, via=2)
    s.verdict(3, 5.0)
    assert s.status(3, 200.0) == "silent"
    assert s.merge(bytes([0, 0, 1 << 2, AGE_MAX << 2]), 210.0, via=2) == ({3}, set())   # alive, 4 s before
    assert s.status(3, 211.0) == "ok"
    assert s.merge(bytes([0, 0, 0, AGE_MAX << 2]), 240.0, via=2) == (set(), set()), "only the first news is a return"
    s.verdict(2, 240.0)
    assert s.heard(2, 300.0) is True and s.heard(2, 330.0) is False
    assert s.status(4, 700.0) == "unreachable"                        # its news came only through 3, silent then
    assert s.merge(bytes([0, 0, 0, 0]), 700.0, via=2) == (set(), {4}), "first news of it since: back in reach"


def test_a_neighbour_still_showing_a_returned_building_silent_is_told_at_once():
    s = sup(1)
    s.heard(2, 0.0)
    s.merge(bytes([0, 0, 0, 0]), 50.0, via=2)                       # news of 3 and 4, 1 s old at 50
    marked = bytes([0, 0, SILENT_MARK << 2, AGE_MAX << 2])           # 2 still shows 3 silent
    assert s.missed_return(marked, 60.0)
    assert not s.missed_return(marked, 50.0 + 180.0 / 2 + 5), "older news than half a period: maybe it is silent"
    assert not s.missed_return(bytes([0, 0, 0, AGE_MAX << 2]), 60.0)
    s.verdict(3, 49.0 + AGE_UNIT)                                  # this node too names it silent
    assert not s.missed_return(marked, 60.0)
