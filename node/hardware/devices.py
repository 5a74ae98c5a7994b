"""Button, siren, status light and speaker. The only module that imports gpiozero.

Wiring (BCM numbering, defaults in ``node.config``; docs/hardware.md has the diagram):

- panic button between GPIO17 and GND (internal pull-up; pressed reads low);
- optional confirm button between ``hardware.confirm_pin`` and GND;
- siren on GPIO27 (active high), wired as ``hardware.siren_kind`` says:
  ``relay``, a relay module (or NPN transistor) switching a 12 V siren (``OutputDevice``);
  ``buzzer``, a 5 V active buzzer through an NPN transistor (``Buzzer``);
  ``piezo``, a passive piezo through an NPN transistor, played in tones (``TonalBuzzer``);
- status light: one LED from GPIO22 through 330 ohm to GND, or (``hardware.light_kind = "rgb"``)
  an RGB LED or three LEDs on ``hardware.rgb_pins`` (red, green, blue), each through 330 ohm,
  common cathode to GND.

The speaker needs no GPIO; ``node.hardware.speech`` renders and plays its announcements.

Every device takes ``pin_factory``; tests and ``silbato sim`` pass gpiozero's
``MockFactory``; on a laptop ``silbato run --mock-pins`` does, or ``GPIOZERO_PIN_FACTORY=mock``.
Off a Pi without either, ``Hardware`` refuses with one line (``NO_GPIO``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import warnings
from typing import Any, Callable, Mapping, Sequence

from gpiozero import LED, RGBLED, Button, Buzzer, Device, OutputDevice, TonalBuzzer
from gpiozero.exc import BadPinFactory, GPIOZeroError
from gpiozero.pins.mock import MockFactory, MockPWMPin

from node.hardware import speech
from node.hardware.player import Player
from node.hardware.patterns import PIEZO_MID_TONE, SILENCEABLE, in_quiet_hours, pattern_for, pattern_steps
from node.protocol.alerts import State
from node.config import parse_pins, parse_quiet_hours
from node.errors import HardwareError

log = logging.getLogger(__name__)

Wait = Callable[[threading.Event, float], bool]


def _wait(stop: threading.Event, seconds: float) -> bool:
    """Wait ``seconds``; True if ``stop`` was set meanwhile. Tests pass a virtual clock's instead."""
    return stop.wait(seconds)


class Siren(Player):
    """The siren on one pin. ``sound(name)`` plays a pattern in the background; ``silence()`` stops it.

    ``kind``: ``relay`` (OutputDevice), ``buzzer`` (Buzzer) or ``piezo`` (TonalBuzzer, needs a PWM pin).
    """

    def __init__(self, pin: int, *, kind: str = "relay", confirmed_duration: float = 60.0, pin_factory=None,
                 wait: Wait = _wait):
        if kind == "relay":
            self._device = OutputDevice(pin, pin_factory=pin_factory)
        elif kind == "buzzer":
            self._device = Buzzer(pin, pin_factory=pin_factory)
        elif kind == "piezo":
            self._device = TonalBuzzer(pin, mid_tone=PIEZO_MID_TONE, octaves=1, pin_factory=pin_factory)
        else:
            raise HardwareError(f"unknown siren kind {kind!r}: expected relay, buzzer or piezo")
        self.kind = kind
        self.confirmed_duration = confirmed_duration
        self._wait = wait
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.playing = ""

    def _on(self, note: str) -> None:
        if self.kind == "piezo":
            self._device.play(note)
        else:
            self._device.on()

    def _off(self) -> None:
        if self.kind == "piezo":
            self._device.stop()
        else:
            self._device.off()

    def sound(self, name: str) -> None:
        """Start pattern ``name``, replacing whatever is playing. Returns at once."""
        steps = pattern_steps(name, confirmed_duration=self.confirmed_duration)
        with self._lock:
            self._halt()
            self._stop = stop = threading.Event()
            self.playing = name
            self._on(steps[0][2])  # the first step starts now, not when the thread is scheduled
            self._thread = threading.Thread(target=self._play, args=(steps, stop), name=f"siren-{name}", daemon=True)
            self._thread.start()

    def _play(self, steps: Sequence[tuple[float, float, str]], stop: threading.Event) -> None:
        last = len(steps) - 1
        for i, (on, off, note) in enumerate(steps):
            if i:
                self._on(note)  # a relay already on from a joined step stays on
            if self._wait(stop, on):
                break
            if off or i == last:
                self._off()
                if off and self._wait(stop, off):
                    break
        self._off()
        if not stop.is_set():
            self.playing = ""

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._off()
        self.playing = ""

    def close(self) -> None:
        self.silence()
        self._device.close()


Color = tuple[int, int, int]
GREEN, AMBER, RED, WHITE, BLUE = (0, 1, 0), (1, 1, 0), (1, 0, 0), (1, 1, 1), (0, 0, 1)


class StatusLight:
    """The status light: one LED on ``pin``, or an RGB LED (or three LEDs) on ``rgb_pins``.

    Modes (``show``): healthy, a slow green blink; trouble, an amber blink; alarm, steady red.
    Two short overlays take the light for a moment: ``progress(seconds)`` counts a hold down
    in four white blinks, ``confirm()`` answers a hold that was taken with three quick blue
    ones and then returns to the mode. A single LED has one colour, so there the rhythm
    tells the modes apart.
    """

    def __init__(self, pin: int = 22, *, rgb_pins: Sequence[int] | None = None, pin_factory=None):
        if rgb_pins:
            # pwm=False: on/off colours work on any pin and with three plain LEDs.
            self._device: Any = RGBLED(*rgb_pins, pwm=False, pin_factory=pin_factory)
        else:
            self._device = LED(pin, pin_factory=pin_factory)
        self.rgb = bool(rgb_pins)
        self.mode = ""
        self.overlay = ""
        self._lock = threading.RLock()
        self._generation = 0  # bumped by every overlay and by its end; a stale overlay thread stops writing
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self._closed = False

    def _steady(self, color: Color) -> None:
        if self.rgb:
            self._device.color = color
        elif any(color):
            self._device.on()
        else:
            self._device.off()

    def _apply(self) -> None:
        if self._closed:
            return
        if self.mode == "alarm":
            self._steady(RED)
        elif self.mode == "trouble":
            self._blink(0.25, 0.25, AMBER)
        else:
            self._blink(0.1, 2.9, GREEN)

    def _blink(self, on: float, off: float, color: Color) -> None:
        self._steady((0, 0, 0))  # dark now, not when gpiozero's blink thread gets to run
        if self.rgb:
            self._device.blink(on_time=on, off_time=off, on_color=color)
        else:
            self._device.blink(on_time=on, off_time=off)

    def show(self, *, alarm: bool, trouble: bool) -> None:
        """Set the mode: alarm wins over trouble, trouble over healthy. An overlay finishes first."""
        mode = "alarm" if alarm else "trouble" if trouble else "healthy"
        with self._lock:
            if mode == self.mode:
                return
            self.mode = mode
            if not self.overlay:
                self._apply()

    def progress(self, seconds: float) -> None:
        """While a button is held: four white blinks spread over ``seconds``, the hold time."""
        self._start_overlay("progress", seconds / 8, 4, WHITE)

    def confirm(self) -> None:
        """A hold was taken: three quick blue blinks, then the mode."""
        self._start_overlay("confirm", 0.08, 3, BLUE)

    def end_progress(self) -> None:
        """The button was released (or the hold was refused): back to the mode."""
        with self._lock:
            if self.overlay == "progress":
                self._end_overlay()

    def _start_overlay(self, name: str, half: float, blinks: int, color: Color) -> None:
        with self._lock:
            if self._closed:
                return
            self._generation += 1
            self.overlay = name
            self._stop.set()  # the previous overlay's thread, if any, stops at once
            self._stop = stop = threading.Event()
            self._worker = threading.Thread(target=self._run_overlay,
                                            args=(self._generation, half, blinks, color, stop),
                                            name=f"light-{name}", daemon=True)
            self._worker.start()

    def _run_overlay(self, generation: int, half: float, blinks: int, color: Color, stop: threading.Event) -> None:
        for lit in [True, False] * blinks:
            with self._lock:
                if generation != self._generation or self._closed:
                    return
                self._steady(color if lit else (0, 0, 0))
            if stop.wait(half):
                return
        with self._lock:
            if generation == self._generation and self.overlay == "confirm":
                self._end_overlay()

    def _end_overlay(self) -> None:
        self._generation += 1
        self.overlay = ""
        self._stop.set()
        self._apply()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the overlay running now has ended (a confirmation ends by itself)."""
        worker = self._worker
        if worker is not None:
            worker.join(timeout)
            return not worker.is_alive()
        return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._generation += 1
            self._stop.set()
        self.join(timeout=2)
        self._device.close()


class PanicButton:
    """A push button between ``pin`` and GND (internal pull-up; pressed reads low).

    Events, called from gpiozero's threads: ``when_pressed``, ``when_held`` (still pressed
    after ``hold_time`` seconds; once per press) and ``when_released``. A press shorter than
    ``hold_time`` never fires ``when_held``. On a Pi, ``bounce_time`` (seconds) debounces.
    """

    def __init__(self, pin: int, *, hold_time: float, bounce_time: float = 0.02, pin_factory=None):
        self._button = Button(pin, pull_up=True, hold_time=hold_time, bounce_time=bounce_time,
                              pin_factory=pin_factory)
        self.pin = pin
        self.hold_time = hold_time
        self.consumed = False  # this press already did something (silence, withdraw): its hold does nothing
        self.when_pressed: Callable[[], None] | None = None
        self.when_held: Callable[[], None] | None = None
        self.when_released: Callable[[], None] | None = None
        self._button.when_pressed = lambda: self._fire(self.when_pressed)
        self._button.when_held = lambda: self._fire(self.when_held)
        self._button.when_released = lambda: self._fire(self.when_released)

    @staticmethod
    def _fire(handler: Callable[[], None] | None) -> None:
        if handler is not None:
            handler()

    @property
    def is_pressed(self) -> bool:
        return self._button.is_pressed

    def wait_for_press(self, timeout: float | None = None) -> bool:
        return self._button.wait_for_press(timeout)

    def wait_for_release(self, timeout: float | None = None) -> bool:
        return self._button.wait_for_release(timeout)

    def close(self) -> None:
        self._button.close()


WIPE_HOLD = 10.0  # seconds both buttons must stay down to wipe the node


class Hardware:
    """The node's devices, built from the ``hardware.*`` settings.

    Callbacks (from gpiozero's threads; an exception in one is logged, never raised):

    - ``on_hold()``: the panic button was held for ``hardware.hold_time``. Return something
      true when a report was raised, and the light answers with its confirmation blink.
    - ``on_press()``: the panic button went down. Return True if the press was used (the
      daemon withdrew its own report within ``hardware.cancel_window``); it then raises nothing.
    - ``on_confirm()``: the second button was held (confirm or all clear).

    Otherwise a press while an alarm sounds silences this node (siren and speaker) and
    leaves every alert as it is; that press raises nothing either, however long it is held.
    """

    def __init__(self, config: Mapping[str, Any], *, on_hold: Callable[[], Any],
                 on_press: Callable[[], Any] | None = None, on_confirm: Callable[[], Any] | None = None,
                 on_wipe: Callable[[], Any] | None = None,
                 speaker: speech.Speaker | None = None, pin_factory=None,
                 clock: Callable[[], float] = time.time, wait: Wait = _wait):
        self.hold_time = config["hardware.hold_time"]
        self._quiet = parse_quiet_hours(config["hardware.quiet_hours"])
        self._clock = clock
        self._on_hold, self._on_press, self._on_confirm = on_hold, on_press, on_confirm
        self._on_wipe = on_wipe
        self._wiping = threading.Lock()  # one wipe gesture watched at a time
        self.confirm_button: PanicButton | None = None
        if pin_factory is None:
            pin_factory = default_pin_factory()
        built: list[Any] = []
        try:
            self.siren = Siren(config["hardware.siren_pin"], kind=config["hardware.siren_kind"],
                               confirmed_duration=config["hardware.confirmed_duration"],
                               pin_factory=pin_factory, wait=wait)
            built.append(self.siren)
            rgb = parse_pins(config["hardware.rgb_pins"], 3) if config["hardware.light_kind"] == "rgb" else None
            self.light = StatusLight(config["hardware.light_pin"], rgb_pins=rgb, pin_factory=pin_factory)
            built.append(self.light)
            self.button = PanicButton(config["hardware.button_pin"], hold_time=self.hold_time,
                                      pin_factory=pin_factory)
            built.append(self.button)
            if config["hardware.confirm_pin"]:
                self.confirm_button = PanicButton(config["hardware.confirm_pin"], hold_time=self.hold_time,
                                                  pin_factory=pin_factory)
                built.append(self.confirm_button)
        except (GPIOZeroError, OSError, ValueError) as exc:
            for device in reversed(built):
                device.close()
            raise HardwareError(f"GPIO setup failed: {type(exc).__name__}: {exc}") from exc
        self.button.when_pressed = self._panic_pressed
        self.button.when_held = lambda: self._held(self.button, self._on_hold)
        self.button.when_released = self.light.end_progress
        if self.confirm_button is not None:
            self.confirm_button.when_pressed = lambda: self._press(self.confirm_button, False)
            self.confirm_button.when_held = lambda: self._held(self.confirm_button, self._on_confirm)
            self.confirm_button.when_released = self.light.end_progress
        self.speaker = speaker
        if speaker is not None:
            speaker.start()
        self.light.show(alarm=False, trouble=False)

    @staticmethod
    def _call(fn: Callable[[], Any] | None) -> Any:
        if fn is None:
            return None
        try:
            return fn()
        except Exception:  # a failing handler must not kill gpiozero's thread
            log.exception("button handler failed")
            return None

    # -- the buttons ------------------------------------------------------------------------

    def _panic_pressed(self) -> None:
        self._press(self.button, bool(self._call(self._on_press)))

    def _press(self, button: PanicButton, used: bool) -> None:
        other = self.confirm_button if button is self.button else self.button
        if self.confirm_button is not None and other.is_pressed and self._on_wipe is not None:
            # Both buttons down together: the wipe gesture. Neither hold reports or confirms.
            button.consumed = other.consumed = True
            self.light.end_progress()
            threading.Thread(target=self._watch_wipe, name="wipe-gesture", daemon=True).start()
            return
        if not used and self.sounding:
            log.info("button pressed while the alarm sounds: this node is silenced; the alert is unchanged")
            self.silence()
            used = True
        button.consumed = used
        if not used:
            self.light.progress(self.hold_time)

    def _watch_wipe(self) -> None:
        """Wipe the node if both buttons stay down for WIPE_HOLD seconds."""
        if not self._wiping.acquire(blocking=False):
            return
        try:
            log.warning("both buttons down: the node wipes itself if they stay down for %.0f s", WIPE_HOLD)
            stop = threading.Event()
            deadline = time.monotonic() + WIPE_HOLD
            while time.monotonic() < deadline:
                if not (self.button.is_pressed and self.confirm_button.is_pressed):
                    log.info("wipe gesture released early: nothing wiped")
                    return
                stop.wait(0.05)
            self._call(self._on_wipe)
        finally:
            self._wiping.release()

    def _held(self, button: PanicButton, handler: Callable[[], Any] | None) -> None:
        if button.consumed:
            return
        button.consumed = True
        if self._call(handler):
            self.light.confirm()
        else:
            self.light.end_progress()

    # -- sounds ---------------------------------------------------------------------------

    def sound(self, state: State, *, at_origin: bool, test: bool, location: int = 0) -> bool:
        """Sound a new alert state: the siren's pattern and, elsewhere than the origin of a report,
        the speaker's chime and announcement. Quiet hours soften REPORTED and TEST only.
        Returns whether the siren played (a receipt says so)."""
        quiet = state is not State.CONFIRMED and in_quiet_hours(self._quiet, self._clock())
        name = pattern_for(state, at_origin=at_origin, test=test, quiet=quiet)
        if name:
            self.siren.sound(name)
        speak = not (state is State.REPORTED and at_origin) and not (test and quiet)
        if self.speaker is not None and speak:
            self.speaker.announce(state, location, test=test)
        return bool(name)

    @property
    def sounding(self) -> bool:
        """Whether an alarm is sounding that a press would silence."""
        return self.siren.playing in SILENCEABLE or (self.speaker is not None and self.speaker.playing)

    def silence(self) -> None:
        """Silence this node's siren and speaker. Never changes an alert."""
        self.siren.silence()
        if self.speaker is not None:
            self.speaker.silence()

    @property
    def trouble(self) -> str:
        """What is wrong with the hardware (the speaker), as one sentence; empty when all is well."""
        return self.speaker.trouble if self.speaker is not None else ""

    def close(self) -> None:
        for device in (self.speaker, self.confirm_button, self.button, self.light, self.siren):
            if device is None:
                continue
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", type(device).__name__)


NO_GPIO = ("no GPIO on this machine: gpiozero found no pin library that works here (on a Pi: is python3-lgpio "
           "installed, and is the node's user in the gpio group?). To try Silbato on a laptop, use mock pins: "
           "'silbato run --mock-pins', 'silbato hardware test --mock', or GPIOZERO_PIN_FACTORY=mock")


def default_pin_factory():
    """gpiozero's pin factory for this machine: ``GPIOZERO_PIN_FACTORY``, else the Pi's GPIO. Raises HardwareError.

    Off a Pi, gpiozero warns once per library it tries and then raises ``BadPinFactory``;
    this says instead, in one line, that there is no GPIO here and how to use mock pins.
    """
    with warnings.catch_warnings(record=True) as tried:  # the libraries gpiozero fell back from
        warnings.simplefilter("always")
        try:
            Device.ensure_pin_factory()
        except BadPinFactory as exc:
            for warning in tried:
                log.debug("GPIO: %s", warning.message)
            chosen = os.environ.get("GPIOZERO_PIN_FACTORY")
            if chosen:
                raise HardwareError(f"GPIOZERO_PIN_FACTORY={chosen}: {exc} (try mock, lgpio, rpigpio, pigpio "
                                    "or native)") from None
            raise HardwareError(NO_GPIO) from None
    for warning in tried:
        log.info("GPIO: %s", warning.message)
    return Device.pin_factory


def mock_factory() -> MockFactory:
    """Mock pins for a laptop and for ``silbato hardware test --mock``; PWM-capable, so a piezo works."""
    return MockFactory(pin_class=MockPWMPin)
