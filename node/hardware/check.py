"""``silbato hardware test``: light, siren, buttons and speaker, one at a time, with the maintainer watching."""

from __future__ import annotations

import threading
from typing import Any, Callable, Mapping

from gpiozero.pins.mock import MockFactory

from node.config import parse_pins
from node.errors import HardwareError
from node.hardware import speech
from node.hardware.devices import Hardware, PanicButton
from node.hardware.patterns import PATTERNS, pattern_duration
from node.protocol.alerts import State


def scripted_hold(factory: MockFactory, seconds: float) -> Callable[[int], None]:
    """For ``--mock``: a stand-in maintainer who presses pin N now and lets go ``seconds`` later."""
    def press(pin: int) -> None:
        factory.pin(pin).drive_low()
        release = threading.Timer(seconds, factory.pin(pin).drive_high)
        release.daemon = True
        release.start()
    return press


def check(config: Mapping[str, Any], *, say: Callable[[str], None], ask: Callable[[str], bool] | None = None,
          pin_factory=None, press: Callable[[int], None] | None = None, wait: float = 30.0, step: float = 1.0,
          places: Mapping[int, str] | None = None, cache_dir=None) -> bool:
    """``silbato hardware test``: drive each part and say one PASS, FAIL, WARN or SKIP line per step.

    ``ask(question)`` asks the maintainer whether they saw or heard something. With mock pins
    the pins' history is checked instead; with neither, a step passes when the part was driven
    without error. ``press(pin)`` scripts the button press (``--mock``). ``step``: seconds each
    light mode and siren pattern is shown at most; ``wait``: seconds to wait for a press.
    Returns True when no step failed.
    """
    failed = False

    def report(word: str, part: str, detail: str) -> None:
        nonlocal failed
        failed = failed or word == "FAIL"
        say(f"{word} {part}: {detail}")

    mock = isinstance(pin_factory, MockFactory)
    pause = threading.Event().wait  # paces the show for a human; nothing waits on it
    held = {"panic": threading.Event(), "confirm": threading.Event()}

    def on_hold(which: str) -> Callable[[], bool]:
        def handler() -> bool:
            held[which].set()
            hw.siren.sound("ack")  # the chirp a real hold gets
            return True
        return handler

    try:
        hw = Hardware(config, on_hold=on_hold("panic"), on_confirm=on_hold("confirm"), pin_factory=pin_factory)
    except HardwareError as exc:
        from node.hardware.devices import NO_GPIO

        busy = "" if str(exc).startswith(NO_GPIO[:20]) else " (if silbato-node runs, stop it first: systemctl stop silbato-node)"
        report("FAIL", "gpio", f"{exc}{busy}")
        return False
    try:
        _check_light(hw, config, report, ask, pin_factory if mock else None, pause, step)
        _check_siren(hw, config, report, ask, pin_factory if mock else None, pause, step)
        buttons = [("panic button", hw.button, held["panic"])]
        if hw.confirm_button is not None:
            buttons.append(("confirm button", hw.confirm_button, held["confirm"]))
        for label, button, event in buttons:
            _check_button(label, button, event, say, report, press, wait)
    finally:
        hw.close()
    _check_speaker(config, report, ask, places or {1: "Building 1"}, cache_dir)
    say("hardware test: " + ("FAILED" if failed else "passed"))
    return not failed


def _check_light(hw: Hardware, config, report, ask, factory, pause, step) -> None:
    rgb = hw.light.rgb
    pins = [factory.pin(n) for n in (parse_pins(config["hardware.rgb_pins"], 3)[:2] if rgb
                                     else [config["hardware.light_pin"]])] if factory else []
    for pin in pins:
        pin.clear_states()
    for alarm, trouble in ((False, False), (False, True), (True, False)):
        hw.light.show(alarm=alarm, trouble=trouble)
        pause(step)
    hw.light.show(alarm=False, trouble=False)
    shown = "slow green blink, amber blink, steady red" if rgb else "slow blink, fast blink, steady on"
    if factory:
        ok = all(any(s.state for s in pin.states) for pin in pins)
        report("PASS" if ok else "FAIL", "light", f"{shown} (mock pins {'lit' if ok else 'never lit'})")
    elif ask:
        ok = ask(f"Did the status light show: {shown}?")
        report("PASS" if ok else "FAIL", "light", shown if ok else
               f"not seen: check the LED, its 330 ohm resistor and GPIO{config['hardware.light_pin']}")
    else:
        report("PASS", "light", f"{shown} (driven; not confirmed by eye)")


def _check_siren(hw: Hardware, config, report, ask, factory, pause, step) -> None:
    pin = factory.pin(config["hardware.siren_pin"]) if factory else None
    for name in PATTERNS:
        if pin is not None:
            pin.clear_states()
        total = pattern_duration(name, confirmed_duration=config["hardware.confirmed_duration"])
        played = min(step, total)
        hw.siren.sound(name)
        pause(played)
        hw.siren.silence()
        detail = f"played {played:.2f} s of {total:.2f} s ({config['hardware.siren_kind']})"
        if pin is not None:
            ok = any(s.state for s in pin.states) and not pin.state
            report("PASS" if ok else "FAIL", f"siren {name}", detail if ok else f"{detail}: the pin never switched")
        else:
            report("PASS", f"siren {name}", f"{detail}, driven")
    if ask and pin is None:
        ok = ask(f"Did the siren sound {len(PATTERNS)} different patterns?")
        report("PASS" if ok else "FAIL", "siren", "heard" if ok else
               f"not heard: check the siren's supply and the relay or transistor on GPIO{config['hardware.siren_pin']}")


def _check_button(label: str, button: PanicButton, held: threading.Event, say, report, press, wait) -> None:
    hold = button.hold_time
    pressed, on_press = threading.Event(), button.when_pressed

    def seen() -> None:  # a press counts even if it is over before anyone looks
        pressed.set()
        if on_press is not None:
            on_press()

    button.when_pressed = seen
    say(f"Press and hold the {label} (GPIO{button.pin}) for {hold:g} s; waiting {wait:g} s ...")
    if press is not None:
        press(button.pin)
    if not pressed.wait(wait):
        report("FAIL", label, f"no press within {wait:g} s: check the wiring between GPIO{button.pin} and GND")
        return
    if held.wait(hold + 1.0):
        report("PASS", label, f"pressed and held {hold:g} s: hold detected (light: white blinks, then blue)")
    elif button.is_pressed:
        report("FAIL", label, f"pressed, but no hold was detected after {hold + 1.0:g} s")
    else:
        report("FAIL", label, f"pressed, but released before the {hold:g} s hold time")
    button.wait_for_release(wait)


def _check_speaker(config, report, ask, places: Mapping[int, str], cache_dir) -> None:
    import tempfile

    if not config["speaker.device"]:
        report("SKIP", "speaker", "speaker.device is empty: this node has no speaker")
        return
    with tempfile.TemporaryDirectory(prefix="silbato-speaker-") as tmp:
        speaker = speech.from_config(config, places, cache_dir=cache_dir or tmp)
        try:
            speaker.prepare()
            for source in speaker.sources():
                report({"none": "WARN"}.get(source.how, "PASS"), f"speaker {source.language}", source.detail)
            location = next(iter(places))
            clips = speaker.clips(State.CONFIRMED, location)
            for clip in clips:
                ok, message = speaker.play_file(clip)
                if not ok:
                    report("FAIL", "speaker", message)
                    return
            seconds = sum(speech.wav_seconds(c) for c in clips)
            detail = f"played the CONFIRMED chime and {len(clips) - 1} announcements ({seconds:.1f} s) " \
                     f"on {config['speaker.device']}"
            if ask:
                ok = ask("Did you hear the chime and the announcements?")
                report("PASS" if ok else "FAIL", "speaker", detail if ok else "not heard: check the speaker, "
                       f"its amplifier and the ALSA device {config['speaker.device']} (aplay -l lists devices)")
            else:
                report("PASS", "speaker", detail)
            if speaker.trouble:
                report("FAIL", "speaker", speaker.trouble)
        finally:
            speaker.close()
