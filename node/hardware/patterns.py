"""The siren's patterns and tones, and quiet hours: data and pure functions, no pins."""

from __future__ import annotations

import time

from node.protocol.alerts import State


# Patterns are data: (on seconds, off seconds) steps, played ``repeat`` times. An off time
# of 0 joins a step to the next: a relay stays on, a piezo changes pitch.
Pattern = tuple[tuple[tuple[float, float], ...], int]

PATTERNS: dict[str, Pattern] = {
    "reported_origin": (((0.1, 0.1),) * 3, 1),         # short chirps at the node that reported
    "reported": (((0.3, 0.2), (0.3, 0.0)), 1),           # indoor ding-dong elsewhere
    "reported_quiet": (((0.05, 0.0),), 1),               # REPORTED elsewhere during quiet hours
    "confirmed": (((1.0, 0.5), (1.0, 0.5), (1.0, 1.5)), 10),  # the whistle: three long blasts (repeat: see below)
    "all_clear": (((0.2, 0.1), (0.4, 0.0)), 1),          # rising two-tone
    "cancelled": (((0.3, 0.0), (0.5, 0.0)), 1),          # falling tone
    "test": (((0.05, 0.0),), 1),                         # one quiet chirp
    "ack": (((0.05, 0.05),) * 2, 1),                     # a hold was taken but changed nothing
    "nearby": (((0.15, 0.1), (0.15, 0.1), (0.3, 0.0)), 1),  # a raid on another block: a rising chime, no siren
    "nearby_end": (((0.15, 0.1), (0.15, 0.0)), 1),       # it ended there (all clear, cancelled)
}

# The piezo's note for each step of a pattern (within the TonalBuzzer's A5-A7 range,
# where small piezos are loud). Relays and active buzzers have one pitch.
TONES: dict[str, tuple[str, ...]] = {
    "reported_origin": ("A6", "A6", "A6"),
    "reported": ("E6", "C6"),
    "reported_quiet": ("C6",),
    "confirmed": ("E7", "E7", "E7"),
    "all_clear": ("C6", "G6"),
    "cancelled": ("G6", "C6"),
    "test": ("A6",),
    "ack": ("A6", "A6"),
    "nearby": ("C6", "E6", "G6"),
    "nearby_end": ("G6", "E6"),
}
PIEZO_MID_TONE = "A6"

# What a short press silences: the alarms. Not the chirps that answer a captain's own hold.
SILENCEABLE = frozenset({"reported", "reported_quiet", "confirmed", "all_clear", "cancelled", "nearby", "nearby_end"})

# Before this time (2024-01-01) the clock is taken as unknown and quiet hours do not apply.
CLOCK_KNOWN_AFTER = 1_704_067_200.0


def pattern_for(state: State, *, at_origin: bool, test: bool, quiet: bool = False) -> str:
    """The name of the siren pattern for a new alert state ("" for none).

    ``quiet`` (quiet hours) softens REPORTED elsewhere to one chirp and silences TEST;
    it never changes CONFIRMED.
    """
    if test:
        return "" if quiet else "test"
    if state is State.REPORTED:
        if at_origin:
            return "reported_origin"
        return "reported_quiet" if quiet else "reported"
    return {State.CONFIRMED: "confirmed", State.ALL_CLEAR: "all_clear", State.CANCELLED: "cancelled"}.get(state, "")


def pattern_steps(name: str, *, confirmed_duration: float = 60.0) -> list[tuple[float, float, str]]:
    """Pattern ``name`` unrolled: (on seconds, off seconds, piezo note) per step.

    CONFIRMED repeats its three blasts for about ``confirmed_duration`` seconds.
    """
    steps, repeat = PATTERNS[name]
    if name == "confirmed":
        repeat = max(1, round(confirmed_duration / sum(on + off for on, off in steps)))
    notes = TONES[name]
    return [(on, off, notes[i]) for _ in range(repeat) for i, (on, off) in enumerate(steps)]


def pattern_duration(name: str, *, confirmed_duration: float = 60.0) -> float:
    """Seconds pattern ``name`` lasts."""
    return sum(on + off for on, off, _ in pattern_steps(name, confirmed_duration=confirmed_duration))


def in_quiet_hours(span: tuple[int, int] | None, now: float) -> bool:
    """Whether local time ``now`` falls in ``span`` ((start, end) minutes after midnight; may wrap).

    A clock that is plainly unset (a Pi without network or RTC) never counts as quiet.
    """
    if span is None or now < CLOCK_KNOWN_AFTER:
        return False
    local = time.localtime(now)
    minute = local.tm_hour * 60 + local.tm_min
    start, end = span
    return start <= minute < end if start < end else minute >= start or minute < end
