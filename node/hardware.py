"""Button, siren and status light. The only module that imports gpiozero.

Wiring (BCM numbering, defaults in ``node.config``):

- panic button between GPIO17 and GND (internal pull-up; pressed reads low);
- siren relay or active buzzer driven from GPIO27 (active high);
- status LED from GPIO22 through a 330 ohm resistor to GND.

Every device takes ``pin_factory``; tests and ``silbato sim`` pass gpiozero's
``MockFactory``, a laptop can set ``GPIOZERO_PIN_FACTORY=mock``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Sequence

from gpiozero import LED, Button, OutputDevice
from gpiozero.exc import GPIOZeroError

from node.alerts import State
from node.errors import HardwareError

log = logging.getLogger(__name__)

# Patterns are data: (on seconds, off seconds) steps, played ``repeat`` times.
Pattern = tuple[tuple[tuple[float, float], ...], int]

PATTERNS: dict[str, Pattern] = {
    "reported_origin": (((0.1, 0.1),) * 3, 1),         # short chirps at the node that reported
    "reported": (((0.3, 0.2), (0.3, 0.0)), 1),           # indoor chime elsewhere
    "confirmed": (((1.0, 0.5), (1.0, 0.5), (1.0, 1.5)), 10),  # the whistle: three long blasts, 60 s
    "all_clear": (((0.2, 0.1), (0.4, 0.0)), 1),
    "cancelled": (((0.6, 0.0),), 1),
    "test": (((0.05, 0.0),), 1),
    "ack": (((0.05, 0.05),) * 2, 1),                     # the hold was accepted
}


def pattern_for(state: State, *, at_origin: bool, test: bool) -> str:
    """The name of the siren pattern for a new alert state."""
    if test:
        return "test"
    if state is State.REPORTED:
        return "reported_origin" if at_origin else "reported"
    return {State.CONFIRMED: "confirmed", State.ALL_CLEAR: "all_clear", State.CANCELLED: "cancelled"}.get(state, "")


def pattern_duration(name: str) -> float:
    steps, repeat = PATTERNS[name]
    return sum(on + off for on, off in steps) * repeat


class Siren:
    """A relay-driven siren or active buzzer on one pin. ``sound(name)`` plays a pattern in the background."""

    def __init__(self, pin: int, *, pin_factory=None):
        self._device = OutputDevice(pin, pin_factory=pin_factory)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.playing = ""

    def sound(self, name: str) -> None:
        """Start pattern ``name``, replacing whatever is playing. Returns at once."""
        steps, repeat = PATTERNS[name]
        with self._lock:
            self._halt()
            self._stop = threading.Event()
            self.playing = name
            self._device.on()  # the first step starts now, not when the thread is scheduled
            self._thread = threading.Thread(target=self._play, args=(steps, repeat, self._stop),
                                            name=f"siren-{name}", daemon=True)
            self._thread.start()

    def _play(self, steps: Sequence[tuple[float, float]], repeat: int, stop: threading.Event) -> None:
        first = True
        for _ in range(repeat):
            for on, off in steps:
                if not first:
                    self._device.on()
                first = False
                if stop.wait(on):
                    break
                self._device.off()
                if stop.wait(off):
                    break
            if stop.is_set():
                break
        self._device.off()
        if not stop.is_set():
            self.playing = ""

    def silence(self) -> None:
        """Stop this node's siren. Never changes an alert."""
        with self._lock:
            self._halt()

    def _halt(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._device.off()
        self.playing = ""

    def close(self) -> None:
        self.silence()
        self._device.close()


class StatusLight:
    """One LED: slow blink healthy, fast blink TROUBLE, steady while an alert is active."""

    def __init__(self, pin: int, *, pin_factory=None):
        self._led = LED(pin, pin_factory=pin_factory)
        self.mode = ""

    def show(self, *, alarm: bool, trouble: bool) -> None:
        mode = "alarm" if alarm else "trouble" if trouble else "healthy"
        if mode == self.mode:
            return
        self.mode = mode
        if mode == "alarm":
            self._led.on()
        elif mode == "trouble":
            self._led.blink(on_time=0.2, off_time=0.2)
        else:
            self._led.blink(on_time=0.1, off_time=2.9)

    def close(self) -> None:
        self._led.close()


class PanicButton:
    """The big button, wired between the pin and GND. ``when_held`` fires after ``hold_time`` seconds."""

    def __init__(self, pin: int, *, hold_time: float, pin_factory=None):
        # bounce_time filters contact bounce; a tap shorter than hold_time never fires when_held.
        self._button = Button(pin, pull_up=True, hold_time=hold_time, bounce_time=0.02, pin_factory=pin_factory)
        self.when_held: Callable[[], None] | None = None
        self._button.when_held = self._held

    def _held(self) -> None:
        if self.when_held is not None:
            self.when_held()

    @property
    def is_pressed(self) -> bool:
        return self._button.is_pressed

    def close(self) -> None:
        self._button.close()


class Hardware:
    """The node's devices, built from config. ``on_hold`` is called when the button is held."""

    def __init__(self, *, button_pin: int, siren_pin: int, light_pin: int, hold_time: float,
                 on_hold: Callable[[], None], pin_factory=None):
        try:
            self.siren = Siren(siren_pin, pin_factory=pin_factory)
            self.light = StatusLight(light_pin, pin_factory=pin_factory)
            self.button = PanicButton(button_pin, hold_time=hold_time, pin_factory=pin_factory)
        except (GPIOZeroError, OSError) as exc:
            raise HardwareError(f"GPIO setup failed: {exc}") from exc
        self.button.when_held = self._guard(on_hold)
        self.light.show(alarm=False, trouble=False)

    @staticmethod
    def _guard(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except Exception:  # a failing handler must not kill gpiozero's thread
                log.exception("button hold handler failed")
        return run

    def sound(self, state: State, *, at_origin: bool, test: bool) -> None:
        name = pattern_for(state, at_origin=at_origin, test=test)
        if name:
            self.siren.sound(name)

    def close(self) -> None:
        for device in (self.button, self.light, self.siren):
            try:
                device.close()
            except Exception:
                log.exception("closing %s failed", type(device).__name__)
