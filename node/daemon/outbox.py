"""What this node sends: the store's outbox in order, ephemeral frames, and text alerts.

Frames that must arrive (this node's transitions) wait in the store's outbox until the
radio takes them. Frames that are useless later (heartbeats, receipts, relays, repairs,
verdicts) and text alerts for plain Meshtastic apps wait only in memory, in bounded
queues. An ephemeral frame is never queued while the radio is away, and one that waited
longer than ``EPHEMERAL_TTL`` behind the outbox is dropped rather than sent stale: a
heartbeat's ages, troubles and verdicts are true only when it is built. A link whose
``send`` returns at once (the simulated air) is driven by ``flush`` under the node's lock; a real radio, whose ``send`` may block for seconds, by the sender
thread, so a slow or dead radio never holds up the button, the siren or frames from the air.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable

from node.daemon.troubles import Troubles
from node.errors import RadioError, StoreError
from node.protocol import wire
from node.radio.link import TRANSIENT_NAKS, FrameRefused, Link
from node.store import Store

log = logging.getLogger(__name__)

SENDER_WAKE = 1.0    # seconds: the sender thread looks at the outbox at least this often
SENDER_JOIN = 10.0   # seconds: how long ``stop`` waits for a send in progress
# Seconds an ephemeral frame may wait for the radio: a heartbeat read later makes its news look
# that much fresher (ages count from its arrival), and one age unit is 4 s.
EPHEMERAL_TTL = 4.0
# Seconds the sender leaves the outbox alone after the radio refused one of its frames for a
# passing reason (a duty-cycle limit lasts minutes): doubled at each refusal in a row, to at most
# REFUSED_BACKOFF_MAX; a refusal REFUSED_FORGET seconds after the last starts again from the first.
REFUSED_BACKOFF, REFUSED_BACKOFF_MAX, REFUSED_FORGET = 5.0, 60.0, 120.0


class Outbox:
    """This node's frames to the link. ``lock`` is the node's; ``clock()`` gives seconds."""

    def __init__(self, link: Link, store: Store, troubles: Troubles, *, lock: threading.RLock,
                 clock: Callable[[], float], counts: collections.Counter[str],
                 own: Callable[[bytes], bool] = lambda frame: True):
        self.link, self.store, self.troubles = link, store, troubles
        self._lock, self._clock, self.counts = lock, clock, counts
        # Whether a queued frame is one this node signed: the page's user may write the database,
        # so a row it slipped into the outbox is dropped here, never put on air.
        self._own = own
        # Called (under the node's lock) with each outbox frame the radio took, and the time.
        self.on_air: Callable[[bytes, float], None] = lambda frame, now: None
        self._texts: collections.deque[str] = collections.deque(maxlen=20)
        # (frame, hop limit, queued at): heartbeats, receipts, relays, repairs; the oldest go first when it is full
        self._ephemeral: collections.deque[tuple[bytes, int | None, float]] = collections.deque(maxlen=50)
        self._kick = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Frames sent since the sender began waiting for the radio, or None while it is not
        # waiting: the wait is logged when it begins and when it ends, not at every wake.
        self._waited: int | None = None
        self._refusals = 0                 # refusals in a row (REFUSED_FORGET apart at most)
        self._last_refused = -1e12         # time.monotonic() of the last
        self._retry_at = -1e12             # time.monotonic() before which the outbox is left alone

    # -- queueing -----------------------------------------------------------------------------

    def add_text(self, text: str) -> None:
        """A text alert for plain Meshtastic apps, sent by the sender thread."""
        self._texts.append(text)

    @property
    def radio_down(self) -> bool:
        """Whether the radio is away (unplugged, not connected, none configured)."""
        return "radio" in self.link.troubles

    def send_ephemeral(self, frame: bytes, hop_limit: int | None) -> None:
        """Send a frame that is useless later (heartbeat, receipt, repair): never queued in the outbox,
        and dropped at once while the radio is away (it would be stale when the radio returns)."""
        if self.radio_down:
            self.counts["ephemeral-dropped"] += 1
            log.debug("ephemeral frame dropped: the radio is away")
            return
        if self.link.instant:
            try:
                self.link.send(frame, hop_limit=hop_limit)
            except RadioError as exc:
                log.debug("ephemeral frame not sent: %s", exc)
        else:
            self._ephemeral.append((frame, hop_limit, time.monotonic()))
            self._kick.set()

    def send_first(self, frame: bytes) -> None:
        """Send ``frame`` before anything else waiting, flooded (the wipe's last heartbeat). May raise RadioError."""
        if self.link.instant:
            self.link.send(frame, hop_limit=None)
        else:
            self._ephemeral.appendleft((frame, None, time.monotonic()))
            self._kick.set()

    def drain(self, seconds: float) -> None:
        """Wait up to ``seconds`` (wall clock) for the sender to hand the ephemeral frames to the radio."""
        if self.link.instant:
            return
        deadline = time.monotonic() + seconds
        while self._ephemeral and time.monotonic() < deadline:
            time.sleep(0.05)

    # -- sending --------------------------------------------------------------------------------

    def flush(self, now: float) -> None:
        """Hand queued frames to the radio in order, keeping the rest at the first failure.

        An instant link is driven here, under the node's lock; a real radio is left to the
        sender thread, which this only wakes.
        """
        self.sync_link_troubles(now)
        if not self.link.instant:
            self._kick.set()
            return
        for seq, frame in self.store.pending():
            if not self._is_own(seq, frame, now):
                continue
            try:
                self.link.send(frame)
            except FrameRefused as exc:
                log.error("frame %d dropped: %s", seq, exc)
            except RadioError as exc:
                self.troubles.record("radio", str(exc), now)
                return
            self.store.mark_sent(seq, now)
            self.on_air(frame, now)

    def _is_own(self, seq: int, frame: bytes, now: float) -> bool:
        """Drop (as sent) an outbox row that is not a frame this node signed. Callers hold the lock."""
        if self._own(frame):
            return True
        log.error("outbox row %d is not a frame this node signed (was the database written by "
                  "another program?); dropped, never sent", seq)
        self.counts["foreign-outbox"] += 1
        self.store.mark_sent(seq, now)
        return False

    def sync_link_troubles(self, now: float) -> None:
        """Mirror the link's TROUBLE sentences into the store, where the page and light see them."""
        current = self.link.troubles
        for subsystem, message in current.items():
            self.troubles.record(subsystem, message, now)
        for subsystem in self.store.troubles():
            if subsystem.startswith("radio") and subsystem not in current:
                self.store.clear_trouble(subsystem)
                log.info("radio trouble cleared: %s", subsystem)

    def on_refused(self, frame: bytes, reason: str) -> None:
        """The radio took a frame but refused to transmit it: queue it again if that may pass.

        Only an alert state this node signed goes back into the outbox (which sends it flooded,
        after a backoff). A heartbeat, receipt, verdict or a relay of another node's frame is
        ephemeral: queued, it would go out stale, to the whole mesh instead of the neighbours
        (making a node two hops away take this one for a neighbour), and straight back into the
        radio that refused it."""
        if reason not in TRANSIENT_NAKS:
            log.error("radio refused a frame for good (%s); it is dropped", reason)
            return
        if not (len(frame) > 1 and frame[1] == wire.FrameType.TRANSITION and self._own(frame)):
            self.counts["refused-ephemeral"] += 1
            log.debug("radio refused an ephemeral frame (%s); dropped", reason)
            return
        now = time.monotonic()
        self._refusals = self._refusals + 1 if now - self._last_refused < REFUSED_FORGET else 1
        self._last_refused = now
        backoff = min(REFUSED_BACKOFF * 2 ** (self._refusals - 1), REFUSED_BACKOFF_MAX)
        self._retry_at = now + backoff
        with self._lock:
            try:
                with self.store.transaction():
                    self.store.enqueue(frame, self._clock())
            except StoreError as exc:
                log.error("could not re-queue a refused frame: %s", exc)
                return
        log.warning("radio refused a frame (%s); queued again, sent in %.0f s", reason, backoff)

    # -- the sender thread, for a link whose send may block --------------------------------------

    def start(self) -> None:
        """Start the sender thread; ``stop`` ends it."""
        self._thread = threading.Thread(target=self._sender, name="outbox-sender", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout=SENDER_JOIN)

    def _sender(self) -> None:
        """Send the outbox in order through a link whose ``send`` may block (seconds, bounded)."""
        while not self._stopping.is_set():
            self._kick.wait(SENDER_WAKE)
            self._kick.clear()
            try:
                self._send_pending()
            except Exception:
                self.counts["error"] += 1
                log.exception("outbox sender failed; it goes on")

    def _send_pending(self) -> None:
        with self._lock:
            # none while the radio refused a frame of ours a moment ago (on_refused)
            pending = self.store.pending() if time.monotonic() >= self._retry_at else []
        for seq, frame in pending:
            if self._stopping.is_set():
                return
            with self._lock:
                if not self._is_own(seq, frame, self._clock()):
                    continue
            try:
                self.link.send(frame)  # not under the node's lock
            except FrameRefused as exc:
                log.error("frame %d dropped: %s", seq, exc)
            except RadioError as exc:
                if self._waited is None:
                    self._waited = 0
                    log.info("outbox waits for the radio (%d frames): %s", len(pending), exc)
                else:
                    log.debug("outbox still waits for the radio: %s", exc)
                return
            with self._lock:
                now = self._clock()
                self.store.mark_sent(seq, now)
                self.counts["sent"] += 1
                self.on_air(frame, now)
            if self._waited is not None:
                self._waited += 1
        if self._waited is not None and not self._stopping.is_set():
            log.info("outbox: radio back, %d frames sent", self._waited)
            self._waited = None
        while self._ephemeral and not self._stopping.is_set():
            frame, hop_limit, queued = self._ephemeral.popleft()
            if time.monotonic() - queued > EPHEMERAL_TTL:
                self.counts["ephemeral-dropped"] += 1
                log.debug("ephemeral frame dropped: it waited %.1f s for the radio", time.monotonic() - queued)
                continue
            try:
                self.link.send(frame, hop_limit=hop_limit)
            except RadioError as exc:
                log.debug("ephemeral frame not sent: %s", exc)
        while self._texts and not self._stopping.is_set():
            text = self._texts.popleft()
            try:
                self.link.send_text(text)
            except RadioError as exc:
                log.warning("text alert not sent: %s", exc)
