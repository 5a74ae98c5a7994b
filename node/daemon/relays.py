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
from dataclasses import dataclass
from typing import Hashable

from node.daemon.outbox import Outbox
from node.daemon.signer import Signer
from node.errors import StoreError
from node.protocol import alerts, coverage, wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.protocol.alerts import Alert, State
from node.protocol.keys import Roster
from node.store import Store

log = logging.getLogger(__name__)

RELAY_DELAY = (0.3, 2.5)  # seconds: the random wait before relaying a new alert state to neighbours
RELAY_ENOUGH = 2          # copies heard from neighbours in that wait that make this node's relay needless
# As a relay's ``enough``: no number of copies heard makes it needless (verdicts, which are rare).
NEVER_SUPPRESSED = 1 << 30
REPAIR_GAP = 60.0         # seconds between passing one alert to neighbours that lack it
REPAIR_WINDOW = 12        # transitions' airtimes: the random wait before a repair, so neighbours do not collide
RECEIPT_DELAY = (2.0, 20.0)   # seconds: the random wait before a receipt, so 30 nodes do not send at once
RECEIPT_GAP = 30.0        # seconds between two receipts of one alert state from this node
MAX_RECEIPTS = 8          # receipts of one alert state from this node (each only when it learned more)
# Bounds on what is remembered for a busy block: beyond the first, the oldest (or finished) are forgotten.
RELAYED_FRAMES_KEPT, RELAYED_FRAMES_FORGOTTEN = 500, 250
REPAIRS_KEPT = 200
RECEIPTS_KEPT, RECEIPTS_FORGOTTEN = 200, 100
NEVER = -1e12             # a time long past: "never done"


@dataclass
class PendingRelay:
    """A frame to pass on at ``due``, unless ``enough`` copies of it are heard first."""

    due: float
    frame: bytes
    enough: int
    hop_limit: int | None = 0   # 0: to neighbours only; None: flooded with the link's hop limit
    copies: int = 0             # copies heard from neighbours meanwhile


@dataclass
class PendingReceipt:
    """This node's receipts for one alert state: the next at ``due`` (None: none due), ``sent`` so far."""

    due: float | None
    sent: int = 0
    last: float = NEVER         # when the last one went


class Relays:
    """Relays of new alert states and verdicts, and repairs for neighbours behind. Callers hold the node's lock."""

    def __init__(self, store: Store, outbox: Outbox, *, preset: str, rng: random.Random,
                 counts: collections.Counter[str]):
        self.store, self.outbox, self.rng, self.counts = store, outbox, rng, counts
        # seconds on air of one transition, the unit of the random wait before a repair
        self.frame_airtime = time_on_air(wire.frame_size(wire.FrameType.TRANSITION) + MESH_OVERHEAD, preset)
        self._relays: dict[Hashable, PendingRelay] = {}   # (alert, state) or a verdict's key -> relay
        # The (origin, counter) of each relayed frame, so hearing it again counts as a copy.
        self._relay_frames: dict[tuple[int, int], tuple[str, State]] = {}
        self._repaired: dict[str, float] = {}  # alert id -> when this node last passed it on

    def relay(self, alert: Alert, origin: int, counter: int, data: bytes, now: float) -> None:
        """Relay a new state heard from ``origin`` to the neighbours, unless enough of them do first."""
        key = (alert.id, alert.state)
        self._relays[key] = PendingRelay(now + self.rng.uniform(*RELAY_DELAY), data, RELAY_ENOUGH)
        self._relay_frames[(origin, counter)] = key

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
            else:
                self.counts["relay-suppressed"] += 1
        if len(self._relay_frames) > RELAYED_FRAMES_KEPT:
            for frame_key in list(self._relay_frames)[:RELAYED_FRAMES_FORGOTTEN]:
                del self._relay_frames[frame_key]

    def repair(self, alert: Alert, neighbour: int, now: float) -> None:
        """Pass ``alert``'s signed frame to the neighbours, after a random wait, unless another neighbour does first.

        Every neighbour of a node that is behind hears the same heartbeat; those hidden from each
        other would collide at it if they all answered at once, so each waits a random span of
        several frames' airtime and stands down on hearing another's copy.
        """
        if now - self._repaired.get(alert.id, NEVER) < REPAIR_GAP or (alert.id, alert.state) in self._relays:
            return
        stored = self.store.alert_frame(alert.id)
        if stored is None:
            return
        if len(self._repaired) > REPAIRS_KEPT:
            self._repaired = {a: t for a, t in self._repaired.items() if now - t < REPAIR_GAP}
        self._repaired[alert.id] = now
        self.counts["repair"] += 1
        log.info("node %s lacks alert %s %s; passing it on", neighbour, alert.id, alert.state.word)
        key = (alert.id, alert.state)
        self._relays[key] = PendingRelay(now + self.rng.uniform(0.3, 0.3 + REPAIR_WINDOW * self.frame_airtime),
                                         stored, 1)
        origin = wire.peek_origin(stored)
        if origin is not None:
            self._relay_frames[origin] = key


class Receipts:
    """This node's receipts: who it knows has received and sounded each alert state. Callers hold the node's lock."""

    def __init__(self, me: int, members: list[int], roster: Roster, store: Store, signer: Signer, outbox: Outbox,
                 *, rng: random.Random, counts: collections.Counter[str]):
        self.me, self.members, self.roster = me, members, roster
        self.store, self.signer, self.outbox, self.rng, self.counts = store, signer, outbox, rng, counts
        self._receipts: dict[tuple[str, State], PendingReceipt] = {}

    def schedule(self, alert_id: str, state: State, now: float) -> None:
        """Send this node's view of who has ``alert_id`` in ``state`` soon, at a random moment."""
        receipt = self._receipts.get((alert_id, state))
        if receipt is None:
            self._receipts[(alert_id, state)] = PendingReceipt(now + self.rng.uniform(*RECEIPT_DELAY))
        elif receipt.due is None and receipt.sent < MAX_RECEIPTS:  # sent before, and it learned more since
            receipt.due = max(now + self.rng.uniform(*RECEIPT_DELAY), receipt.last + RECEIPT_GAP)

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
        """Take a neighbour's receipt into the coverage; False for an alert this node never heard."""
        alert = self.store.get_alert(frame.alert_id)
        if alert is None:
            return False
        if frame.roster_version == self.roster.version:
            received = coverage.from_bitmap(frame.received, self.members)
            sounded = coverage.from_bitmap(frame.sounded, self.members)
        else:
            received, sounded = {frame.origin}, set()
        if self.store.add_coverage(alert.id, frame.state, received | {frame.origin}, sounded):
            if frame.state is alert.state:
                self.schedule(alert.id, alert.state, now)
        return True

    def due(self, now: float) -> None:
        """Send the receipts due by ``now``."""
        for key, receipt in list(self._receipts.items()):
            if receipt.due is None or now < receipt.due:
                continue
            alert = self.store.get_alert(key[0])
            if alert is None or receipt.sent >= MAX_RECEIPTS:
                del self._receipts[key]
                continue
            received, sounded = self.store.coverage(alert.id, key[1])
            signed = self.signer.sign(wire.ReceiptFrame, *alerts.parse_alert_id(alert.id), key[1],
                                      self.roster.version, coverage.to_bitmap(received, self.members),
                                      coverage.to_bitmap(sounded, self.members))
            self.outbox.send_ephemeral(signed.data, hop_limit=0)
            receipt.due, receipt.sent, receipt.last = None, receipt.sent + 1, now
            self.counts["receipt"] += 1
        if len(self._receipts) > RECEIPTS_KEPT:  # forget finished receipts of old alerts
            for key in [k for k, r in self._receipts.items() if r.due is None][:RECEIPTS_FORGOTTEN]:
                del self._receipts[key]
