"""Frames heard on the air: verify, limit floods, record, and hand each to the one who acts on it.

A frame is decoded and verified (``wire.decode``: signature, roster, replay). One this
node signed itself (a neighbour's relay of it, or a recording) is dropped there, whatever
its counter, before it reaches the store or the event log: counted as ``own-echo``. The
rest are counted against their origin's allowance (``OriginRateLimit``), then applied in
one transaction: transitions by the alert desk, receipts by ``Receipts``, heartbeats and
verdicts by ``Liveness`` (which tells fresh news from recordings by the block clock).
One bad frame never stops the node.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Callable

from node.daemon.desk import Desk
from node.daemon.liveness import Liveness
from node.daemon.relays import Receipts, Relays
from node.daemon.troubles import Troubles
from node.errors import FrameError, StoreError
from node.protocol import wire
from node.protocol.clock import FRESH
from node.daemon.neighborhood import NEARBY_FOR, Neighborhood
from node.protocol.alerts import Alert
from node.protocol.keys import Roster
from node.protocol.ratelimit import OriginRateLimit
from node.store import Store

log = logging.getLogger(__name__)


class Inbox:
    """Frames from the air, one at a time under the node's ``lock``; ``changed`` is notified after each."""

    def __init__(self, me: int, roster: Roster, store: Store, rate_limit: OriginRateLimit, *, desk: Desk,
                 liveness: Liveness, relays: Relays, receipts: Receipts, troubles: Troubles,
                 neighborhood: Neighborhood | None = None, counts: collections.Counter[str], clock: Callable[[], float], lock: threading.RLock,
                 changed: threading.Condition):
        self.me, self.roster, self.store, self.rate_limit = me, roster, store, rate_limit
        self.desk, self.liveness, self.relays, self.receipts, self.troubles = desk, liveness, relays, receipts, troubles
        self.counts, self.clock, self._lock, self._changed = counts, clock, lock, changed
        self.neighborhood = neighborhood
        self._nearby: dict | None = None   # a new nearby state taken in the current transaction, to chime after it

    def on_frame(self, data: bytes) -> None:
        """Verify, apply and sound one frame heard on the air. Never raises."""
        try:
            self._on_frame(data)
        except Exception:
            self.counts["error"] += 1
            log.exception("frame handling failed; the node goes on")

    def _on_frame(self, data: bytes) -> None:
        with self._lock:
            now = self.clock()
            try:
                frame = wire.decode(data, self.roster, seen=self._seen)
            except FrameError as exc:
                self.counts[exc.reason] += 1
                if exc.reason == "replayed":
                    self.relays.copy_heard(data)
                    self.receipts.copy_heard(data, now)
                level = logging.DEBUG if exc.reason == "replayed" else logging.WARNING
                log.log(level, "frame refused: %s (header %s)", exc, wire.peek_origin(bytes(data)) if
                        isinstance(data, (bytes, bytearray)) else None)
                return
            if frame.origin == self.me:
                # This node's own frame, passed back by a neighbour (or played back): nothing in it
                # is news here, whatever its counter, before or after a restart. A copy still tells
                # a pending relay or repair of it that a neighbour passed it on.
                self.counts["own-echo"] += 1
                self.relays.copy_heard(data)
                return
            if self._stale(frame, now):
                # A heartbeat or receipt signed long ago: a recording played back (node.protocol.clock).
                # Dropped before the flood limit, so replaying a building's old frames cannot get that
                # building's live frames (its alerts) dropped as a flood; marked seen, so it is not
                # weighed again.
                try:
                    with self.store.transaction():
                        self.store.mark_seen(frame.origin, frame.counter)
                except StoreError as exc:
                    log.error("storage failed; a stale frame from %s not marked seen: %s", frame.origin, exc)
                return
            if not self.rate_limit.allow(frame.origin, now):
                self.counts["rate-limited"] += 1  # dropped before it touches the store
                log.debug("frame from node %s dropped: it is flooding the channel", frame.origin)
                self.troubles.show_flooding(now)
                return
            self.counts["accepted"] += 1
            self._nearby = None
            try:
                with self.store.transaction():
                    sound = self._apply(frame, now, bytes(data))
                self.store.clear_trouble("storage")
            except StoreError as exc:
                log.error("storage failed; frame from %s not recorded: %s", frame.origin, exc)
                self.troubles.record("storage", f"cannot write the database: {exc}", now)
                return
            if sound is not None:
                self.desk.sound(sound, at_origin=False)
            if self._nearby is not None and self.neighborhood is not None:
                self.neighborhood.chime(self._nearby)
            self.troubles.show()
            self._changed.notify_all()

    def _stale(self, frame: wire.Frame, now: float) -> bool:
        """Whether ``frame`` is a heartbeat or receipt signed more than ``FRESH`` seconds ago
        (counted as ``stale-heartbeat`` or ``stale-receipt``), or a NEARBY more than ``NEARBY_FOR``."""
        if isinstance(frame, wire.NearbyFrame):
            if now - self.liveness.signed_at(frame.clock, now) <= NEARBY_FOR:
                return False
            self.counts["stale-nearby"] += 1
            return True
        if not isinstance(frame, (wire.HeartbeatFrame, wire.ReceiptFrame)):
            return False
        if now - self.liveness.signed_at(frame.clock, now) <= FRESH:
            return False
        self.counts["stale-heartbeat" if isinstance(frame, wire.HeartbeatFrame) else "stale-receipt"] += 1
        log.debug("%s from node %s signed long ago: old news", type(frame).__name__, frame.origin)
        return True

    def _seen(self, origin: int, counter: int) -> bool:
        """The replay check (``wire.decode``); this node's own frames are dropped after it, as ``own-echo``."""
        return origin != self.me and self.store.seen(origin, counter)

    def _apply(self, frame: wire.Frame, now: float, data: bytes) -> Alert | None:
        """Record and apply a verified frame (inside the caller's transaction); return an alert to sound."""
        self.store.mark_seen(frame.origin, frame.counter)
        if isinstance(frame, wire.TransitionFrame):
            return self.desk.apply_remote(frame, now, data)
        if isinstance(frame, wire.ReceiptFrame):
            self.liveness.apply_receipt(frame, now)
            if not self.receipts.apply(frame, now):
                # A receipt for an alert this node never heard: its heartbeat, sent early, shows the
                # neighbours that it is behind, and they repair it.
                self.liveness.pull(frame.alert_id, now, lacking=self.store.get_alert(frame.alert_id) is None)
        elif isinstance(frame, wire.NearbyFrame):
            if self.neighborhood is not None:
                self._nearby = self.neighborhood.accept(frame, now, data)
        elif isinstance(frame, wire.SilentFrame):
            self.liveness.apply_silent(frame, now, data)
        else:
            self.liveness.apply_heartbeat(frame, now)
        return None
