"""The alert lifecycle: a pure state machine. No I/O; the clock is passed in as ``now`` (seconds).

::

    REPORTED --confirm (different signer)--> CONFIRMED --all clear--> ALL_CLEAR
       |                                        |
       +--cancel (false alarm)--> CANCELLED <---+
    any active state --no state change for expire_after seconds--> EXPIRED

Every node applies the same rules to its own actions and to signed frames from
the air. A frame carries the whole state (alert id, kind, place, reporter), so a
node that missed REPORTED can still take CONFIRMED; one that never heard of an
alert cannot clear or cancel it.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, replace
from typing import Collection, Iterable

from node.errors import TransitionError


class Kind(enum.IntEnum):
    RAID = 1
    TEST = 2
    DRILL = 3  # the scheduled self-test: a TEST that no node sounds

    @property
    def word(self) -> str:
        """``raid`` or ``test`` (a drill is a test that stays silent)."""
        return "raid" if self is Kind.RAID else "test"

    @property
    def silent(self) -> bool:
        return self is Kind.DRILL


class State(enum.IntEnum):
    REPORTED = 1
    CONFIRMED = 2
    ALL_CLEAR = 3
    CANCELLED = 4
    EXPIRED = 5  # local only: never sent on air

    @property
    def word(self) -> str:
        return self.name.lower()


ACTIVE = frozenset({State.REPORTED, State.CONFIRMED})
ENDED = frozenset({State.ALL_CLEAR, State.CANCELLED, State.EXPIRED})
ON_AIR = frozenset({State.REPORTED, State.CONFIRMED, State.ALL_CLEAR, State.CANCELLED})


def newer(state: State, than: State) -> bool:
    """Whether ``state`` comes after ``than`` in an alert's life as the air knows it (REPORTED,
    then CONFIRMED, then ALL_CLEAR or CANCELLED): a node holding ``than`` is behind one holding
    ``state``. Two ended states, or EXPIRED (local only), are never newer than another."""
    if than not in ACTIVE or state not in ON_AIR:
        return False
    return state in ENDED or (state is State.CONFIRMED and than is State.REPORTED)


class Outcome(enum.Enum):
    NEW = "new"              # a new incident opened
    CHANGED = "changed"      # state moved forward: sound it
    DUPLICATE = "duplicate"  # same state again (a re-send): nothing to sound
    STALE = "stale"          # an older state arriving late: old news, ignored and not logged
    MERGED = "merged"        # a second report of a place already reported: folded in

    @property
    def sounds(self) -> bool:
        return self in (Outcome.NEW, Outcome.CHANGED)


@dataclass(frozen=True)
class Alert:
    """One incident as this node knows it. Times are this node's clock, in seconds."""

    id: str              # "<reporter node id>-<counter of the first report frame>"
    kind: Kind
    location: int        # location code from the roster; the place name lives in the roster
    reporter: int        # node id that reported it
    state: State
    signer: int          # node id that signed the current state
    opened_at: float
    updated_at: float    # last state change (re-sends do not count)
    last_report_at: float

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass(frozen=True)
class Transition:
    """A request to move ``alert_id`` to ``state``, signed by node ``signer``."""

    alert_id: str
    kind: Kind
    location: int
    reporter: int
    state: State
    signer: int


_ALERT_ID = re.compile(r"([1-9][0-9]{0,4})-([1-9][0-9]{0,9})")


def alert_id(reporter: int, counter: int) -> str:
    return f"{reporter}-{counter}"


def parse_alert_id(text: str) -> tuple[int, int]:
    """``"3-17"`` -> ``(3, 17)``; raises ``TransitionError`` on anything else."""
    match = _ALERT_ID.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise TransitionError(f"not an alert id: {text!r}")
    pair = int(match[1]), int(match[2])
    if not (0 < pair[0] < 2**16 and 0 < pair[1] < 2**32):
        raise TransitionError(f"not an alert id: {text!r}")
    return pair


def apply(current: Alert | None, t: Transition, now: float,
          dispatchers: Collection[int] = frozenset()) -> tuple[Alert, Outcome]:
    """Apply transition ``t`` to ``current`` (``None`` if unknown). Raises ``TransitionError``.

    ``dispatchers``: the roster's dispatcher nodes (``Roster.dispatchers``), the only ones whose
    confirmation of a report they signed themselves is taken (see ``_check_signer``)."""
    if t.state not in ON_AIR:
        raise TransitionError(f"{t.state.word} cannot be requested")
    if current is None:
        if t.state is State.REPORTED:
            return _open(t, now), Outcome.NEW
        if t.state is State.CONFIRMED:
            _check_signer(t.reporter, t, dispatchers)
            return replace(_open(t, now), state=State.CONFIRMED), Outcome.NEW
        raise TransitionError(f"cannot mark unknown alert {t.alert_id} {t.state.word}")
    if (t.kind, t.location, t.reporter) != (current.kind, current.location, current.reporter):
        raise TransitionError(f"alert {t.alert_id}: kind, place or reporter does not match")
    if t.state is current.state:
        if t.state is State.REPORTED:
            return replace(current, last_report_at=now), Outcome.DUPLICATE
        return current, Outcome.DUPLICATE
    if current.state in ENDED and t.state is State.REPORTED:
        return current, Outcome.STALE  # a late copy of the report (a relay's, a re-send): old news
    if current.state in ENDED:
        raise TransitionError(f"cannot mark {current.state.word} alert {current.id} {t.state.word}")
    # current is REPORTED or CONFIRMED, t.state is a different state
    if t.state is State.REPORTED:
        return current, Outcome.STALE  # a late re-send of the report
    if t.state is State.CONFIRMED:
        _check_signer(current.reporter, t, dispatchers)
    # REPORTED -> ALL_CLEAR is taken from the air: the signer's node saw CONFIRMED
    # even though this node missed it. A node's own all clear needs CONFIRMED (see request()).
    return replace(current, state=t.state, signer=t.signer, updated_at=now), Outcome.CHANGED


def _open(t: Transition, now: float) -> Alert:
    return Alert(id=t.alert_id, kind=t.kind, location=t.location, reporter=t.reporter, state=t.state,
                 signer=t.signer, opened_at=now, updated_at=now, last_report_at=now)


def _check_signer(reporter: int, t: Transition, dispatchers: Collection[int] = frozenset()) -> None:
    """Two signers: a node cannot confirm its own report, except a dispatcher (the block's SMS
    gateway, marked on the signed roster), which signs for two different responders: the
    gateway's daemon checks that the confirming responder is not the reporting one."""
    if t.signer == reporter and t.signer not in dispatchers:
        raise TransitionError(f"alert {t.alert_id}: confirming needs a signer other than the reporter")


ACTION_STATE = {"confirm": State.CONFIRMED, "all_clear": State.ALL_CLEAR, "cancel": State.CANCELLED}


def request(current: Alert | None, action: str, signer: int, alert_ref: str = "") -> Transition:
    """Build this node's own transition for ``action`` on ``current``, or raise ``TransitionError``.

    Stricter than :func:`apply`: a node only clears what it has seen confirmed.
    """
    if action not in ACTION_STATE:
        raise TransitionError(f"unknown action {action!r}")
    if current is None:
        raise TransitionError(f"cannot {action.replace('_', ' ')} unknown alert {alert_ref}")
    state = ACTION_STATE[action]
    if state is State.ALL_CLEAR and current.state is State.REPORTED:
        raise TransitionError(f"alert {current.id} is not confirmed; cancel it instead of clearing it")
    if current.state in ENDED:
        raise TransitionError(f"cannot {action.replace('_', ' ')} {current.state.word} alert {current.id}")
    return Transition(current.id, current.kind, current.location, current.reporter, state, signer)


def merge_target(alerts: Iterable[Alert], kind: Kind, location: int, now: float, window: float,
                 exclude: str = "") -> Alert | None:
    """The active incident that a new report of ``location`` should fold into, if any."""
    for alert in alerts:
        if (alert.active and alert.id != exclude and alert.kind == kind and alert.location == location
                and now - alert.last_report_at <= window):
            return alert
    return None


def expired(alerts: Iterable[Alert], now: float, quiet: float) -> list[Alert]:
    """Active alerts whose state has not changed for ``quiet`` seconds, moved to EXPIRED."""
    return [replace(a, state=State.EXPIRED, updated_at=now) for a in alerts
            if a.active and now - a.updated_at >= quiet]
