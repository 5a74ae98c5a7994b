"""Relays, repairs and receipts: passing signed frames on, and telling the block who has what.

Meshtastic's flooding leaves holes where relays cancel each other or collide, so a node
relays a new alert state itself after a random wait (unless enough neighbours do first),
repairs a neighbour whose heartbeat shows it is behind, and sends receipts: its view of
who has received and sounded each alert state. All of it is ephemeral (never in the
outbox) and waits a random span so that neighbours that heard the same frame do not
transmit at the same moment. Times are seconds on the node's clock.
"""

from __future__ import annotations

import collections
import logging
import random
from dataclasses import dataclass, field
from typing import Callable, Hashable

from node.daemon.outbox import Outbox
from node.daemon.signer import Signer
from node.errors import FrameError, StoreError
from node.protocol import alerts, clock, coverage, wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.protocol.alerts import Alert, State
from node.protocol.keys import Roster
from node.store import Store

log = logging.getLogger(__name__)

RELAY_DELAY = (0.3, 2.5)  # seconds: the random wait before relaying a new alert state to neighbours
RELAY_ENOUGH = 2          # copies heard from neighbours in that wait that make this node's relay needless
# As a relay's ``enough``: no number of copies heard makes it needless (verdicts, which are rare).
NEVER_SUPPRESSED = 1 << 30
# A state this node signed goes out once more, flooded, after this random wait (seconds), unless a
# neighbour's relay of it is heard first: the one copy a first hop lost to a collision is not left
# to wait for a receipt or a heartbeat (a neighbour relays 0.3-2.5 s after it takes a state).
OWN_AGAIN = (3.0, 4.5)
# ... and, while a neighbour is needy (below), a third the same span after the second, whatever is heard: a
# reporter joined to the block by one weak link into a busy node loses copy after copy to the
# collisions there (P3 seed 1: 4 in a row), and the whole block waits on that one link.
OWN_MORE = 1
# A neighbour that still lacked a state this node had held for NEEDY_AFTER seconds, so that it had
# to be repaired, is *needy*: for NEEDY_FOR seconds after, this node relays every new state whatever
# copies it hears. Copies heard prove that other neighbours passed the state on, not that the
# needy one heard them: a building at the edge of the block, joined by one weak link to a node
# in the dense middle, hears only that node, and that node hears enough copies to stand down.
NEEDY_AFTER = 8.0
NEEDY_FOR = 6 * 3600.0
NEEDY_KEPT = 64
# A node that a neighbour's receipt or heartbeat showed lacking a state of an alert is *behind* on
# it: the flood missed this part of the block, and the buildings beyond it likely lack the state
# too. For BEHIND_FOR seconds, when a new state of that alert comes (the neighbour's repair), it is
# relayed whatever copies are heard (P3 seed 2: a confirm crossed a chain of six buildings one late
# repair at a time, 17-37 s after it was signed). Once, not twice: a second copy pushed the busiest
# node past 25% of the air in test_a_receipt_storm_stays_under_meshtastic_s_25_percent_backoff.
BEHIND_FOR = 120.0
REPAIR_GAP = 60.0         # seconds between passing one alert state to neighbours that lack it
REPAIR_WINDOW = 12        # transitions' airtimes: the random wait before a repair, so neighbours do not collide
RECEIPT_DELAY = (2.0, 20.0)   # seconds: the random wait before a receipt, so 30 nodes do not send at once
RECEIPT_AGAIN = (1.0, 6.0)    # seconds: the random wait before a further receipt (news to pass on)
# Those two waits, and the random 2 s added to a repeat or a recheck, are seconds on PACED_FOR. On
# a slower preset a receipt takes longer on air, so they are stretched by the ratio of a transition's
# airtime to PACED_FOR's (``pace``: LONG_FAST 3.3), never shortened: in seconds, with thirty first
# receipts crowded into 2-20 s, a LONG_FAST state cost 181 receipts and kept the busiest node's channel
# 42-63% busy (P3, seeds 1-5); stretched, 97 and 36-60%, and every building had each state sooner (mean
# 30 s, from 54 s). Stretching the relays' waits too, or the gaps and rechecks, was no faster, and coverage
# then took minutes longer (docs/performance.md, issue 17 round 11).
PACED_FOR = "MEDIUM_FAST"
RECEIPT_GAP = 10.0        # seconds between two receipts of one alert state from this node
MAX_RECEIPTS = 8          # receipts of one alert state from this node (each only when a neighbour needs it)
NEWS_RECEIPTS = 2         # ... and this many more each time it learns of more buildings that have it
# A neighbour still missing from this node's coverage of a state it has held this long (seconds: past
# the longest wait before a first receipt) is sent the frame, up to GAP_REPAIRS times, REPAIR_GAP apart.
REPAIR_AFTER = RECEIPT_DELAY[1] + 5.0   # (on a slower preset, the stretched wait + 5 s)
GAP_REPAIRS = 3
# The longest wait (seconds) between two rechecks of whether every live neighbour knows what this node
# does (they double from RECEIPT_GAP): uncapped, the seventh came 1280 s after the sixth, and an edge
# building whose one neighbour's receipt was lost showed a building missing for as long (P10, seeds 1, 2, 5).
RECHECK_MAX = 120.0
# ... but while a live neighbour's own last receipt shows it has not heard of buildings this node knows
# have the state, the next recheck comes this long (seconds) after the last receipt, plus up to
# RECEIPT_GAP more at random: one that had heard this node's would have answered with its own within
# RECEIPT_GAP and RECEIPT_AGAIN. Doubling there left a leaf behind a weak link 120 s on each lost
# receipt (P10, the block, seeds 4 and 5: coverage 232 and 206 s after the return).
RECHECK_LAGGING = 20.0
# It waits until no receipt of the state has come for as long: while the neighbours still tell each
# other, a neighbour that heard this node's and had no news for it may not answer (every one of its
# neighbours showed all it knows), and quick rechecks for those took the receipt-storm test's busiest
# node from 21.3% to 25.7% of the air.
# ... once for what this node knows and the lagging neighbours' receipts showed: one that learned it
# from someone else, and had no news for this node, does not answer, and its old receipt here would
# otherwise spend every receipt left on quick rechecks (P10, the block, seed 6: never complete).
LAG_TRIES = 1
# Once its MAX_RECEIPTS are spent, a node still sends this many more, RECHECK_MAX apart, while a live
# neighbour's last receipt lags: its last two lost, an end node of the line showed its one
# neighbour's building missing for good (P10, the line, seed 6).
LAG_RECEIPTS = 4
# After a neighbour came back from an outage, its neighbours' three tries go BACK_REPAIR_GAP apart
# (plus a random up to BACK_REPAIR_JITTER), not REPAIR_GAP: every one of them tries at once when it
# hears it again, and a node in the busy middle of the block, answered by nine, loses the first
# round to the collisions of their answers (P10: the alerts raised meanwhile came 62 and 123 s on).
BACK_REPAIR_GAP, BACK_REPAIR_JITTER = 15.0, 10.0
# Bounds on what is remembered for a busy block: beyond the first, the oldest (or finished) are forgotten.
RELAYED_FRAMES_KEPT, RELAYED_FRAMES_FORGOTTEN = 500, 250
REPAIRS_KEPT = 200
RECEIPTS_KEPT, RECEIPTS_FORGOTTEN = 200, 100
NEVER = -1e12             # a time long past: "never done"
UNTIL_ON_AIR = float("inf")   # a relay's due time while it waits for the outbox to send the first copy
OWN_WAITING_KEPT = 64     # own frames waiting for the radio, remembered for their second copy


def transition_airtime(preset: str) -> float:
    """Seconds on air of one transition frame, with Meshtastic's own bytes, on ``preset``."""
    return time_on_air(wire.frame_size(wire.FrameType.TRANSITION) + MESH_OVERHEAD, preset)


def pace(preset: str) -> float:
    """How many times longer than on PACED_FOR a receipt's random waits are on ``preset`` (at least 1)."""
    return max(1.0, transition_airtime(preset) / transition_airtime(PACED_FOR))


@dataclass
class PendingRelay:
    """A frame to pass on at ``due``, unless ``enough`` copies of it are heard first."""

    due: float
    frame: bytes
    enough: int
    hop_limit: int | None = 0   # 0: to neighbours only; None: flooded with the link's hop limit
    copies: int = 0             # copies heard from neighbours meanwhile
    more: int = 0               # further copies after this one, OWN_AGAIN apart (own states, needy neighbours)


@dataclass
class PendingReceipt:
    """This node's receipts for one alert state it holds: the next at ``due`` (None: none due), ``sent`` so far.

    ``theirs`` is what each neighbour's last receipt of the state showed (received, sounded):
    a receipt that would tell every live neighbour nothing new is not sent. ``took`` is when
    this node took the state, for the repairs of neighbours its coverage still lacks."""

    due: float | None
    took: float = NEVER
    sent: int = 0
    last: float = NEVER         # when the last one went
    theirs: dict[int, tuple[frozenset[int], frozenset[int]]] = field(default_factory=dict)
    repairs: int = 0            # neighbours missing from the coverage, passed the frame
    next_repair: float = NEVER
    back: bool = False          # the tries are for a neighbour back from an outage (BACK_REPAIR_GAP apart)
    recheck: float = NEVER      # when to ask again whether every live neighbour has shown it knows what this one does
    lagging: tuple = ()         # what this node knew and the lagging neighbours' receipts showed, in buildings ...
    lag_tries: int = 0          # ... and the quick rechecks made for them
    lag_due: bool = False       # the recheck is for a neighbour that lags
    lag_extra: int = 0          # receipts sent past MAX_RECEIPTS for neighbours that lag
    heard: float = NEVER        # when a neighbour's receipt of the state last came
    said: frozenset[int] = frozenset()   # the buildings this node's last receipt showed
    idle: dict[int, int] = field(default_factory=dict)   # receipts of nothing new from each neighbour since ours
    answered: set[int] = field(default_factory=set)   # neighbours whose receipts of nothing new were answered
    answer: bool = False        # the receipt due answers one: it goes even when every neighbour showed all


class Relays:
    """Relays of new alert states and verdicts, and repairs for neighbours behind. Callers hold the node's lock."""

    def __init__(self, store: Store, outbox: Outbox, *, preset: str, rng: random.Random,
                 counts: collections.Counter[str], neighbours: Callable[[float], set[int]] = lambda now: set()):
        self.store, self.outbox, self.rng, self.counts = store, outbox, rng, counts
        self.neighbours = neighbours   # neighbours(now): the live ones heard first-hand
        self._needy: dict[int, float] = {}   # neighbour -> when it last needed a repair (see NEEDY_AFTER)
        # seconds on air of one transition, the unit of the random wait before a repair
        self.frame_airtime = transition_airtime(preset)
        self._relays: dict[Hashable, PendingRelay] = {}   # (alert, state) or a verdict's key -> relay
        # The (origin, counter) of each relayed frame, so hearing it again counts as a copy.
        self._relay_frames: dict[tuple[int, int], tuple[str, State]] = {}
        self._repaired: dict[tuple[str, State], float] = {}  # (alert, state) -> when this node last passed it on
        self._own_waiting: dict[bytes, tuple[str, State]] = {}  # own frame in the outbox -> its relay's key
        self._behind: dict[str, float] = {}   # alert -> when a neighbour's frame showed this node lacks a state of it

    def relay(self, alert: Alert, origin: int, counter: int, data: bytes, now: float) -> None:
        """Relay a new state heard from ``origin`` to the neighbours, unless enough of them do first."""
        key = (alert.id, alert.state)
        self._drop_older(alert)
        needy = self.needy(now)
        behind = now - self._behind.pop(alert.id, NEVER) < BEHIND_FOR
        if needy:
            self.counts["relay-for-needy"] += 1
        if behind:
            self.counts["relay-behind"] += 1
        self._relays[key] = PendingRelay(now + self.rng.uniform(*RELAY_DELAY), data,
                                         NEVER_SUPPRESSED if needy or behind else RELAY_ENOUGH)
        self._relay_frames[(origin, counter)] = key

    def behind(self, alert_id: str, now: float) -> None:
        """A neighbour's receipt or heartbeat showed a state of ``alert_id`` this node lacks: the flood
        missed this part of the block, so when the state comes, it is relayed whatever copies are heard."""
        self._behind[alert_id] = now
        if len(self._behind) > NEEDY_KEPT:
            del self._behind[min(self._behind, key=self._behind.__getitem__)]

    def needy(self, now: float) -> set[int]:
        """The live neighbours that needed a repair in the last NEEDY_FOR seconds."""
        return {n for n, when in self._needy.items() if now - when < NEEDY_FOR} & self.neighbours(now)

    def _drop_older(self, alert: Alert) -> None:
        """Forget relays and repairs of ``alert``'s earlier states: old news, and each copy sent
        after the new state would take the air (and collide with) the new state's own relays."""
        for key in [k for k in self._relays if isinstance(k, tuple) and len(k) == 2 and k[0] == alert.id
                    and k[1] is not alert.state]:
            del self._relays[key]
            self.counts["relay-outdated"] += 1

    def sent_own(self, alert: Alert, counter: int, data: bytes, now: float) -> None:
        """This node signed ``alert``'s new state: once the radio has taken it (``on_air``), send it
        again unless a neighbour's relay is heard first."""
        key = (alert.id, alert.state)
        self._drop_older(alert)
        # Not due until the first copy is on air: the outbox may hold it while the radio is away,
        # and a second copy timed from the signing would go first, or into the same dead radio.
        # It stands down when a neighbour's relay is heard first, unless a neighbour was needy of
        # late: a copy does not say who sent it, and one from a neighbour at the edge of the block
        # says nothing of a reporter's one weak link into the rest of it. Then a third copy follows.
        needy = bool(self.needy(now))
        self._relays[key] = PendingRelay(UNTIL_ON_AIR, data, NEVER_SUPPRESSED if needy else 1, hop_limit=None,
                                         more=OWN_MORE if needy else 0)
        self._relay_frames[(wire.peek_origin(data) or (0, counter))[0], counter] = key
        self._own_waiting[data] = key
        while len(self._own_waiting) > OWN_WAITING_KEPT:   # frames the radio refused for good
            self._own_waiting.pop(next(iter(self._own_waiting)))

    def on_air(self, frame: bytes, now: float) -> None:
        """The outbox handed ``frame`` to the radio: its second copy is due ``OWN_AGAIN`` from now."""
        key = self._own_waiting.pop(frame, None)
        relay = self._relays.get(key) if key is not None else None
        if relay is not None and relay.frame == frame and relay.due == UNTIL_ON_AIR:
            relay.due = now + self.rng.uniform(*OWN_AGAIN)

    def relay_verdict(self, key: Hashable, data: bytes, now: float, *, delay: tuple[float, float],
                      hop_limit: int | None) -> None:
        """Send a silent verdict once more after a random wait of ``delay`` seconds, whoever else does."""
        self._relays[key] = PendingRelay(now + self.rng.uniform(*delay), data, NEVER_SUPPRESSED, hop_limit)

    def copy_heard(self, data: bytes) -> None:
        """A frame heard again (a replay to the codec): if this node means to relay it, one more copy."""
        self.count_copy(self._relay_frames.get(wire.peek_origin(bytes(data)) or (0, 0)))

    def count_copy(self, key: tuple[str, State] | None) -> None:
        relay = self._relays.get(key) if key is not None else None
        if relay is not None:
            relay.copies += 1

    def due(self, now: float) -> None:
        """Send the relays and repairs due by ``now`` that too few copies made needless."""
        for key, relay in list(self._relays.items()):
            if now < relay.due:
                continue
            del self._relays[key]
            if relay.copies < relay.enough:
                self.counts["relay"] += 1
                self.outbox.send_ephemeral(relay.frame, hop_limit=relay.hop_limit)
                if relay.more > 0:
                    relay.due, relay.more = now + self.rng.uniform(*OWN_AGAIN), relay.more - 1
                    self._relays[key] = relay
            else:
                self.counts["relay-suppressed"] += 1
        if len(self._relay_frames) > RELAYED_FRAMES_KEPT:
            for frame_key in list(self._relay_frames)[:RELAYED_FRAMES_FORGOTTEN]:
                del self._relay_frames[frame_key]

    def repair(self, alert: Alert, neighbour: int, now: float, *, gap: float = REPAIR_GAP, shown: bool = False) -> None:
        """Pass ``alert``'s signed frame to the neighbours, after a random wait, unless another neighbour does first.

        Every neighbour of a node that is behind hears the same heartbeat; those hidden from each
        other would collide at it if they all answered at once, so each waits a random span of
        several frames' airtime and stands down on hearing another's copy.

        ``shown``: the neighbour's own frame (its heartbeat or receipt) showed it lacks the state,
        so, 8 s or more after this node took it, the neighbour is needy (NEEDY_AFTER). A gap in the
        coverage is no such evidence: a receipt lost or late makes one as well.
        """
        key = (alert.id, alert.state)
        if now - self._repaired.get(key, NEVER) < gap or key in self._relays:
            return
        stored = self.store.alert_frame(alert.id)
        if stored is None:
            return
        if len(self._repaired) > REPAIRS_KEPT:
            self._repaired = {a: t for a, t in self._repaired.items() if now - t < REPAIR_GAP}
        self._repaired[key] = now
        if shown and now - alert.updated_at >= NEEDY_AFTER:   # the relays and the flood had their chance
            self._needy[neighbour] = now
            if len(self._needy) > NEEDY_KEPT:
                del self._needy[min(self._needy, key=self._needy.__getitem__)]
        self._drop_older(alert)
        self.counts["repair"] += 1
        log.info("node %s lacks alert %s %s; passing it on", neighbour, alert.id, alert.state.word)
        self._relays[key] = PendingRelay(now + self.rng.uniform(0.3, 0.3 + REPAIR_WINDOW * self.frame_airtime),
                                         stored, 1)
        origin = wire.peek_origin(stored)
        if origin is not None:
            self._relay_frames[origin] = key


class Receipts:
    """This node's receipts: who it knows has received and sounded each alert state. Callers hold the node's lock.

    Receipts merge by union, so every node converges on one view as long as a node that knows
    more than a neighbour tells it. So a receipt goes out when this node learned more, when a
    neighbour's receipt shows it knows less, or more than this node's last receipt showed (it
    sees this node lag), and when a copy of the state is heard again (a
    re-send or a repair: its sender's coverage lacks someone); never more than MAX_RECEIPTS a
    state (and LAG_RECEIPTS more, slowly, while a neighbour's own receipt shows it lags),
    RECEIPT_GAP apart, and not at all when every live neighbour's last receipt already showed all
    it would say. The same bitmaps drive repairs: a neighbour whose receipt shows an older state,
    or that is still missing REPAIR_AFTER seconds on, is passed the frame at once.
    """

    def __init__(self, me: int, members: list[int], roster: Roster, store: Store, signer: Signer, outbox: Outbox,
                 *, rng: random.Random, counts: collections.Counter[str], relays: Relays | None = None,
                 neighbours: Callable[[float], set[int]] = lambda now: set(), preset: str = PACED_FOR):
        self.me, self.members, self.roster = me, members, roster
        self.pace = p = pace(preset)   # the random waits, stretched for a slow preset
        self.delay, self.again = (RECEIPT_DELAY[0] * p, RECEIPT_DELAY[1] * p), (RECEIPT_AGAIN[0] * p, RECEIPT_AGAIN[1] * p)
        self.repair_after = REPAIR_AFTER - RECEIPT_DELAY[1] + self.delay[1]
        self.store, self.signer, self.outbox, self.rng, self.counts = store, signer, outbox, rng, counts
        self.relays, self.neighbours = relays, neighbours   # neighbours(now): live ones heard first-hand
        self._receipts: dict[tuple[str, State], PendingReceipt] = {}

    def schedule(self, alert_id: str, state: State, now: float, *, news: bool = False) -> None:
        """Send this node's view of who has ``alert_id`` in ``state`` soon, at a random moment.

        ``news``: this node just learned of buildings that have it. That is worth telling even when
        its receipts of the state are spent: the budget refills by NEWS_RECEIPTS (news is bounded,
        one bit per building), or a line whose middle was away stalls with an end node's coverage
        short of what its neighbour knows, for good."""
        receipt = self._receipts.get((alert_id, state))
        if receipt is not None and news and receipt.sent > MAX_RECEIPTS - NEWS_RECEIPTS:
            receipt.sent = MAX_RECEIPTS - NEWS_RECEIPTS
            self.counts["receipt-refill"] += 1
        if receipt is None:
            self._receipts[(alert_id, state)] = PendingReceipt(now + self.rng.uniform(*self.delay), took=now)
        elif receipt.due is None and receipt.sent < MAX_RECEIPTS:  # sent before, and a neighbour needs more
            # (the gap and up to 2 s more at random: see _recheck)
            receipt.due = max(now + self.rng.uniform(*self.again),
                              receipt.last + RECEIPT_GAP + self.rng.uniform(0.0, 2.0 * self.pace))

    def sounded(self, alert: Alert, played: bool) -> None:
        """Record that this node's siren sounded ``alert``'s state, for its receipts."""
        if not played:
            return
        try:
            with self.store.transaction():
                self.store.add_coverage(alert.id, alert.state, {self.me}, {self.me})
        except StoreError as exc:
            log.error("could not record that the siren sounded: %s", exc)

    def apply(self, frame: wire.ReceiptFrame, now: float) -> bool:
        """Take a neighbour's receipt into the coverage. False when it shows this node is behind
        (an alert it never heard, or a later state of one): its next heartbeat should go early."""
        signed = self.signer.signed_at(frame.clock, now)
        if now - signed > clock.FRESH:
            # Receipts go to direct neighbours only: one signed this long ago is a recording played
            # back. What it says was true then, but it would wrongly show its sender behind (and draw
            # a repair), so nothing in it is taken.
            self.counts["stale-receipt"] += 1
            return True
        alert = self.store.get_alert(frame.alert_id)
        if alert is None:
            return False
        if frame.roster_version == self.roster.version:
            received = coverage.from_bitmap(frame.received, self.members)
            sounded = coverage.from_bitmap(frame.sounded, self.members)
        else:
            received, sounded = {frame.origin}, set()
        received |= {frame.origin}
        learned = self.store.add_coverage(alert.id, frame.state, received, sounded)
        if alerts.newer(frame.state, alert.state):
            # Its sender, and those it knows have the later state, are past the one this node holds:
            # none of them will ever say they have it, and none needs it. Without this, a state that
            # followed quickly left the earlier one's coverage short for good, and its receipts, gap
            # repairs and re-sends filled the air of the node that lacked the later one (LONG_FAST,
            # P3's loop, seed 1: a reporter on one weak link; 225 receipts and 4 re-sends of CONFIRMED
            # buried every copy of its ALL CLEAR, and 28 buildings lacked it for 10 minutes).
            if self.store.add_coverage(alert.id, alert.state, received, set()):
                self.counts["receipt-past"] += 1
                self.schedule(alert.id, alert.state, now, news=True)
            return False
        if alerts.newer(alert.state, frame.state) and self.relays is not None:
            self.counts["receipt-repair"] += 1
            # its receipt shows it lacks our later state: each such receipt is evidence, so the gap is short
            self.relays.repair(alert, frame.origin, now, gap=RECEIPT_GAP, shown=True)
        if frame.state is alert.state:
            ours = self.store.coverage(alert.id, alert.state)
            receipt = self._receipts.get((alert.id, alert.state))
            # news for the others, or for it; or it knows more than this node's last receipt showed, and
            # sees this node lag (see _all_know)
            if (learned or not (ours[0] <= received and ours[1] <= sounded)
                    or (receipt is not None and receipt.sent and not received <= receipt.said)):
                self.schedule(alert.id, alert.state, now, news=bool(learned))
                receipt = self._receipts.get((alert.id, alert.state))
            elif (receipt is not None and receipt.sent and frame.origin not in receipt.answered
                  and now - receipt.heard >= RECHECK_LAGGING):
                # Nothing new either way, after a quiet spell: its node thinks a neighbour lags. When it
                # says so twice after this node's last receipt, that may be this node, whose answer it
                # lost (two neighbours hidden from each other answer at once, and collide): answered,
                # once. Not the first time: that may be an answer itself, and answering those would
                # pass one along the block. Not while receipts still come: in the storm after a report,
                # answers then took the busiest node from 24.7% to 25.7% of the air.
                receipt.idle[frame.origin] = receipt.idle.get(frame.origin, 0) + 1
                if receipt.idle[frame.origin] >= 2 and receipt.sent < MAX_RECEIPTS:   # else none could go
                    receipt.answered.add(frame.origin)
                    receipt.answer = True
                    self.counts["receipt-answer"] += 1
                    self.schedule(alert.id, alert.state, now)
            if receipt is not None:
                receipt.theirs[frame.origin] = (frozenset(received), frozenset(sounded))
                receipt.heard = now
        return True

    def heard_again(self, alert_id: str, state: State, now: float) -> None:
        """A copy of a state this node holds came again (a re-send or a repair): whoever sent it
        thinks someone lacks it, so this node says again who it knows has it."""
        alert = self.store.get_alert(alert_id)
        if alert is not None and alert.state is state:
            self.schedule(alert.id, state, now)

    def neighbour_back(self, neighbour: int, now: float) -> None:
        """A neighbour heard again after an outage: pass it, soon, every state this node holds that its
        coverage shows the neighbour lacks. Its heartbeat shows only its latest alert, and the gap
        repairs of alerts raised while it was away were spent on it then. Active alerts only: an
        ended one it still shows as active its heartbeat asks for, and the ended states of old alerts,
        whose coverage seldom settles completely, would fill the air with old news."""
        for (alert_id, state), receipt in self._receipts.items():
            alert = self.store.get_alert(alert_id)
            if alert is None or alert.state is not state or state not in alerts.ACTIVE:
                continue
            if neighbour in self.store.coverage(alert_id, state)[0]:
                continue
            receipt.repairs, receipt.next_repair, receipt.back = 0, now, True
            receipt.took = min(receipt.took, now - self.repair_after)
            self.counts["back-repair"] += 1

    def copy_heard(self, data: bytes, now: float) -> None:
        """A frame heard again (a replay to the codec): if it is a state this node holds, ``heard_again``."""
        try:
            frame = wire.decode(bytes(data), self.roster)
        except FrameError:
            return
        if isinstance(frame, wire.TransitionFrame):
            self.heard_again(frame.alert_id, frame.state, now)

    def due(self, now: float) -> None:
        """Send the receipts due by ``now``, and pass the frame to neighbours the coverage still lacks."""
        neighbours: set[int] | None = None   # asked for only when needed
        for key, receipt in list(self._receipts.items()):
            sending = receipt.due is not None and now >= receipt.due
            repairing = (self.relays is not None and receipt.repairs < GAP_REPAIRS and now >= receipt.next_repair
                         and now - receipt.took >= self.repair_after)
            # A receipt can be lost, and nothing else would make up for it: until every live neighbour's
            # own receipt shows it knows as much, say it again, waiting twice as long each time (but
            # soon, and past MAX_RECEIPTS, for a neighbour whose last receipt shows it lags: _recheck).
            rechecking = (receipt.due is None and receipt.sent > 0 and now >= receipt.recheck
                          and (receipt.sent < MAX_RECEIPTS or (receipt.lag_due and receipt.lag_extra < LAG_RECEIPTS)))
            if not (sending or repairing or rechecking):
                continue
            alert = self.store.get_alert(key[0])
            if alert is None:
                del self._receipts[key]
                continue
            neighbours = self.neighbours(now) if neighbours is None else neighbours
            received, sounded = self.store.coverage(alert.id, key[1])
            if repairing:
                self._repair_gaps(alert, key[1], receipt, received, neighbours, now)
            if rechecking and not sending:
                lag = receipt.lag_due and bool(self._lagging(receipt, received, neighbours))
                if lag and now - receipt.heard < RECHECK_LAGGING:
                    # the neighbours are still telling each other: their receipts may yet show it
                    receipt.recheck = receipt.heard + RECHECK_LAGGING + self.rng.uniform(0.0, RECEIPT_GAP)
                    continue
                receipt.recheck, receipt.lag_due = self._backoff(receipt, now), False  # unless one is sent
                if alert.state is key[1] and not self._all_know(receipt, received, sounded, neighbours):
                    if lag and receipt.sent >= MAX_RECEIPTS:
                        receipt.sent, receipt.lag_extra = MAX_RECEIPTS - 1, receipt.lag_extra + 1
                        self.counts["receipt-lagging"] += 1
                    self.schedule(alert.id, key[1], now)
                continue
            if not sending:
                continue
            if receipt.sent >= MAX_RECEIPTS or alert.state is not key[1]:
                # A receipt speaks only of the state its node holds, so that one of an earlier state
                # shows its neighbours that it is behind (and they repair it at once).
                receipt.due = None
                continue
            if receipt.sent and neighbours and not receipt.answer and self._all_know(receipt, received, sounded,
                                                                                     neighbours):
                receipt.due = None   # every live neighbour already showed all this one would say
                self.counts["receipt-suppressed"] += 1
                continue
            if self.outbox.radio_down:
                # it would be dropped unsent: keep it for when the radio is back rather than spend one of MAX_RECEIPTS
                receipt.due = now + RECEIPT_GAP
                self.counts["receipt-held"] += 1
                continue
            signed = self.signer.sign(wire.ReceiptFrame, *alerts.parse_alert_id(alert.id), key[1],
                                      self.roster.version, coverage.to_bitmap(received, self.members),
                                      coverage.to_bitmap(sounded, self.members), self.signer.stamp(now))
            self.outbox.send_ephemeral(signed.data, hop_limit=0)
            receipt.due, receipt.sent, receipt.last, receipt.said = None, receipt.sent + 1, now, frozenset(received)
            receipt.answer, receipt.idle = False, {}
            receipt.recheck = self._recheck(receipt, now, received, neighbours)
            self.counts["receipt"] += 1
        if len(self._receipts) > RECEIPTS_KEPT:  # forget finished receipts of old alerts
            for key in [k for k, r in self._receipts.items() if r.due is None][:RECEIPTS_FORGOTTEN]:
                del self._receipts[key]

    def _recheck(self, receipt: PendingReceipt, now: float, received: set[int], neighbours: set[int]) -> float:
        """When, after a receipt, to ask again whether every live neighbour knows what this node does.

        While a live neighbour's last receipt lacks buildings this node knows have the state, it
        lost this node's receipt: RECHECK_LAGGING after it (up to RECEIPT_GAP more at random),
        LAG_TRIES times for what this node knows and the same receipts of theirs, and once the
        receipts are spent, RECHECK_MAX apart (LAG_RECEIPTS more). Otherwise ``_backoff``."""
        lagging = self._lagging(receipt, received, neighbours)
        receipt.lag_due = bool(lagging)
        if lagging and (len(received),) + lagging != receipt.lagging:
            receipt.lagging, receipt.lag_tries = (len(received),) + lagging, 0
        if lagging and receipt.lag_tries < LAG_TRIES and receipt.sent < MAX_RECEIPTS:
            receipt.lag_tries += 1
            return max(now, receipt.last + RECHECK_LAGGING) + self.rng.uniform(0.0, RECEIPT_GAP)
        return self._backoff(receipt, now)

    def _backoff(self, receipt: PendingReceipt, now: float) -> float:
        """Twice as long after each receipt, up to RECHECK_MAX, and up to 2 s more at random. Two
        neighbours of one node, hidden from each other, that answered the same receipt would otherwise
        go in step, a gap apart, and collide there every time (tests/test_reconverge.py, seed 3:
        twice in a row, 10 s apart)."""
        return now + min(RECEIPT_GAP * 2 ** receipt.sent, RECHECK_MAX) + self.rng.uniform(0.0, 2.0 * self.pace)

    @staticmethod
    def _lagging(receipt: PendingReceipt, received: set[int], neighbours: set[int]) -> tuple[tuple[int, int], ...]:
        """The live neighbours whose last receipt lacks buildings this node knows have the state, with
        how many that receipt showed."""
        return tuple((n, len(receipt.theirs[n][0])) for n in sorted(neighbours)
                     if n in receipt.theirs and not received <= receipt.theirs[n][0])

    @staticmethod
    def _all_know(receipt: PendingReceipt, received: set[int], sounded: set[int], neighbours: set[int]) -> bool:
        """Whether every one of ``neighbours`` showed, in its last receipt, all this node knows, and
        this node's last receipt showed all it did.

        The second half: a neighbour whose receipt knows buildings this node's last one lacked sees
        this node lag (``_lagging``) and tells it again and again, each time for nothing, when this
        node learned them from someone else and so had nothing new for anyone. One receipt from
        this node ends that (a node that took an alert late, behind a lost receipt, drew all of its
        neighbour's receipts past the eight: tests/test_block_coverage.py)."""
        return all(n in receipt.theirs and received <= receipt.theirs[n][0] and sounded <= receipt.theirs[n][1]
                   and receipt.theirs[n][0] <= receipt.said for n in neighbours)

    def _repair_gaps(self, alert: Alert, state: State, receipt: PendingReceipt, received: set[int],
                     neighbours: set[int], now: float) -> None:
        """Pass the frame on when a live neighbour is still missing from the coverage of the state held."""
        missing = neighbours - received
        if self.relays is None or alert.state is not state or state not in alerts.ON_AIR or not missing:
            receipt.repairs = GAP_REPAIRS   # nothing to do for this state now or later: stop looking
            return
        gap = BACK_REPAIR_GAP + self.rng.uniform(0.0, BACK_REPAIR_JITTER) if receipt.back else REPAIR_GAP
        receipt.repairs, receipt.next_repair = receipt.repairs + 1, now + gap
        self.counts["gap-repair"] += 1
        self.relays.repair(alert, min(missing), now, gap=RECEIPT_GAP)
