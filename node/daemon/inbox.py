"""Frames heard on the air: verify, limit floods, record, and hand each to the one who acts on it.

A frame is decoded and verified (``wire.decode``: signature, roster, replay), counted
against its origin's allowance (``OriginRateLimit``), then applied in one transaction:
transitions by the alert desk, receipts by ``Receipts``, heartbeats and verdicts by
``Liveness``. One bad frame never stops the node.
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
from node.protocol.alerts import Alert
from node.protocol.keys import Roster
from node.protocol.ratelimit import OriginRateLimit
from node.store import Store

log = logging.getLogger(__name__)


class Inbox:
    """Frames from the air, one at a time under the node's ``lock``; ``changed`` is notified after each."""

    def __init__(self, roster: Roster, store: Store, rate_limit: OriginRateLimit, *, desk: Desk,
                 liveness: Liveness, relays: Relays, receipts: Receipts, troubles: Troubles,
                 counts: collections.Counter[str], clock: Callable[[], float], lock: threading.RLock,
                 changed: threading.Condition):
        self.roster, self.store, self.rate_limit = roster, store, rate_limit
        self.desk, self.liveness, self.relays, self.receipts, self.troubles = desk, liveness, relays, receipts, troubles
        self.counts, self.clock, self._lock, self._changed = counts, clock, lock, changed

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
                frame = wire.decode(data, self.roster, seen=self.store.seen)
            except FrameError as exc:
                self.counts[exc.reason] += 1
                if exc.reason == "replayed":
                    self.relays.copy_heard(data)
                    self.receipts.copy_heard(data, now)
                level = logging.DEBUG if exc.reason == "replayed" else logging.WARNING
                log.log(level, "frame refused: %s (header %s)", exc, wire.peek_origin(bytes(data)) if
                        isinstance(data, (bytes, bytearray)) else None)
                return
            if not self.rate_limit.allow(frame.origin, now):
                self.counts["rate-limited"] += 1  # dropped before it touches the store
                log.debug("frame from node %s dropped: it is flooding the channel", frame.origin)
                self.troubles.show_flooding(now)
                return
            self.counts["accepted"] += 1
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
            self.troubles.show()
            self._changed.notify_all()

    def _apply(self, frame: wire.Frame, now: float, data: bytes) -> Alert | None:
        """Record and apply a verified frame (inside the caller's transaction); return an alert to sound."""
        self.store.mark_seen(frame.origin, frame.counter)
        self.liveness.heard(frame, now)
        if isinstance(frame, wire.TransitionFrame):
            return self.desk.apply_remote(frame, now, data)
        if isinstance(frame, wire.ReceiptFrame):
            if not self.receipts.apply(frame, now):
                # A receipt for an alert this node never heard: its heartbeat, sent early, shows the
                # neighbours that it is behind, and they repair it.
                self.liveness.answer_early(now, "pull")
        elif isinstance(frame, wire.SilentFrame):
            self.liveness.apply_silent(frame, now, data)
        else:
            self.liveness.apply_heartbeat(frame, now)
        return None
