"""The simulated air: LoRa airtime, topologies, Meshtastic-style flooding, virtual time."""

import random

import pytest

from node.sim_air import MESH_OVERHEAD, PRESETS, Scheduler, SimAir, time_on_air, topology


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
    assert line[1] == {2} and line[3] == {2, 4} and line[5] == {4}
    grid = topology(9, "grid", rng)
    assert grid[5] == {2, 4, 6, 8} and grid[1] == {2, 4}
    rand = topology(30, "random", rng)
    assert all(rand[i] for i in rand)
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
