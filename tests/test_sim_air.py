"""The simulated air: LoRa airtime, topologies, Meshtastic-style flooding, virtual time."""

import random

import pytest

from node.radio.sim_air import (MESH_OVERHEAD, PRESETS, Scheduler, SimAir, hops, link_range_m, path_loss_db,
                           snr_floor, time_on_air, topology)


@pytest.mark.parametrize("preset, expected", [("LONG_FAST", 1.0), ("MEDIUM_FAST", 0.3), ("SHORT_FAST", 0.1)])
def test_airtime_of_a_100_byte_packet_matches_the_design_table(preset, expected):
    assert time_on_air(100, preset) == pytest.approx(expected, rel=0.1)


def test_airtime_grows_with_payload_and_spreading_factor():
    assert time_on_air(50, "LONG_FAST") < time_on_air(150, "LONG_FAST")
    airtimes = [time_on_air(100, p) for p in ("SHORT_FAST", "MEDIUM_FAST", "LONG_FAST", "LONG_SLOW")]
    assert airtimes == sorted(airtimes)


def test_semtech_formula_worked_example():
    # SHORT_FAST: SF7, 250 kHz, CR 4/5, explicit header, CRC on, 16-symbol preamble.
    t_sym = 2 ** 7 / 250e3
    n = -(-(8 * 10 - 4 * 7 + 28 + 16) // (4 * 7))  # ceil
    expected = (16 + 4.25) * t_sym + (8 + n * 5) * t_sym
    assert time_on_air(10, "SHORT_FAST") == pytest.approx(expected)


def test_topologies_are_connected_and_shaped():
    rng = random.Random(1)
    line = topology(5, "line", rng)
    assert set(line[1]) == {2} and set(line[3]) == {2, 4} and set(line[5]) == {4}
    assert line[1][2] == line[2][1] >= snr_floor("MEDIUM_FAST")  # symmetric links, each above the floor
    grid = topology(9, "grid", rng)
    assert set(grid[5]) == {2, 4, 6, 8} and set(grid[1]) == {2, 4}
    rand = topology(30, "random", rng)
    assert all(rand[i] for i in rand) and max(hops(rand, 1).values()) >= 3
    with pytest.raises(ValueError):
        topology(3, "star", rng)


def test_virtual_scheduler_runs_events_in_time_order():
    s = Scheduler()
    seen = []
    s.at(5, lambda: seen.append(("b", s.now())))
    s.at(1, lambda: seen.append(("a", s.now())))
    s.after(9, lambda: seen.append(("c", s.now())))
    s.run_until(6)
    assert seen == [("a", 1), ("b", 5)] and s.now() == 6
    s.run_until(10)
    assert seen[-1] == ("c", 9)


def heard_log(air):
    log = {i: [] for i in air.radios}
    for i, radio in air.radios.items():
        radio.start(lambda payload, i=i: log[i].append((air.scheduler.now(), payload)))
    return log


def test_flooding_relays_across_a_line_once_per_radio():
    air = SimAir(5, "line", preset="MEDIUM_FAST", seed=3)
    log = heard_log(air)
    air.radios[1].send(b"x" * 82)
    air.scheduler.run_until(30)
    assert [len(log[i]) for i in range(1, 6)] == [0, 1, 1, 1, 1]
    # each of 5 radios transmits once: the origin and four relays (dedup stops echoes)
    assert air.transmissions == 5
    one = time_on_air(82 + MESH_OVERHEAD, "MEDIUM_FAST")
    assert log[5][0][0] >= 4 * one
    assert sum(air.airtime.values()) == pytest.approx(5 * one)


def test_hop_limit_bounds_the_reach():
    air = SimAir(6, "line", hop_limit=2, seed=1)
    log = heard_log(air)
    air.radios[1].send(b"y" * 80)
    air.scheduler.run_until(30)
    assert [bool(log[i]) for i in range(2, 7)] == [True, True, True, False, False]


def test_a_lossy_link_drops_packets_reproducibly():
    def delivered(seed):
        air = SimAir(2, "line", loss=0.5, seed=seed)
        log = heard_log(air)
        for _ in range(200):
            air.radios[1].send(b"z" * 80)
        air.scheduler.run_until(1000)
        return len(log[2])

    assert delivered(4) == delivered(4)
    assert 60 < delivered(4) < 140


def test_a_radio_sends_one_packet_at_a_time():
    air = SimAir(2, "line", preset="LONG_FAST")
    log = heard_log(air)
    air.radios[1].send(b"a" * 82)
    air.radios[1].send(b"b" * 82)
    air.scheduler.run_until(10)
    one = time_on_air(82 + MESH_OVERHEAD, "LONG_FAST")
    assert [round(t, 6) for t, _ in log[2]] == [round(one, 6), round(2 * one, 6)]


def test_unknown_preset_and_bad_loss_are_refused():
    with pytest.raises(ValueError):
        SimAir(2, preset="TURBO_LUDICROUS")
    with pytest.raises(ValueError):
        SimAir(2, loss=1.0)
    assert "LONG_FAST" in PRESETS


# -- collisions, capture, contention, utilisation -------------------------------------------


def three_in_a_row(snr_1_2, snr_3_2, preset="MEDIUM_FAST"):
    """Radios 1 and 3 both reach 2 (and not each other), with the given SNRs at 2."""
    air = SimAir(3, "line", preset=preset, hop_limit=0)
    air.links = {1: {2: snr_1_2}, 2: {1: snr_1_2, 3: snr_3_2}, 3: {2: snr_3_2}}
    return air


def test_two_equal_transmissions_overlapping_at_a_receiver_destroy_each_other():
    air = three_in_a_row(0.0, 3.0)
    log = heard_log(air)
    air.radios[1].send(b"a" * 82)
    air.radios[3].send(b"b" * 82)
    air.scheduler.run_until(10)
    assert log[2] == [] and air.collisions == 1


def test_a_transmission_6_db_stronger_captures_the_receiver():
    air = three_in_a_row(0.0, 6.0)
    log = heard_log(air)
    air.radios[1].send(b"a" * 82)
    air.radios[3].send(b"b" * 82)
    air.scheduler.run_until(10)
    assert [payload for _, payload in log[2]] == [b"b" * 82]


def test_a_radio_hears_nothing_while_it_transmits():
    air = SimAir(2, "line", hop_limit=0)
    log = heard_log(air)
    air.radios[1].send(b"a" * 82)
    air.radios[2].send(b"b" * 82)
    air.scheduler.run_until(10)
    assert log[1] == [] and log[2] == []


def test_listen_before_talk_waits_for_a_busy_channel():
    air = SimAir(2, "line", hop_limit=0)
    log = heard_log(air)
    air.radios[1].send(b"a" * 82)
    air.scheduler.run_until(0.01)        # radio 1 is on air now; radio 2 hears the channel busy
    air.radios[2].send(b"b" * 82)
    air.scheduler.run_until(10)
    assert [p for _, p in log[2]] == [b"a" * 82] and [p for _, p in log[1]] == [b"b" * 82]


def test_weak_receivers_rebroadcast_sooner():
    air = SimAir(2, "line", seed=5)
    strong = [air.rebroadcast_delay(10.0) for _ in range(300)]
    weak = [air.rebroadcast_delay(-20.0) for _ in range(300)]
    slot = air.rebroadcast_delay.__self__ and __import__("node.radio.sim_air", fromlist=["slot_time"]).slot_time(air.preset)
    assert min(weak) >= 16 * slot and max(weak) <= (16 + 8) * slot + 1e-9     # CW 3: 2^3 slots after 2*CWmax
    assert max(strong) > 100 * slot                                           # CW 8: up to 256 slots
    assert sum(weak) / len(weak) < sum(strong) / len(strong)


def test_a_client_cancels_its_rebroadcast_when_it_hears_another():
    # 1 reaches 2 and 3; 2 and 3 reach each other and 4; whoever of 2 and 3 relays first
    # makes the other cancel, so 4 still hears it once and only three packets go on air.
    air = SimAir(4, "line", seed=2)
    air.links = {1: {2: 0.0, 3: 0.0}, 2: {1: 0.0, 3: 0.0, 4: 0.0}, 3: {1: 0.0, 2: 0.0, 4: 0.0},
                 4: {2: 0.0, 3: 0.0}}
    air.loss = {(a, b): 0.0 for a in air.links for b in air.links[a]}
    log = heard_log(air)
    air.radios[1].send(b"c" * 82)
    air.scheduler.run_until(30)
    assert len(log[4]) == 1
    assert air.radios[2].cancelled + air.radios[3].cancelled == 1
    # and 4 itself relayed it once more: 1, one of 2/3, and 4
    assert air.transmissions == 3


def test_path_loss_grows_with_distance_and_sets_the_range():
    assert path_loss_db(100) < path_loss_db(1000)
    assert link_range_m("LONG_FAST") > link_range_m("MEDIUM_FAST") > link_range_m("SHORT_FAST")


def test_channel_utilisation_counts_what_a_radio_hears_and_sends():
    air = SimAir(2, "line", hop_limit=0, preset="LONG_FAST")
    for _ in range(5):
        air.radios[1].send(b"u" * 100)
    air.scheduler.run_until(60)
    one = time_on_air(100 + MESH_OVERHEAD, "LONG_FAST")
    assert air.utilisation(2, 60) == pytest.approx(5 * one / 60, rel=0.01)
    assert air.utilisation(1, 60) == pytest.approx(5 * one / 60, rel=0.01)
    assert air.radios[2].channel_utilisation == pytest.approx(5 * one / 60, rel=0.01)


def test_overlapping_receptions_keep_the_channel_busy_once_not_twice():
    # 1 - 2 - 3: radios 1 and 3 cannot hear each other, so both send at once and collide at 2
    air = SimAir(3, "line", hop_limit=0, preset="LONG_FAST")
    air.radios[1].send(b"a" * 100)
    air.radios[3].send(b"c" * 100)
    air.scheduler.run_until(60)
    one = time_on_air(100 + MESH_OVERHEAD, "LONG_FAST")
    assert air.collisions >= 1
    assert air.utilisation(2, 60) == pytest.approx(one / 60, rel=0.01)
