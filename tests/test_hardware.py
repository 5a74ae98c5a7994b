"""Button, siren, light and the hardware test, on gpiozero's mock pins. No Pi, no sleeps to synchronise.

Siren patterns are checked on virtual time: the siren's waits advance a clock that the
mock pins stamp their state changes with, so ``assert_states_and_times`` is exact.
"""

import importlib.util
import random
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from gpiozero.pins.mock import MockFactory, MockPWMPin, PinState
from gpiozero.tones import Tone

from node import config as config_mod
from node.protocol.alerts import State
from node.cli import cli
from node.daemon.node import Node
from node.errors import HardwareError
from node.hardware.check import check, scripted_hold
from node.hardware.devices import Hardware
from node.hardware.patterns import PATTERNS, SILENCEABLE, TONES, in_quiet_hours, pattern_duration, pattern_for, pattern_steps
from node.sim import Block, provision

HOLD = 0.05  # seconds: the hold time in these tests


def settings(**overrides):
    values = {"hardware.hold_time": HOLD}
    values.update({k.replace("__", "."): v for k, v in overrides.items()})
    return config_mod.from_mapping(values)


# -- patterns as data, on virtual time ------------------------------------------------------

class VirtualTime:
    """Moves only when the siren waits. Records (pin frequency, seconds) at every wait."""

    def __init__(self):
        self.now = 0.0
        self.watch = None
        self.waits = []

    def wait(self, stop, seconds):
        self.waits.append((self.watch.frequency if self.watch is not None else None, seconds))
        self.now += seconds
        return stop.is_set()

    def factory(self):
        clock = self

        class VirtualPin(MockPWMPin):
            def _change_state(self, value):
                if self._state == value:
                    return False
                self._state = value
                self.states.append(PinState(clock.now - self._last_change, value))
                self._last_change = clock.now
                return True

            def clear_states(self):
                self._last_change = clock.now
                self.states = [PinState(0.0, self._state)]

        return MockFactory(pin_class=VirtualPin)


def expected_relay_states(name, repeat=None):
    """What a relay pin should do for pattern ``name``, read from PATTERNS: [(seconds since last, state)]."""
    steps, default_repeat = PATTERNS[name]
    flat = list(steps) * (repeat or default_repeat)
    out = [(0.0, 0), (0.0, 1)]  # off when cleared, on at once
    on_for = 0.0
    for i, (on, off) in enumerate(flat):
        on_for += on
        if off or i == len(flat) - 1:  # an off time of 0 joins this step to the next
            out.append((on_for, 0))
            on_for = 0.0
            if off and i < len(flat) - 1:
                out.append((off, 1))
    return out


@pytest.fixture
def virtual():
    clock = VirtualTime()
    return clock, clock.factory()


@pytest.mark.parametrize("kind", ["relay", "buzzer"])
@pytest.mark.parametrize("name", list(PATTERNS))
def test_each_pattern_drives_the_siren_pin_as_its_data_says(virtual, name, kind):
    clock, factory = virtual
    cfg = settings(hardware__siren_kind=kind, hardware__confirmed_duration=55.0)  # 55 s: exactly 10 whistles
    hw = Hardware(cfg, on_hold=lambda: None, pin_factory=factory, wait=clock.wait)
    try:
        pin = factory.pin(27)
        pin.clear_states()
        hw.siren.sound(name)
        assert hw.siren.join(5)
        expected = expected_relay_states(name, repeat=10 if name == "confirmed" else None)
        assert len(pin.states) == len(expected), (pin.states, expected)
        pin.assert_states_and_times(expected)
        assert clock.now == pytest.approx(pattern_duration(name, confirmed_duration=55.0))
        assert hw.siren.playing == ""
    finally:
        hw.close()


@pytest.mark.parametrize("name", list(PATTERNS))
def test_the_piezo_plays_each_step_at_its_tone(virtual, name):
    clock, factory = virtual
    hw = Hardware(settings(hardware__siren_kind="piezo", hardware__confirmed_duration=55.0), on_hold=lambda: None,
                  pin_factory=factory, wait=clock.wait)
    try:
        clock.watch = factory.pin(27)
        hw.siren.sound(name)
        assert hw.siren.join(5)
        steps, repeat = PATTERNS[name]
        expected = []
        for _ in range(10 if name == "confirmed" else repeat):
            for (on, off), note in zip(steps, TONES[name]):
                expected.append((pytest.approx(Tone(note).frequency), on))
                if off:
                    expected.append((None, off))
        assert clock.waits == expected
        assert factory.pin(27).frequency is None  # silent at the end
    finally:
        hw.close()


def test_distinct_states_have_distinct_patterns_and_tones():
    names = ["reported_origin", "reported", "confirmed", "all_clear", "cancelled", "test"]
    assert len({(PATTERNS[n], TONES[n]) for n in names}) == len(names)
    rising, falling = TONES["all_clear"], TONES["cancelled"]
    assert Tone(rising[0]).frequency < Tone(rising[1]).frequency      # ALL_CLEAR: a rising two-tone
    assert Tone(falling[0]).frequency > Tone(falling[1]).frequency    # CANCELLED: a falling tone
    assert all(len(TONES[n]) == len(PATTERNS[n][0]) for n in PATTERNS)


def test_each_state_has_its_pattern():
    assert pattern_for(State.REPORTED, at_origin=True, test=False) == "reported_origin"
    assert pattern_for(State.REPORTED, at_origin=False, test=False) == "reported"
    assert pattern_for(State.CONFIRMED, at_origin=False, test=False) == "confirmed"
    assert pattern_for(State.ALL_CLEAR, at_origin=False, test=False) == "all_clear"
    assert pattern_for(State.CANCELLED, at_origin=True, test=False) == "cancelled"
    assert pattern_for(State.CONFIRMED, at_origin=False, test=True) == "test"
    assert pattern_for(State.EXPIRED, at_origin=False, test=False) == ""
    steps, _ = PATTERNS["confirmed"]
    assert len(steps) == 3 and all(on >= 1.0 for on, _ in steps)  # three long blasts
    assert 55 <= pattern_duration("confirmed") <= 65               # about a minute by default
    for seconds in (20.0, 60.0, 120.0):
        assert abs(pattern_duration("confirmed", confirmed_duration=seconds) - seconds) <= 3
    assert len(pattern_steps("confirmed", confirmed_duration=1.0)) == 3  # at least one whole whistle


def test_quiet_hours_soften_reported_and_test_but_never_confirmed():
    assert pattern_for(State.REPORTED, at_origin=False, test=False, quiet=True) == "reported_quiet"
    assert pattern_for(State.CONFIRMED, at_origin=False, test=True, quiet=True) == ""
    assert pattern_for(State.CONFIRMED, at_origin=False, test=False, quiet=True) == "confirmed"
    assert pattern_duration("reported_quiet") < pattern_duration("reported")


def local(hour, minute=0):
    return time.mktime((2030, 6, 1, hour, minute, 0, 0, 0, -1))


def test_quiet_hours_span_midnight_and_ignore_an_unset_clock():
    span = config_mod.parse_quiet_hours("22:00-07:00")
    assert in_quiet_hours(span, local(23)) and in_quiet_hours(span, local(3)) and in_quiet_hours(span, local(22))
    assert not in_quiet_hours(span, local(7)) and not in_quiet_hours(span, local(12))
    day = config_mod.parse_quiet_hours("13:00-14:30")
    assert in_quiet_hours(day, local(14, 29)) and not in_quiet_hours(day, local(14, 30))
    assert not in_quiet_hours(None, local(3))
    assert not in_quiet_hours(span, 3 * 3600.0)  # 1970: a Pi that never learned the time sounds in full


def test_the_hardware_sounds_the_softer_pattern_in_quiet_hours_only_for_reported(virtual):
    clock, factory = virtual
    now = [local(3)]
    hw = Hardware(settings(hardware__quiet_hours="22:00-07:00"), on_hold=lambda: None, pin_factory=factory,
                  clock=lambda: now[0], wait=clock.wait)

    def played(state, test=False):
        start = clock.now
        hw.sound(state, at_origin=False, test=test)
        assert hw.siren.join(5)
        return clock.now - start

    try:
        assert played(State.REPORTED) == pytest.approx(pattern_duration("reported_quiet"))
        assert played(State.CONFIRMED) == pytest.approx(pattern_duration("confirmed"))
        assert played(State.REPORTED, test=True) == 0
        now[0] = local(12)
        assert played(State.REPORTED) == pytest.approx(pattern_duration("reported"))
        assert played(State.REPORTED, test=True) == pytest.approx(pattern_duration("test"))
    finally:
        hw.close()


@pytest.mark.parametrize("bad", [{"hardware.siren_kind": "horn"}, {"hardware.light_kind": "neon"},
                                 {"hardware.quiet_hours": "late"}, {"hardware.rgb_pins": "1,2"},
                                 {"hardware.cancel_window": 0}, {"hardware.confirm_pin": 40},
                                 {"hardware.button_pin": 0}])
def test_bad_hardware_settings_stop_start_up_with_one_line(bad):
    with pytest.raises(config_mod.ConfigError, match=next(iter(bad))):
        config_mod.from_mapping(bad)


# -- devices on real time ---------------------------------------------------------------------

@pytest.fixture
def factory():
    return MockFactory(pin_class=MockPWMPin)


@pytest.fixture
def hardware(factory):
    held = threading.Event()
    hw = Hardware(settings(), on_hold=lambda: held.set() or True, pin_factory=factory)
    hw.held = held
    yield hw
    hw.close()


def watch_confirmations(light):
    """An Event set each time the light starts its confirmation blink."""
    confirmed, original = threading.Event(), light.confirm

    def confirm():
        original()
        confirmed.set()

    light.confirm = confirm
    return confirmed


def test_a_full_hold_fires_once_with_progress_then_confirmation(factory):
    held = threading.Event()
    hw = Hardware(settings(hardware__hold_time=0.5), on_hold=lambda: held.set() or True, pin_factory=factory)
    try:
        confirmed = watch_confirmations(hw.light)
        factory.pin(17).drive_low()
        assert hw.light.overlay == "progress"
        assert held.wait(5) and confirmed.wait(5)
        assert hw.light.join(5)
        factory.pin(17).drive_high()
        assert hw.light.overlay == "" and hw.light.mode == "healthy"
    finally:
        hw.close()


def test_the_light_counts_a_hold_down_then_blinks_three_times(factory):
    hw = Hardware(settings(hardware__light_kind="rgb"), on_hold=lambda: None, pin_factory=factory)
    try:
        blue = factory.pin(24)
        hw.light.progress(0.4)
        assert hw.light.overlay == "progress"
        hw.light.end_progress()
        assert hw.light.overlay == "" and not blue.state
        blue.clear_states()
        hw.light.confirm()
        assert hw.light.overlay == "confirm"
        hw.light.show(alarm=True, trouble=False)  # the daemon's update waits for the blink to end
        assert hw.light.mode == "alarm" and hw.light.overlay == "confirm"
        assert hw.light.join(5)
        assert [s.state for s in blue.states[1:7]] == [1, 0] * 3  # three blue blinks
        assert hw.light.overlay == "" and factory.pin(22).state and not blue.state  # then steady red
    finally:
        hw.close()


def test_a_tap_shorter_than_the_hold_time_fires_nothing(hardware, factory):
    for _ in range(20):
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()
    assert not hardware.held.wait(HOLD * 4)
    assert hardware.light.overlay == ""


def test_a_failing_hold_handler_does_not_kill_the_button(factory):
    called = threading.Event()

    def boom():
        called.set()
        raise RuntimeError("handler bug")

    hw = Hardware(settings(), on_hold=boom, pin_factory=factory)
    try:
        for _ in range(2):  # the second hold proves the first failure left the button working
            called.clear()
            factory.pin(17).drive_low()
            assert called.wait(5)
            factory.pin(17).drive_high()
        assert hw.light.overlay == ""  # no confirmation blink for a hold that raised nothing
    finally:
        hw.close()


def test_a_piezo_needs_a_pwm_pin_and_says_so():
    with pytest.raises(HardwareError, match="GPIO setup failed"):
        Hardware(settings(hardware__siren_kind="piezo"), on_hold=lambda: None, pin_factory=MockFactory())


def test_the_siren_turns_on_at_once_and_silence_turns_it_off(hardware, factory):
    siren = factory.pin(27)
    hardware.siren.sound("confirmed")
    assert siren.state and hardware.sounding
    hardware.siren.silence()
    assert not siren.state and hardware.siren.playing == "" and not hardware.sounding


def test_the_light_shows_alarm_trouble_and_health(hardware, factory):
    hardware.light.show(alarm=True, trouble=True)
    assert hardware.light.mode == "alarm" and factory.pin(22).state
    hardware.light.show(alarm=False, trouble=True)
    assert hardware.light.mode == "trouble"
    hardware.light.show(alarm=False, trouble=False)
    assert hardware.light.mode == "healthy"


def test_an_rgb_light_shows_red_green_and_amber(factory):
    hw = Hardware(settings(hardware__light_kind="rgb"), on_hold=lambda: None, pin_factory=factory)
    try:
        red, green, blue = (factory.pin(n) for n in (22, 23, 24))
        hw.light.show(alarm=True, trouble=False)
        assert (red.state, green.state, blue.state) == (1, 0, 0)  # steady red
        hw.light.show(alarm=False, trouble=True)                    # amber blink: red and green together
        green.clear_states()
        hw.light.show(alarm=False, trouble=False)                   # healthy: green only
        assert not red.state and not blue.state
        hw.light.show(alarm=True, trouble=False)
        assert any(s.state for s in green.states)
    finally:
        hw.close()


# -- a whole node: bounces, holds, the cancel window, silence, the confirm button -------------

class FakeClock:
    def __init__(self, now=Block.EPOCH):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def make_node(tmp_path):
    nodes = []

    def make(hold_time=HOLD, **overrides):
        files = provision(tmp_path / f"block{len(nodes)}", 2, hold_time=hold_time,
                          overrides={k.replace("__", "."): v for k, v in overrides.items()})
        clock = FakeClock()
        factory = MockFactory()
        node = Node(files.configs[0], pin_factory=factory, clock=clock).start()
        nodes.append(node)
        return node, factory, clock

    yield make
    for node in nodes:
        node.stop()


def alert_count(node):
    return len(node.store.alerts(limit=10_000))


def hold(node, pin, predicate):
    """Press, wait (on the node's change event) until ``predicate`` holds, release."""
    pin.drive_low()
    try:
        assert node.wait_for(predicate, timeout=10), "the hold did not do what it should"
    finally:
        pin.drive_high()


def test_a_thousand_random_bounces_and_taps_raise_nothing(make_node):
    hold_time = 1.0  # far above any press below, even on a loaded machine
    node, factory, _ = make_node(hold_time=hold_time)
    pin = factory.pin(17)
    rng = random.Random(7)
    longest = 0.0

    def press(dwell=0.0):
        nonlocal longest
        start = time.monotonic()
        pin.drive_low()
        if dwell:
            threading.Event().wait(dwell)  # the finger, not synchronisation
        pin.drive_high()
        longest = max(longest, time.monotonic() - start)

    for _ in range(1000):
        shape = rng.random()
        if shape < 0.4:                                     # a tap
            press()
        elif shape < 0.9:                                   # contact bounce: a burst of edges
            for _ in range(rng.randint(2, 12)):
                press()
        else:                                               # a brief touch
            press(rng.uniform(0.001, 0.03))
    assert longest < hold_time, f"a press lasted {longest:.2f} s, as long as a hold; the test proves nothing"
    assert not node.wait_for(lambda: alert_count(node) > 0, timeout=hold_time + 0.5)
    assert alert_count(node) == 0 and node.store.pending() == []


def test_a_hundred_full_holds_raise_a_hundred_alerts(make_node):
    node, factory, clock = make_node()
    pin = factory.pin(17)
    for i in range(100):
        clock.now += 1000  # past the merge and cancel windows: each hold is a new report
        hold(node, pin, lambda: alert_count(node) == i + 1)
    assert alert_count(node) == 100
    assert {a.state for a in node.store.alerts(limit=200)} == {State.REPORTED}


def test_pressing_again_within_the_cancel_window_withdraws_the_report(make_node):
    node, factory, clock = make_node(hardware__cancel_window=10.0)
    pin = factory.pin(17)
    hold(node, pin, lambda: alert_count(node) == 1)
    alert = node.store.active_alerts()[0]
    clock.now += 9
    pin.drive_low()   # the press itself withdraws it, before any hold
    assert node.store.get_alert(alert.id).state is State.CANCELLED
    assert not node.wait_for(lambda: alert_count(node) > 1, timeout=3 * HOLD), "that press must not raise"
    pin.drive_high()
    assert [e["state"] for e in node.store.events(alert.id)] == [State.REPORTED, State.CANCELLED]


def test_after_the_cancel_window_a_press_withdraws_nothing(make_node):
    node, factory, clock = make_node(hardware__cancel_window=10.0)
    pin = factory.pin(17)
    hold(node, pin, lambda: alert_count(node) == 1)
    alert = node.store.active_alerts()[0]
    clock.now += 11
    pin.drive_low()
    pin.drive_high()
    assert node.store.get_alert(alert.id).state is State.REPORTED
    node.act("cancel", alert.id)  # now it is a captain's action
    assert node.store.get_alert(alert.id).state is State.CANCELLED


def test_within_the_cancel_window_a_confirmed_report_is_only_silenced(tmp_path):
    block = Block(tmp_path / "block", 2, hold_time=HOLD).start()
    try:
        node = block.nodes[1]
        hold(node, block.button_pin(1), lambda: bool(node.store.active_alerts()))
        alert = node.store.active_alerts()[0]
        block.scheduler.run_for(3)
        block.nodes[2].act("confirm", alert.id)
        block.scheduler.run_for(3)  # 6 s after the hold: still inside the 10 s window
        assert node.hardware.siren.playing == "confirmed"
        block.button_pin(1).drive_low()
        block.button_pin(1).drive_high()
        assert node.store.get_alert(alert.id).state is State.CONFIRMED
        assert node.hardware.siren.playing == ""
    finally:
        block.stop()


def test_the_cancel_window_does_not_withdraw_a_report_merged_into_another_node_s(tmp_path):
    block = Block(tmp_path / "block", 2, hold_time=HOLD).start()
    try:
        theirs = block.nodes[2].report(location=101)  # node 2 reports node 1's place first
        block.scheduler.run_for(10)
        node = block.nodes[1]
        node.hardware.silence()  # node 1 is chiming node 2's report; a press now would only silence it
        hold(node, block.button_pin(1), lambda: len(node.store.events(theirs.id)) > 1)
        assert node.store.active_alerts()[0].id == theirs.id  # merged
        block.button_pin(1).drive_low()
        block.button_pin(1).drive_high()
        assert node.store.get_alert(theirs.id).state is State.REPORTED
    finally:
        block.stop()


def test_a_silence_press_stops_this_siren_and_changes_no_alert(tmp_path):
    block = Block(tmp_path / "block", 2, hold_time=HOLD).start()
    try:
        alert = block.nodes[2].report()
        block.scheduler.run_for(10)
        node = block.nodes[1]
        node.act("confirm", alert.id)
        block.scheduler.run_for(10)
        siren = block.siren_pin(1)
        assert node.hardware.siren.playing == "confirmed"
        events, pending = len(node.store.events()), len(node.store.pending())
        pin = block.button_pin(1)
        pin.drive_low()
        assert node.hardware.siren.playing == "" and not siren.state
        assert not node.wait_for(lambda: len(node.store.events()) > events, timeout=3 * HOLD), \
            "holding the silencing press must not raise a report"
        pin.drive_high()
        assert node.store.get_alert(alert.id).state is State.CONFIRMED
        assert len(node.store.events()) == events and len(node.store.pending()) == pending
        block.scheduler.run_for(10)
        assert block.nodes[2].store.get_alert(alert.id).state is State.CONFIRMED  # only this node is quiet
        assert block.nodes[2].hardware.siren.playing == "confirmed"
    finally:
        block.stop()


def test_the_confirm_button_confirms_another_node_s_report_then_clears_it(tmp_path):
    block = Block(tmp_path / "block", 2, hold_time=HOLD, overrides={"hardware.confirm_pin": 5}).start()
    try:
        node = block.nodes[1]
        confirm_pin = block.factories[1].pin(5)
        alert = block.nodes[2].report()
        block.scheduler.run_for(10)
        node.hardware.silence()
        hold(node, confirm_pin, lambda: node.store.get_alert(alert.id).state is State.CONFIRMED)
        node.hardware.silence()
        hold(node, confirm_pin, lambda: node.store.get_alert(alert.id).state is State.ALL_CLEAR)
        block.scheduler.run_for(30)
        assert block.nodes[2].store.get_alert(alert.id).state is State.ALL_CLEAR
    finally:
        block.stop()


def test_the_light_is_red_while_an_alert_is_active(make_node):
    node, factory, _ = make_node(hardware__light_kind="rgb")
    confirmed = watch_confirmations(node.hardware.light)
    hold(node, factory.pin(17), lambda: alert_count(node) == 1)
    assert confirmed.wait(5) and node.hardware.light.join(5)
    assert node.hardware.light.mode == "alarm"
    assert (factory.pin(22).state, factory.pin(23).state, factory.pin(24).state) == (1, 0, 0)


def test_only_alarms_are_silenceable():
    assert "confirmed" in SILENCEABLE and "reported" in SILENCEABLE
    assert "reported_origin" not in SILENCEABLE and "ack" not in SILENCEABLE  # the captain's own feedback


# -- silbato hardware test --------------------------------------------------------------------

def test_hardware_test_passes_on_mock_pins(tmp_path):
    env = {"SILBATO_NODE_STATE_DIR": str(tmp_path), "SILBATO_HARDWARE_HOLD_TIME": str(HOLD),
           "SILBATO_HARDWARE_CONFIRM_PIN": "5"}
    result = CliRunner().invoke(cli, ["hardware", "test", "--mock", "--step", "0.01", "--wait", "5"], env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "PASS light" in result.output
    for name in PATTERNS:
        assert any(line.startswith(f"PASS siren {name}:") for line in lines), name
    assert any(line.startswith("PASS panic button:") for line in lines)
    assert any(line.startswith("PASS confirm button:") for line in lines)
    assert any(line.startswith("SKIP speaker:") for line in lines)
    assert not any(line.startswith("FAIL") for line in lines)


def test_hardware_test_fails_a_tap_and_a_missing_press(tmp_path):
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = config_mod.from_mapping({"node.state_dir": str(tmp_path), "hardware.hold_time": 0.5,
                                   "hardware.confirm_pin": 5})
    lines = []
    tap = scripted_hold(factory, 0.0)
    ok = check(cfg, say=lines.append, pin_factory=factory, press=lambda pin: tap(pin) if pin == 17 else None,
               wait=0.2, step=0.0)
    assert not ok
    assert any(line.startswith("FAIL panic button: pressed, but released before") for line in lines), lines
    assert any(line.startswith("FAIL confirm button: no press within") for line in lines), lines
    assert lines[-1] == "hardware test: FAILED"


def test_hardware_test_reports_busy_gpio_in_one_line(tmp_path):
    factory = MockFactory(pin_class=MockPWMPin)
    cfg = config_mod.from_mapping({"node.state_dir": str(tmp_path), "hardware.siren_pin": 17})  # clash
    lines = []
    assert not check(cfg, say=lines.append, pin_factory=factory, wait=0.1, step=0.0)
    assert lines[0].startswith("FAIL gpio: GPIO setup failed")


# -- the benchmark still runs -------------------------------------------------------------------

def test_local_latency_benchmark_smoke(capsys):
    spec = importlib.util.spec_from_file_location("local_latency",
                                                  Path(__file__).parent / "bench" / "local_latency.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--holds", "5", "--hold-time", "0.02"])
    assert result["holds"] == 5 and len(result["latencies_ms"]) == 5
    assert "p99" in capsys.readouterr().out
