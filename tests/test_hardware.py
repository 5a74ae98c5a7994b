"""Button, siren and light on gpiozero's MockFactory pins."""

import pytest
from gpiozero.pins.mock import MockFactory

from node.alerts import State
from node.hardware import PATTERNS, Hardware, pattern_duration, pattern_for


@pytest.fixture
def factory():
    return MockFactory()


@pytest.fixture
def hardware(factory):
    import threading
    held = threading.Event()
    hw = Hardware(button_pin=17, siren_pin=27, light_pin=22, hold_time=0.1, on_hold=held.set, pin_factory=factory)
    hw.held = held
    yield hw
    hw.close()


def test_a_full_hold_fires_once(hardware, factory):
    factory.pin(17).drive_low()
    assert hardware.held.wait(5)
    factory.pin(17).drive_high()


def test_a_tap_shorter_than_the_hold_time_fires_nothing(hardware, factory):
    for _ in range(20):
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()
    assert not hardware.held.wait(0.5)


def test_a_failing_hold_handler_does_not_kill_the_button(factory):
    def boom():
        raise RuntimeError("handler bug")
    hw = Hardware(button_pin=17, siren_pin=27, light_pin=22, hold_time=0.05, on_hold=boom, pin_factory=factory)
    try:
        factory.pin(17).drive_low()
        factory.pin(17).drive_high()
    finally:
        hw.close()


def test_each_state_has_its_pattern():
    assert pattern_for(State.REPORTED, at_origin=True, test=False) == "reported_origin"
    assert pattern_for(State.REPORTED, at_origin=False, test=False) == "reported"
    assert pattern_for(State.CONFIRMED, at_origin=False, test=False) == "confirmed"
    assert pattern_for(State.CONFIRMED, at_origin=False, test=True) == "test"
    assert pattern_for(State.EXPIRED, at_origin=False, test=False) == ""
    steps, repeat = PATTERNS["confirmed"]
    assert len(steps) == 3 and all(on >= 1.0 for on, _ in steps)  # three long blasts
    assert 55 <= pattern_duration("confirmed") <= 65               # about a minute


def test_the_siren_turns_on_at_once_and_silence_turns_it_off(hardware, factory):
    siren = factory.pin(27)
    hardware.siren.sound("confirmed")
    assert siren.state
    hardware.siren.silence()
    assert not siren.state and hardware.siren.playing == ""


def test_the_light_shows_alarm_trouble_and_health(hardware, factory):
    hardware.light.show(alarm=True, trouble=True)
    assert hardware.light.mode == "alarm" and factory.pin(22).state
    hardware.light.show(alarm=False, trouble=True)
    assert hardware.light.mode == "trouble"
    hardware.light.show(alarm=False, trouble=False)
    assert hardware.light.mode == "healthy"
