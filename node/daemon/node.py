"""The node daemon: wiring only. Start in dependency order, stop in reverse, never die on a bad frame.

``Node`` joins the key and roster, the store, the lifecycle, the codec, the
hardware and a radio link. Its entry points are called from any thread (the
button's, the radio's, the main loop's) and are serialised by one lock:

- ``report()``, ``act()``: this node's own actions (button, captain);
- ``on_frame(bytes)``: a frame heard on the air;
- ``tick()``: captains' requests, expiry, re-sends, the outbox and the retention purge,
  about once a second;
- ``process_requests()``: captains' requests from the web page, polled more often than ``tick``.
"""

from __future__ import annotations

import collections
import logging
import random
import signal
import threading
import time
from dataclasses import replace
from typing import Callable

from node.protocol import alerts, coverage, supervision, wire
from node.hardware import speech
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.protocol.alerts import Alert, Kind, Outcome, State, Transition
from node.config import Config, parse_weekly
from node.errors import FrameError, RadioError, SilbatoError, StoreError, TransitionError
from node.hardware.devices import Hardware
from node.protocol.keys import Roster, SigningKey, load_public
from node.radio.link import FrameRefused, Link, MeshtasticLink, NullLink, text_alert
from node.service import Notifier
from node.store import REQUEST_TTL, Store

log = logging.getLogger(__name__)

# Re-sends of a state this node signed: first after REPEAT_BASE seconds, doubling up to
# alerts.repeat_max_interval. Active states repeat until they end; ended ones a few times.
REPEAT_BASE = 30.0
ENDED_REPEATS = 6
MAX_RESENDS = 8           # re-sends of one state while live buildings are missing from its receipts
RECEIPT_DELAY = (2.0, 20.0)   # seconds: the random wait before a receipt, so 30 nodes do not send at once
RECEIPT_GAP = 30.0        # seconds between two receipts of one alert state from this node
MAX_RECEIPTS = 8          # receipts of one alert state from this node (each only when it learned more)
REPAIR_GAP = 60.0         # seconds between passing one alert to neighbours that lack it
REPAIR_WINDOW = 12        # transitions' airtimes: the random wait before a repair, so neighbours do not collide
RELAY_DELAY = (0.3, 2.5)  # seconds: the random wait before relaying a new alert state to neighbours
RELAY_ENOUGH = 2          # copies heard from neighbours in that wait that make this node's relay needless
MESH_DEGRADED = 0.40      # channel utilisation above which the mesh is degraded
VERDICT_JITTER = 8.0      # seconds: the random wait before calling a neighbour silent (within VERDICT_LEAD)
PURGE_EVERY = 3600.0
# Captains' requests (written by the web process) are polled every REQUEST_POLL seconds
# by ``run``, and refused when older than store.REQUEST_TTL.
REQUEST_POLL = 0.2
# Per-origin rate limit on frames from the air (``OriginRateLimit``). A legitimate node sends a
# few frames a minute: a heartbeat every 30 s or more, a receipt per alert state at most every
# 30 s, re-sends from 30 s doubling, and its captains' actions. In the simulator (three alerts
# at once, captains acting, 20% loss) no receiver ever got more than 3 a minute from one
# origin, nor a burst above 8. The channel carries a transition every 0.09 s on SHORT_FAST
# (650 a minute) and every 1.0 s on LONG_FAST (60 a minute): a flood on any preset goes over.
FLOOD_BURST = 30          # frames an origin may send at once (a radio's queue after a reconnect)
FLOOD_RATE = 20 / 60.0    # frames per second an origin may keep sending: 20 a minute


class OriginRateLimit:
    """A token bucket per origin node, for verified frames (a forger cannot spend another node's allowance).

    An origin may send ``burst`` frames at once and ``rate`` a second after that. One that
    goes over is *flooding*: all its frames are dropped, and still spend its allowance, until
    the bucket is full again (it kept below ``rate`` for a while). So a flood at the channel's
    rate gets ``burst`` frames through in all, not one every few seconds. Times are seconds on
    the node's clock; a clock set back refills nothing and locks no one out.
    """

    def __init__(self, burst: int = FLOOD_BURST, rate: float = FLOOD_RATE):
        self.burst, self.rate = float(burst), rate
        self._buckets: dict[int, tuple[float, float]] = {}  # origin -> (frames left, when counted)
        self.flooding: set[int] = set()

    def _left(self, origin: int, now: float) -> float:
        left, when = self._buckets.get(origin, (self.burst, now))
        return min(self.burst, left + max(0.0, now - when) * self.rate)

    def allow(self, origin: int, now: float) -> bool:
        """Count one frame from ``origin``: True to take it, False to drop it."""
        left = self._left(origin, now)
        if origin in self.flooding and left >= self.burst:
            self.flooding.discard(origin)  # it calmed down
        allowed = origin not in self.flooding and left >= 1
        if not allowed:
            self.flooding.add(origin)
        self._buckets[origin] = (max(0.0, left - 1), now)
        return allowed

    def calmed(self, now: float) -> list[int]:
        """Flooding origins whose allowance is full again: they are no longer flooding."""
        calm = [origin for origin in self.flooding if self._left(origin, now) >= self.burst]
        self.flooding.difference_update(calm)
        return calm


class Node:
    """One building's node. Call ``start()`` before use and ``stop()`` after."""

    def __init__(self, config: Config, *, link: Link | None = None, pin_factory=None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.config = config
        self.clock = clock
        # Jitter for re-sends, receipts and heartbeats: nodes that act at the same moment
        # must not keep transmitting at the same moment, or they collide every time.
        self.rng = rng or random.Random()
        self.link = link or NullLink()
        self.pin_factory = pin_factory
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)  # notified after every committed change
        self._stack: list[Callable[[], None]] = []
        self._last_purge = 0.0
        self._texts: collections.deque[str] = collections.deque(maxlen=20)
        self._ephemeral: collections.deque[tuple[bytes, int]] = collections.deque(maxlen=50)  # (frame, hop limit)
        self._receipts: dict[tuple[str, State], list[float]] = {}  # (alert, state) -> [due, sent, last sent]
        self._repaired: dict[str, float] = {}  # alert id -> when this node last passed it on
        # Relays of new alert states to neighbours: (alert, state) -> [due, copies heard, frame], and
        # the (origin, counter) of each relayed frame, so hearing it again counts as a copy.
        self._relays: dict[tuple[str, State], list] = {}
        self._relay_frames: dict[tuple[int, int], tuple[str, State]] = {}
        self._next_heartbeat = 0.0
        self._early_heartbeat = -1e12
        self._last_poll = -1e12
        self._verdicts_due: dict[int, float] = {}  # node -> when this node will call it silent
        self._peer_rows: dict[int, tuple] = {}      # node -> ((status, troubles), last heard) as stored
        self._kick = threading.Event()
        self.id = 0
        self.location = 0
        self.wiped = False
        self._own_report: tuple[str, float] | None = None  # (alert id, when) of this button's last new report
        self.rate_limit = OriginRateLimit()
        self._flooding_shown: list[int] = []  # the origins TROUBLE (flooding) names in the store

    # -- lifecycle of the daemon itself ------------------------------------------------

    def start(self) -> "Node":
        """Key and roster, then store, then hardware, then radio. Undo what started on failure."""
        cfg = self.config
        try:
            self.key = SigningKey.load(cfg.key_file)
            self.roster = Roster.load(cfg.roster_file, load_public(cfg["node.organizer_key"]))
            me = self.roster.find_key(self.key.public_raw)
            if me is None or me.revoked:
                raise SilbatoError(f"{cfg.key_file}: this node's key is {'revoked' if me else 'not'} on "
                                   f"roster v{self.roster.version}; ask the organizers for a roster with it")
            self.id, self.location = me.id, me.location
            self.store = Store(cfg.db_file)
            self._stack.append(self.store.close)
            self.store.sync_peers(self.roster)
            # For the web page: which building is "this node", and the block's name for exports.
            self.store.set_meta("node_id", str(self.id))
            self.store.set_meta("block", self.roster.block)
            self.members = sorted(self.roster.members)
            now = self.clock()
            period = supervision.effective_period(cfg["supervision.period"], cfg["radio.preset"],
                                                  cfg["supervision.airtime_budget"])
            if period > cfg["supervision.period"]:
                log.warning("supervision.period %.0f s is too short for %s (a heartbeat takes %.2f s on air, "
                            "the budget is %.0f%%): the block supervises with %.0f s; a silent building shows "
                            "TROUBLE after that", cfg["supervision.period"], cfg["radio.preset"],
                            supervision.heartbeat_airtime(cfg["radio.preset"]),
                            100 * cfg["supervision.airtime_budget"], period)
            self.supervisor = supervision.Supervisor(self.id, self.members, period=period, now=now,
                                                     unit=supervision.age_unit(cfg["radio.preset"]))
            self.heartbeat_airtime = supervision.heartbeat_airtime(cfg["radio.preset"], len(self.members))
            self.frame_airtime = time_on_air(wire.frame_size(wire.FrameType.TRANSITION) + MESH_OVERHEAD,
                                             cfg["radio.preset"])
            self.heartbeat_interval = self._heartbeat_interval()
            self._next_heartbeat = now + self.rng.uniform(0, self.heartbeat_interval)
            places = {m.location: m.place for m in self.roster.members.values() if not m.revoked}
            self.hardware = Hardware(cfg, on_hold=self.button_held, on_press=self.button_pressed,
                                     on_confirm=self.confirm_held, on_wipe=lambda: self.wipe("both buttons"), speaker=speech.from_config(cfg, places),
                                     pin_factory=self.pin_factory, clock=self.clock)
            self._stack.append(self.hardware.close)
            self.link.start(self.on_frame, self.on_refused)
            self._stack.append(self.link.stop)
            if not self.link.instant:
                self._start_sender()
        except BaseException:
            self.stop()
            raise
        log.info("node %s (%s) started: roster v%s, %d nodes", self.id, me.name, self.roster.version,
                 len(self.roster.members))
        self.tick()
        return self

    def stop(self) -> None:
        """Stop subsystems in reverse order; one failing does not keep the others running."""
        while self._stack:
            closer = self._stack.pop()
            try:
                closer()
            except Exception:
                log.exception("stopping %s failed", closer)

    def _jitter(self, seconds: float) -> float:
        """``seconds`` give or take a quarter, at random."""
        return seconds * self.rng.uniform(0.75, 1.25)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after a change (checked under the node's lock)."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- this node's own actions ---------------------------------------------------------

    def button_held(self) -> Alert | None:
        """The panic button was held for hold_time: report a raid at this node's place.

        A new report opens the cancel window: pressing again within ``hardware.cancel_window``
        seconds withdraws it (``button_pressed``).
        """
        log.info("panic button held")
        try:
            alert = self.report(Kind.RAID)
        except SilbatoError as exc:
            log.error("could not raise the report: %s", exc)
            self.hardware.siren.sound("reported_origin")  # the captain still hears it was pressed
            return None
        if alert.reporter == self.id and alert.opened_at == alert.last_report_at:  # new, not merged
            self._own_report = (alert.id, alert.opened_at)
        return alert

    def button_pressed(self) -> bool:
        """The panic button went down. Within the cancel window of this button's own new report,
        withdraw that report as a false alarm and return True; otherwise return False."""
        own, self._own_report = self._own_report, None  # one press, one chance
        if own is None or self.clock() - own[1] > self.config["hardware.cancel_window"]:
            return False
        with self._lock:
            current = self.store.get_alert(own[0])
            if current is None or current.state is not State.REPORTED:
                return False  # confirmed meanwhile: this press only silences; withdrawing is a captain's call
            try:
                self.act("cancel", own[0])
            except SilbatoError as exc:
                log.warning("could not withdraw report %s: %s", own[0], exc)
                return False
        log.info("panic button pressed again within %.0f s: report %s withdrawn as a false alarm",
                 self.config["hardware.cancel_window"], own[0])
        return True

    def confirm_held(self) -> Alert | None:
        """The confirm button was held: confirm the newest report from another node, or, with none
        to confirm, declare all clear on the newest confirmed alert. RAID before TEST."""
        with self._lock:
            active = sorted(self.store.active_alerts(), key=lambda a: (a.kind is Kind.RAID, a.opened_at))
            target = next((("confirm", a) for a in reversed(active)
                           if a.state is State.REPORTED and a.reporter != self.id), None)
            target = target or next((("all_clear", a) for a in reversed(active) if a.state is State.CONFIRMED), None)
            if target is None:
                log.info("confirm button held, but there is no report to confirm or alert to clear")
                return None
            try:
                return self.act(target[0], target[1].id)
            except SilbatoError as exc:
                log.error("confirm button: could not %s %s: %s", target[0], target[1].id, exc)
                return None

    def report(self, kind: Kind = Kind.RAID, location: int | None = None) -> Alert:
        """Report ``kind`` at ``location`` (default: this node's). Merges into a recent report there."""
        location = self.location if location is None else location
        if location not in self.roster.by_location:
            raise TransitionError(f"location {location} is not on the roster")
        with self._lock:
            now = self.clock()
            target = alerts.merge_target(self.store.active_alerts(), kind, location, now,
                                         self.config["alerts.merge_window"])
            if target is not None:
                return self._act(lambda counter: Transition(target.id, kind, location, target.reporter,
                                                            State.REPORTED, self.id), now)
            return self._act(lambda counter: Transition(alerts.alert_id(self.id, counter), kind, location,
                                                        self.id, State.REPORTED, self.id), now)

    def act(self, action: str, alert_id: str) -> Alert:
        """A captain's ``confirm``, ``all_clear`` or ``cancel`` on ``alert_id``."""
        with self._lock:
            now = self.clock()
            current = self.store.get_alert(alert_id)
            try:
                t = alerts.request(current, action, self.id, alert_id)
            except TransitionError as exc:
                self._reject(alert_id, alerts.ACTION_STATE.get(action, State.REPORTED), str(exc), self.id,
                             "local", None, now)
                raise
            return self._act(lambda counter: t, now)

    def _act(self, make: Callable[[int], Transition], now: float) -> Alert:
        with self.store.transaction():
            counter = self.store.next_counter()  # persisted before anything is sent
        t = make(counter)
        current = self.store.get_alert(t.alert_id)
        try:
            alert, outcome = alerts.apply(current, t, now)
        except TransitionError as exc:
            self._reject(t.alert_id, t.state, str(exc), self.id, "local", counter, now)
            raise
        frame = wire.encode(wire.TransitionFrame(self.id, counter, *alerts.parse_alert_id(alert.id), alert.kind,
                                                 t.state, alert.location), self.key, self.roster.block)
        with self.store.transaction():
            self.store.save_alert(alert)
            if outcome is not Outcome.STALE:
                self.store.set_repeat(alert.id, now + self._jitter(REPEAT_BASE), 0)
            self.store.record_event(alert.id, t.state, outcome.value, signer=self.id, source="local",
                                    counter=counter, received_at=now)
            self.store.enqueue(frame, now)
            if outcome.sounds:
                self.store.set_alert_frame(alert.id, frame)
                self.store.add_coverage(alert.id, alert.state, {self.id}, set())  # sounded: below
                self._schedule_receipt(alert.id, alert.state, now)
        log.info("alert %s %s by this node (%s)", alert.id, t.state.word, outcome.value)
        if outcome.sounds and alert.kind is Kind.RAID and self.config["radio.text_alerts"]:
            text = text_alert(alert.state.word, self.roster.place(alert.location), alert.id,
                              self.config.languages[0])
            if text is not None:
                self._texts.append(text)
        if outcome.sounds:
            if not alert.kind.silent:
                self._sounded(alert, self.hardware.sound(alert.state, at_origin=True,
                                                         test=alert.kind is Kind.TEST, location=alert.location))
        else:
            self.hardware.siren.sound("ack")
        self._flush(now)
        self._show()
        self._changed.notify_all()
        return alert

    # -- frames from the air ---------------------------------------------------------------

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
                    self._count_copy(self._relay_frames.get(wire.peek_origin(bytes(data)) or (0, 0)))
                level = logging.DEBUG if exc.reason == "replayed" else logging.WARNING
                log.log(level, "frame refused: %s (header %s)", exc, wire.peek_origin(bytes(data)) if
                        isinstance(data, (bytes, bytearray)) else None)
                return
            if not self.rate_limit.allow(frame.origin, now):
                self.counts["rate-limited"] += 1  # dropped before it touches the store
                log.debug("frame from node %s dropped: it is flooding the channel", frame.origin)
                self._show_flooding(now)
                return
            self.counts["accepted"] += 1
            sound: Alert | None = None
            try:
                with self.store.transaction():
                    self.store.mark_seen(frame.origin, frame.counter)
                    troubles = frame.troubles if isinstance(frame, wire.HeartbeatFrame) else None
                    self.store.peer_heard(frame.origin, now, troubles)
                    # Heartbeats and receipts come from their signer itself, one hop away: first-hand
                    # news that it is alive. A transition or a verdict may be a relay or a repair,
                    # minutes old, from a node anywhere in the block.
                    if isinstance(frame, (wire.HeartbeatFrame, wire.ReceiptFrame)):
                        self.supervisor.heard(frame.origin, now,
                                              supervision.trouble_bits_from_mask(troubles) if troubles is not None
                                              else None)
                    if isinstance(frame, wire.TransitionFrame):
                        sound = self._apply_remote(frame, now, bytes(data))
                    elif isinstance(frame, wire.ReceiptFrame):
                        self._apply_receipt(frame, now)
                    elif isinstance(frame, wire.SilentFrame):
                        self._apply_silent(frame, now, bytes(data))
                    else:
                        self._apply_heartbeat(frame, now)
                self.store.clear_trouble("storage")
            except StoreError as exc:
                log.error("storage failed; frame from %s not recorded: %s", frame.origin, exc)
                self._trouble("storage", f"cannot write the database: {exc}", now)
                return
            if sound is not None and not sound.kind.silent:
                self._sounded(sound, self.hardware.sound(sound.state, at_origin=False,
                                                         test=sound.kind is Kind.TEST, location=sound.location))
            self._show()
            self._changed.notify_all()

    def _apply_remote(self, frame: wire.TransitionFrame, now: float, data: bytes) -> Alert | None:
        """Apply a verified transition inside the caller's transaction; return the alert to sound."""
        t = frame.transition()
        current = self.store.get_alert(t.alert_id)
        merged = False
        if current is None and t.state is State.REPORTED:
            current = alerts.merge_target(self.store.active_alerts(), t.kind, t.location, now,
                                          self.config["alerts.merge_window"])
            merged = current is not None
            if merged:
                self.store.add_alias(t.alert_id, current.id)
        if current is not None and current.id != t.alert_id:
            t = replace(t, alert_id=current.id, reporter=current.reporter)  # speak of the merged incident
        try:
            alert, outcome = alerts.apply(current, t, now)
        except TransitionError as exc:
            self._reject(t.alert_id, t.state, str(exc), frame.origin, "air", frame.counter, now)
            return None
        if merged:
            outcome = Outcome.MERGED
        self.store.save_alert(alert)
        if outcome is Outcome.CHANGED and current is not None and current.signer == self.id:
            self.store.set_repeat(alert.id, None, 0)  # someone moved it on; stop re-sending ours
        self.store.record_event(alert.id, t.state, outcome.value, signer=frame.origin, source="air",
                                counter=frame.counter, received_at=now)
        if outcome is Outcome.DUPLICATE:
            self._count_copy((alert.id, alert.state))
        if outcome.sounds:
            log.info("alert %s %s from node %s", alert.id, t.state.word, frame.origin)
            self.store.set_alert_frame(alert.id, data)
            # Relay it to neighbours ourselves, unless enough of them do first: Meshtastic's
            # flooding leaves holes where relays cancel each other or collide.
            self._relays[(alert.id, alert.state)] = [now + self.rng.uniform(*RELAY_DELAY), 0, data, RELAY_ENOUGH]
            self._relay_frames[(frame.origin, frame.counter)] = (alert.id, alert.state)
            self.store.add_coverage(alert.id, alert.state, {self.id, frame.origin}, set())  # sounded: below
            self._schedule_receipt(alert.id, alert.state, now)
            return alert
        return None

    def _show_flooding(self, now: float) -> None:
        """TROUBLE (flooding) names the buildings whose frames are dropped; written only when that changes."""
        flooding = sorted(self.rate_limit.flooding)
        if flooding == self._flooding_shown:
            return
        for origin in set(flooding) - set(self._flooding_shown):
            log.warning("node %s sends more than %d frames a minute; its frames are dropped until it calms down",
                        origin, round(self.rate_limit.rate * 60))
        try:
            if flooding:
                names = ", ".join(f"{m.name} ({m.place})" for m in map(self.roster.members.get, flooding) if m)
                self._trouble("flooding", f"{names}: more frames than a node ever sends; dropped until it calms down",
                              now)
            else:
                self.store.clear_trouble("flooding")
                log.info("no node is flooding the channel any more")
            self._flooding_shown = flooding
        except Exception:
            log.exception("could not record TROUBLE flooding")

    # -- receipts, heartbeats and repair -----------------------------------------------------

    def _sounded(self, alert: Alert, played: bool) -> None:
        """Record that this node's siren sounded ``alert``'s state, for its receipts."""
        if not played:
            return
        try:
            with self.store.transaction():
                self.store.add_coverage(alert.id, alert.state, {self.id}, {self.id})
        except StoreError as exc:
            log.error("could not record that the siren sounded: %s", exc)

    def _count_copy(self, key: tuple[str, State] | None) -> None:
        entry = self._relays.get(key) if key is not None else None
        if entry is not None:
            entry[1] += 1

    def _relay_due(self, now: float) -> None:
        for key, (due, copies, data, enough) in list(self._relays.items()):
            if now < due:
                continue
            del self._relays[key]
            if copies < enough:
                self.counts["relay"] += 1
                self._send_ephemeral(data, now, hop_limit=None if key[0] == "silent-again" else 0)
            else:
                self.counts["relay-suppressed"] += 1
        if len(self._relay_frames) > 500:
            for frame_key in list(self._relay_frames)[:250]:
                del self._relay_frames[frame_key]

    def _schedule_receipt(self, alert_id: str, state: State, now: float) -> None:
        """Send this node's view of who has ``alert_id`` in ``state`` soon, at a random moment."""
        entry = self._receipts.get((alert_id, state))
        if entry is None:
            self._receipts[(alert_id, state)] = [now + self.rng.uniform(*RECEIPT_DELAY), 0, -1e12]
        elif entry[0] is None and entry[1] < MAX_RECEIPTS:  # sent before, and it learned more since
            entry[0] = max(now + self.rng.uniform(*RECEIPT_DELAY), entry[2] + RECEIPT_GAP)

    def _apply_receipt(self, frame: wire.ReceiptFrame, now: float) -> None:
        alert = self.store.get_alert(frame.alert_id)
        if alert is None:
            # A receipt for an alert this node never heard: its heartbeat, sent early, shows the
            # neighbours that it is behind, and they repair it.
            self._answer_early(now, "pull")
            return
        if frame.roster_version == self.roster.version:
            received = coverage.from_bitmap(frame.received, self.members)
            sounded = coverage.from_bitmap(frame.sounded, self.members)
        else:
            received, sounded = {frame.origin}, set()
        if self.store.add_coverage(alert.id, frame.state, received | {frame.origin}, sounded):
            if frame.state is alert.state:
                self._schedule_receipt(alert.id, alert.state, now)

    def _apply_silent(self, frame: wire.SilentFrame, now: float, data: bytes) -> None:
        """A neighbour of ``frame.subject`` says it has gone silent: show it, and pass the word on."""
        if frame.subject == self.id:
            log.warning("node %s says this node is silent; answering with a heartbeat", frame.origin)
            self._heartbeat_early(now)
            return
        self.supervisor.verdict(frame.subject, now - frame.silent_for)
        log.warning("TROUBLE: %s is silent (%d s, says node %s)", self.roster.members[frame.subject].name,
                    frame.silent_for, frame.origin)
        # Every node relays a verdict once (they are rare, and a node that misses one waits long).
        self._relays[("silent", frame.origin, frame.counter)] = [now + self.rng.uniform(*RELAY_DELAY), 0, data,
                                                                 1 << 30]

    def wipe(self, why: str) -> list:
        """Destroy this node's key, database and captains' accounts, after telling the block.

        The last heartbeat carries the ``wiped`` trouble bit, so every node shows that this
        building must be revoked. Then the files are overwritten and removed, and the node
        stops: without its key it cannot start again. Takes well under ``wipe.WIPE_WITHIN``.
        """
        from node.daemon import wipe as wipe_mod

        started = time.monotonic()
        log.critical("WIPE (%s): telling the block, then destroying the key and the database", why)
        with self._lock:
            try:
                with self.store.transaction():
                    counter = self.store.next_counter()
                frame = wire.HeartbeatFrame(self.id, counter, supervision.trouble_mask(["wiped"]),
                                            self.roster.version, 0, 0, 0, b"")
                data = wire.encode(frame, self.key, self.roster.block)
                if self.link.instant:
                    self.link.send(data, hop_limit=None)
                else:
                    self._ephemeral.appendleft((data, None))
                    self._kick.set()
            except Exception as exc:  # the wipe goes on whatever the radio or the disk says
                log.error("wipe: could not tell the block: %s", exc)
        if not self.link.instant:  # give the sender a moment to hand the notice to the radio
            deadline = time.monotonic() + 3.0
            while self._ephemeral and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stop()
        destroyed = wipe_mod.destroy(wipe_mod.node_files(self.config))
        log.critical("WIPE done in %.1f s: %s", time.monotonic() - started,
                     ", ".join(str(p) for p in destroyed) or "nothing left to destroy")
        self.wiped = True
        return destroyed

    def _apply_heartbeat(self, frame: wire.HeartbeatFrame, now: float) -> None:
        if frame.troubles & supervision.trouble_mask(["wiped"]) & ~3:
            name = self.roster.members[frame.origin].name
            self._trouble(f"wiped-{frame.origin}", f"{name} was wiped: ask the organizers to revoke its key", now)
            log.critical("node %s (%s) says it was wiped; its key must be revoked", frame.origin, name)
        if frame.roster_version == self.roster.version:
            self.supervisor.merge(frame.vector, now)
            # It missed our recent heartbeats: send the next one early rather than let it age.
            if self.supervisor.stale_about_me(frame.vector, self.heartbeat_interval):
                self._answer_early(now, "answer")
        # Repair. A neighbour that lacks an alert state this node holds gets this node's copy of the
        # signed frame; if this node lacks the one it shows, this node's next heartbeat goes early,
        # so that the neighbour sees it is behind and repairs it in turn.
        theirs = self.store.resolve(frame.latest_alert_id) if frame.latest_alert_id else None
        known = self.store.get_alert(theirs) if theirs else None
        if theirs and (known is None or int(known.state) < frame.latest_state):
            self._answer_early(now, "pull")
        if known is not None and int(known.state) > frame.latest_state and known.state in alerts.ON_AIR:
            self._repair(known, frame.origin, now)   # it missed a later state, say the withdrawal
        # Our latest alert, to a neighbour that has none, or whose latest has ended here or is clearly
        # older. (Which of two active alerts is "latest" can differ between nodes by moments: those
        # it has both, and would otherwise pass to each other for as long as both are active.)
        latest = self._latest_alert()
        if latest is not None and latest.id != theirs and (
                theirs is None or (known is not None and (known.state not in alerts.ACTIVE
                                                          or latest.opened_at - known.opened_at > REPAIR_GAP))):
            self._repair(latest, frame.origin, now)

    def _answer_early(self, now: float, why: str) -> None:
        """Bring the heartbeat forward, at most once each POLLS-th of the period (or half an interval):
        to ``answer`` a neighbour that missed ours, or to ``pull`` an alert state this node lacks,
        since the heartbeat shows the neighbours that it is behind."""
        if now - self._early_heartbeat > min(self.heartbeat_interval / 2, self.supervisor.period / supervision.POLLS):
            self._early_heartbeat = now
            self.counts[why] += 1
            self._heartbeat_early(now)

    def _repair(self, alert: Alert, neighbour: int, now: float) -> None:
        """Pass ``alert``'s signed frame to the neighbours, after a random wait, unless another neighbour does first.

        Every neighbour of a node that is behind hears the same heartbeat; those hidden from each
        other would collide at it if they all answered at once, so each waits a random span of
        several frames' airtime and stands down on hearing another's copy.
        """
        if now - self._repaired.get(alert.id, -1e12) < REPAIR_GAP or (alert.id, alert.state) in self._relays:
            return
        stored = self.store.alert_frame(alert.id)
        if stored is None:
            return
        if len(self._repaired) > 200:
            self._repaired = {a: t for a, t in self._repaired.items() if now - t < REPAIR_GAP}
        self._repaired[alert.id] = now
        self.counts["repair"] += 1
        log.info("node %s lacks alert %s %s; passing it on", neighbour, alert.id, alert.state.word)
        key = (alert.id, alert.state)
        self._relays[key] = [now + self.rng.uniform(0.3, 0.3 + REPAIR_WINDOW * self.frame_airtime), 0, stored, 1]
        origin = wire.peek_origin(stored)
        if origin is not None:
            self._relay_frames[origin] = key

    def _heartbeat_interval(self) -> float:
        """Seconds to the next heartbeat: set, or sized to the airtime budget and the neighbours heard."""
        cfg = self.config
        if cfg["supervision.heartbeat_interval"]:
            return cfg["supervision.heartbeat_interval"]
        neighbours = len(self.supervisor.neighbours) or len(self.members) - 1
        return supervision.heartbeat_interval(self.heartbeat_airtime, neighbours=neighbours,
                                              budget=cfg["supervision.airtime_budget"], period=self.supervisor.period)

    def _heartbeat_early(self, now: float) -> None:
        """Bring the next heartbeat forward: to answer a neighbour that missed ours, or to poll one."""
        self._next_heartbeat = min(self._next_heartbeat, now + supervision.early_delay(self.heartbeat_airtime,
                                                                                         self.rng))

    def _latest_alert(self) -> Alert | None:
        active = self.store.active_alerts()
        return max(active, key=lambda a: a.updated_at) if active else None

    def _expected(self, now: float) -> set[int]:
        """Buildings that should answer: every rostered node not known to be silent, but this one."""
        return {m for m in self.members if m != self.id and not self.roster.members[m].revoked} \
            - self.supervisor.silent(now)

    def _send_ephemeral(self, frame: bytes, now: float, hop_limit: int) -> None:
        """Send a frame that is useless later (heartbeat, receipt, repair): never queued in the outbox."""
        if self.link.instant:
            try:
                self.link.send(frame, hop_limit=hop_limit)
            except RadioError as exc:
                log.debug("ephemeral frame not sent: %s", exc)
        else:
            self._ephemeral.append((frame, hop_limit))
            self._kick.set()

    def _supervise(self, now: float) -> None:
        """Heartbeats and receipts when due, then the block's liveness into the store."""
        self._relay_due(now)
        own = supervision.trouble_bits(self.store.troubles())
        due_now = self.supervisor.due_verdicts(now)
        # A wait for a building that came back, or that another neighbour has named, is over.
        self._verdicts_due = {n: d for n, d in self._verdicts_due.items() if n in {node for node, _ in due_now}}
        for node, last in due_now:
            # Neighbours that heard a building's last heartbeat together would call it silent
            # together, and collide: each waits a random few seconds, and one verdict is enough.
            due = self._verdicts_due.setdefault(node, now + self.rng.uniform(0.0, VERDICT_JITTER))
            if now < due:
                continue
            del self._verdicts_due[node]
            self.supervisor.verdict(node, last)
            with self.store.transaction():
                counter = self.store.next_counter()
            frame = wire.SilentFrame(self.id, counter, node, int(min(now - last, 0xFFFF)))
            log.warning("TROUBLE: %s is silent: nothing from it for %.0f s; telling the block",
                        self.roster.members[node].name, now - last)
            data = wire.encode(frame, self.key, self.roster.block)
            self._send_ephemeral(data, now, hop_limit=None)
            # Once more a few seconds later, flooded again: a verdict lost to a collision costs minutes.
            self._relays[("silent-again", counter)] = [now + self.rng.uniform(2.0, 6.0), 0, data, 1 << 30]
            self.counts["silent-verdict"] += 1
        if self.supervisor.wants_poll(now) and now - self._last_poll >= self.supervisor.period / supervision.POLLS:
            # A neighbour has been quiet for most of the period: ask after it before calling it silent.
            self._last_poll = now
            self.counts["poll"] += 1
            self._heartbeat_early(now)
        if now >= self._next_heartbeat:
            self.heartbeat_interval = self._heartbeat_interval()
            self._next_heartbeat = now + self._jitter(self.heartbeat_interval)
            latest = self._latest_alert()
            reporter, acounter = alerts.parse_alert_id(latest.id) if latest else (0, 0)
            with self.store.transaction():
                counter = self.store.next_counter()
            frame = wire.HeartbeatFrame(self.id, counter, supervision.trouble_mask(self.store.troubles()),
                                        self.roster.version, reporter, acounter, int(latest.state) if latest else 0,
                                        self.supervisor.vector(now, own)[:wire.MAX_VECTOR])
            self._send_ephemeral(wire.encode(frame, self.key, self.roster.block), now, hop_limit=0)
            self.counts["heartbeat"] += 1
        for key, entry in list(self._receipts.items()):
            if entry[0] is None or now < entry[0]:
                continue
            alert = self.store.get_alert(key[0])
            if alert is None or entry[1] >= MAX_RECEIPTS:
                del self._receipts[key]
                continue
            received, sounded = self.store.coverage(alert.id, key[1])
            with self.store.transaction():
                counter = self.store.next_counter()
            frame = wire.ReceiptFrame(self.id, counter, *alerts.parse_alert_id(alert.id), key[1], self.roster.version,
                                      coverage.to_bitmap(received, self.members),
                                      coverage.to_bitmap(sounded, self.members))
            self._send_ephemeral(wire.encode(frame, self.key, self.roster.block), now, hop_limit=0)
            entry[:] = [None, entry[1] + 1, now]
            self.counts["receipt"] += 1
        if len(self._receipts) > 200:  # forget finished receipts of old alerts
            for key in [k for k, e in self._receipts.items() if e[0] is None][:100]:
                del self._receipts[key]
        # Into the store for the page: only what changed, or a minute's news, in one commit
        # (a write per peer per second would wear out the SD card).
        changes = []
        for m in self.members:
            if m == self.id:
                continue
            row = (self.supervisor.status(m, now), self.supervisor.troubles.get(m, 0))
            when = self.supervisor.evidence.get(m)
            written = self._peer_rows.get(m)
            if written is None or written[0] != row or (when or 0) - (written[1] or 0) >= 60:
                changes.append((m, row, when))
        if changes:
            with self.store.transaction():
                for m, (status, troubles), when in changes:
                    self.store.set_peer_status(m, status, when, troubles)
                    self._peer_rows[m] = (status, troubles), when
        utilisation = getattr(self.link, "channel_utilisation", None)
        if utilisation is not None and utilisation > MESH_DEGRADED:
            self._trouble("mesh", f"MESH DEGRADED: the channel is busy {utilisation:.0%} of the time", now)
        elif "mesh" in self.store.troubles():
            self.store.clear_trouble("mesh")

    def _selftest(self, now: float) -> None:
        """The weekly self-test: a TEST that proves every building receives (and sounds, monthly).

        Silent by default: it is sent as a drill that no node sounds. After
        supervision.receipt_timeout the result is logged (and kept for the page), then withdrawn.
        """
        schedule = self.config["selftest.schedule"]
        if not schedule:
            return
        pending = self.store.meta("selftest_alert")
        if pending:
            alert = self.store.get_alert(pending)
            if alert is None or now - alert.opened_at >= self.config["supervision.receipt_timeout"]:
                self.store.set_meta("selftest_alert", "")
                if alert is not None:
                    summary = self.coverage_view(alert.id, now)["summary"]
                    log.info("self-test %s: %s", alert.id, summary)
                    self.store.set_meta("selftest_result", summary)
                    if alert.active:
                        self.act("cancel", alert.id)
            return
        weekday, hour, minute = parse_weekly(schedule)
        local = time.localtime(now)
        days_back = (local.tm_wday - weekday) % 7
        due = time.mktime((local.tm_year, local.tm_mon, local.tm_mday - days_back, hour, minute, 0, 0, 0, -1))
        if due > now:
            due -= 7 * 86400
        last = float(self.store.meta("selftest_last") or 0)
        if due <= last or now - due > 3600:
            return  # done already, or missed by more than an hour (the node was off): wait a week
        audible = self.config["selftest.audible"] == "monthly" and time.localtime(due).tm_mday <= 7
        self.store.set_meta("selftest_last", str(due))
        alert = self.report(Kind.TEST if audible else Kind.DRILL)
        self.store.set_meta("selftest_alert", alert.id)
        log.info("self-test %s started (%s)", alert.id, "audible" if audible else "silent")

    def coverage_view(self, alert_id: str, now: float | None = None) -> dict:
        """Who has received and sounded an alert's current state, and who is missing."""
        now = self.clock() if now is None else now
        with self._lock:
            alert = self.store.get_alert(alert_id)
            if alert is None:
                raise TransitionError(f"unknown alert {alert_id}")
            received, sounded = self.store.coverage(alert.id, alert.state)
            late = now - alert.updated_at >= self.config["supervision.receipt_timeout"]
            view = coverage.describe(alert.state.word, received, sounded,
                                     {m: self.roster.members[m].name for m in self.members}, late=late)
            return {"alert": alert.id, "state": alert.state.word, "received": sorted(received),
                    "sounded": sorted(sounded), **view}

    def _reject(self, alert_id: str, state: State, reason: str, signer: int, source: str,
                counter: int | None, now: float) -> None:
        self.counts["rejected"] += 1
        log.warning("transition refused: %s", reason)
        try:
            with self.store.transaction():
                self.store.record_event(alert_id, state, "rejected", reason=reason, signer=signer,
                                        source=source, counter=counter, received_at=now)
        except StoreError as exc:
            log.error("could not record the refusal: %s", exc)

    # -- housekeeping ----------------------------------------------------------------------

    def tick(self) -> None:
        """Expire quiet alerts, re-send what this node signed, flush the outbox, purge. Never raises."""
        if self.wiped:
            return
        try:
            with self._lock:
                now = self.clock()
                self._process_requests(now)
                if self.wiped:  # a request wiped the node: nothing is left to look after
                    return
                self.rate_limit.calmed(now)
                self._show_flooding(now)  # writes only when the set of flooding origins changed
                self._expire(now)
                self._repeat(now)
                self._supervise(now)
                self._selftest(now)
                self._flush(now)
                if now - self._last_purge >= PURGE_EVERY:
                    self._last_purge = now
                    removed = self.store.purge(now, self.config["alerts.retention"])
                    if removed:
                        log.info("retention purge removed %d alerts", removed)
                self._check_hardware(now)
                self._show()
                self._changed.notify_all()
        except Exception:
            self.counts["error"] += 1
            log.exception("housekeeping failed; the node goes on")

    # -- captains' requests from the web page -------------------------------------------------

    def process_requests(self) -> None:
        """Apply the captains' pending requests now. Never raises."""
        if self.wiped:
            return
        try:
            with self._lock:
                self._process_requests(self.clock())
        except Exception:
            self.counts["error"] += 1
            log.exception("captains' requests failed; the node goes on")

    def _process_requests(self, now: float) -> None:
        """Sign and apply each pending request through ``report()``/``act()``; record the outcome on its row.

        The web process only writes requests; this is where one becomes a fact, or is refused
        with the reason the page shows.
        """
        for req in self.store.pending_requests():
            if req["action"] == "wipe" and req["captain"] == "silbato wipe":   # the CLI, as root on the node
                self.wipe("silbato wipe")
                return
            try:
                alert = self._apply_request(req, now)
            except SilbatoError as exc:
                log.warning("captain's request %d (%s) refused: %s", req["id"], req["action"], exc)
                self.store.finish_request(req["id"], "refused", now, reason=str(exc))
            except Exception:
                log.exception("captain's request %d (%s) failed", req["id"], req["action"])
                self.store.finish_request(req["id"], "refused", now, reason="internal error; see the node's log")
            else:
                log.info("captain's request %d (%s) signed: alert %s", req["id"], req["action"], alert.id)
                self.store.finish_request(req["id"], "signed", now, alert_id=alert.id,
                                          frame_seq=self.store.last_seq())

    def _apply_request(self, req: dict, now: float) -> Alert:
        if not -REQUEST_TTL <= now - req["created_at"] <= REQUEST_TTL:
            raise TransitionError(f"the node did not pick this up within {REQUEST_TTL:.0f} s; ask again")
        action = req["action"]
        if action in ("raise", "test"):
            if req["location"] is None:
                raise TransitionError("a report needs a place")
            return self.report(Kind.RAID if action == "raise" else Kind.TEST, req["location"])
        if action == "confirm" and self.store.captain_reported(req["captain"], req["alert_id"] or ""):
            raise TransitionError("the captain who reported this alert cannot also confirm it")
        return self.act(action, req["alert_id"] or "")

    def _expire(self, now: float) -> None:
        for alert in alerts.expired(self.store.active_alerts(), now, self.config["alerts.expire_after"]):
            with self.store.transaction():
                self.store.save_alert(alert)
                self.store.set_repeat(alert.id, None, 0)
                self.store.record_event(alert.id, State.EXPIRED, Outcome.CHANGED.value, signer=self.id,
                                        source="local", counter=None, received_at=now)
            log.info("alert %s expired after %.0f s without a change", alert.id, self.config["alerts.expire_after"])

    def _repeat(self, now: float) -> None:
        """Re-send a state this node signed while buildings not known to be silent lack it; bounded."""
        for alert, done in self.store.due_repeats(now):
            received, _ = self.store.coverage(alert.id, alert.state)
            missing = self._expected(now) - received
            if alert.signer != self.id or alert.state is State.EXPIRED or not missing or done >= MAX_RESENDS:
                self.store.set_repeat(alert.id, None, done)
                if missing and done >= MAX_RESENDS:
                    log.warning("alert %s %s: gave up re-sending; missing %s", alert.id, alert.state.word,
                                ", ".join(self.roster.members[m].name for m in sorted(missing)))
                continue
            with self.store.transaction():
                counter = self.store.next_counter()
                frame = wire.TransitionFrame(self.id, counter, *alerts.parse_alert_id(alert.id), alert.kind,
                                             alert.state, alert.location)
                self.store.enqueue(wire.encode(frame, self.key, self.roster.block), now)
                interval = min(REPEAT_BASE * 2 ** (done + 1), self.config["alerts.repeat_max_interval"])
                self.store.set_repeat(alert.id, now + self._jitter(interval), done + 1)
            self.counts["repeat"] += 1

    def _flush(self, now: float) -> None:
        """Hand queued frames to the radio in order, keeping the rest at the first failure.

        A link whose ``send`` returns at once (the simulated air) is driven here, under
        the node's lock; a real radio is driven by the sender thread, so a slow or dead
        radio never holds up the button, the siren or frames from the air.
        """
        self._sync_link_troubles(now)
        if not self.link.instant:
            self._kick.set()
            return
        for seq, frame in self.store.pending():
            try:
                self.link.send(frame)
            except FrameRefused as exc:
                log.error("frame %d dropped: %s", seq, exc)
            except RadioError as exc:
                self._trouble("radio", str(exc), now)
                return
            self.store.mark_sent(seq, now)

    def _sync_link_troubles(self, now: float) -> None:
        """Mirror the link's TROUBLE sentences into the store, where the page and light see them."""
        current = self.link.troubles
        for subsystem, message in current.items():
            self._trouble(subsystem, message, now)
        for subsystem in self.store.troubles():
            if subsystem.startswith("radio") and subsystem not in current:
                self.store.clear_trouble(subsystem)
                log.info("radio trouble cleared: %s", subsystem)

    def _start_sender(self) -> None:
        self._sender_stop = threading.Event()
        thread = threading.Thread(target=self._sender, name="outbox-sender", daemon=True)
        thread.start()

        def stop_sender() -> None:
            self._sender_stop.set()
            self._kick.set()
            thread.join(timeout=10)
        self._stack.append(stop_sender)

    def _sender(self) -> None:
        """Send the outbox in order through a link whose ``send`` may block (seconds, bounded)."""
        while not self._sender_stop.is_set():
            self._kick.wait(1.0)
            self._kick.clear()
            try:
                self._send_pending()
            except Exception:
                self.counts["error"] += 1
                log.exception("outbox sender failed; it goes on")

    def _send_pending(self) -> None:
        with self._lock:
            pending = self.store.pending()
        for seq, frame in pending:
            if self._sender_stop.is_set():
                return
            try:
                self.link.send(frame)  # not under the node's lock
            except FrameRefused as exc:
                log.error("frame %d dropped: %s", seq, exc)
            except RadioError as exc:
                log.info("outbox waits for the radio (%d frames): %s", len(pending), exc)
                return
            with self._lock:
                self.store.mark_sent(seq, self.clock())
                self.counts["sent"] += 1
        while self._ephemeral and not self._sender_stop.is_set():
            frame, hop_limit = self._ephemeral.popleft()
            try:
                self.link.send(frame, hop_limit=hop_limit)
            except RadioError as exc:
                log.debug("ephemeral frame not sent: %s", exc)
        while self._texts and not self._sender_stop.is_set():
            text = self._texts.popleft()
            try:
                self.link.send_text(text)
            except RadioError as exc:
                log.warning("text alert not sent: %s", exc)

    def on_refused(self, frame: bytes, reason: str) -> None:
        """The radio took a frame but refused to transmit it: queue it again if that may pass."""
        from node.radio.link import TRANSIENT_NAKS

        if reason not in TRANSIENT_NAKS:
            log.error("radio refused a frame for good (%s); it is dropped", reason)
            return
        with self._lock:
            try:
                with self.store.transaction():
                    self.store.enqueue(frame, self.clock())
            except StoreError as exc:
                log.error("could not re-queue a refused frame: %s", exc)
                return
        log.warning("radio refused a frame (%s); queued again", reason)
        self._kick.set()

    def _trouble(self, subsystem: str, message: str, now: float) -> None:
        try:
            if self.store.troubles().get(subsystem) != message:
                log.warning("TROUBLE %s: %s", subsystem, message)
            self.store.set_trouble(subsystem, message, now)
        except Exception:
            log.exception("could not record TROUBLE %s", subsystem)

    def _check_hardware(self, now: float) -> None:
        """The speaker's TROUBLE line (missing device, aplay or espeak-ng); the siren never depends on it."""
        trouble = self.hardware.trouble
        if trouble:
            self._trouble("speaker", trouble, now)
        elif "speaker" in self.store.troubles():
            self.store.clear_trouble("speaker")

    def _show(self) -> None:
        active = any(a.kind is Kind.RAID for a in self.store.active_alerts())
        self.hardware.light.show(alarm=active, trouble=bool(self.store.troubles()))


def make_link(config: Config) -> Link:
    """The radio link the settings ask for: serial, TCP, or none."""
    if config["radio.port"] or config["radio.tcp"]:
        return MeshtasticLink(port=config["radio.port"], tcp=config["radio.tcp"], channel=config["radio.channel"],
                              hop_limit=config["radio.hop_limit"])
    return NullLink()


def health_problems(node: Node, *, lock_timeout: float = 5.0) -> list[str]:
    """Why the watchdog must not be pinged now: the radio reader, the GPIO loop or the database.

    Empty when all three answer. A radio that is merely unplugged is not a problem here
    (its reader is alive and looking for it; the page shows TROUBLE): systemd restarting
    the daemon would not bring it back.
    """
    problems = []
    if not node.link.alive:
        problems.append("the radio reader has stopped")
    try:
        node.hardware.button.is_pressed  # reads the pin through the GPIO chip
    except Exception as exc:
        problems.append(f"GPIO does not answer: {exc}")
    if not node._lock.acquire(timeout=lock_timeout):
        problems.append(f"the node has been busy for {lock_timeout:.0f} s")
        return problems
    try:
        node.store.db.execute("SELECT count(*) FROM meta").fetchone()
    except Exception as exc:
        problems.append(f"the database does not answer: {exc}")
    finally:
        node._lock.release()
    return problems


def run(config: Config, *, stopping: threading.Event | None = None, link: Link | None = None,
        notifier: Notifier | None = None, pin_factory=None) -> int:
    """``silbato run``: the node daemon until SIGTERM or SIGINT. Returns the exit code.

    Under systemd (``Type=notify``) it sends READY=1 once the store, the lifecycle and the
    hardware are up, and WATCHDOG=1 only while ``health_problems`` finds none.
    """
    from node import __version__

    stopping = stopping or threading.Event()
    link = link or make_link(config)
    notifier = notifier or Notifier.from_environment()

    def on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    node = Node(config, link=link, pin_factory=pin_factory).start()
    try:
        with node._lock:  # for 'silbato status'; a full disk must not stop the node
            node.store.set_meta("daemon_started_at", repr(time.time()))
            node.store.set_meta("daemon_version", __version__)
    except Exception:
        log.exception("could not record the start time")
    notifier.ready(f"node {node.id}: store, lifecycle and hardware up")
    next_tick = time.monotonic() + 1.0
    reported: list[str] = []
    try:
        while not stopping.wait(REQUEST_POLL):
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + 1.0
                node.tick()
            else:
                node.process_requests()  # a captain's click is acted on within REQUEST_POLL seconds
            if node.wiped:
                log.critical("node wiped; the daemon exits and cannot start again without a new key")
                return 3
            if notifier.watchdog_due():
                problems = health_problems(node)
                if problems != reported:
                    reported = problems
                    if problems:
                        log.error("unhealthy, not pinging the watchdog: %s", "; ".join(problems))
                    else:
                        log.info("healthy again")
                if problems:
                    notifier.status("unhealthy: " + "; ".join(problems))
                else:
                    notifier.ping()
                    notifier.status(f"node {node.id}: healthy")
    finally:
        notifier.stopping()
        node.stop()
        log.info("node stopped")
    return 0
