"""The alert desk: every transition of an alert on this node, local or heard, and its sounds.

Local transitions (the buttons, a captain's ``report``/``act``) are signed here, applied,
stored with their frame in the outbox, and re-sent while buildings lack them. Remote ones
(``apply_remote``) are applied inside the frame's transaction and relayed. Refusals are
recorded as ``rejected`` events. Quiet alerts expire here. Times are seconds on the node's clock.
"""

from __future__ import annotations

import collections
import logging
import random
import threading
from dataclasses import replace
from typing import Callable, Protocol

from node.config import Config
from node.daemon.liveness import Liveness, jitter
from node.daemon.outbox import Outbox
from node.daemon.relays import NEVER, Receipts, Relays
from node.daemon.signer import Signer
from node.daemon.troubles import Troubles
from node.errors import SilbatoError, StoreError, TransitionError
from node.hardware.devices import Hardware
from node.protocol import alerts, coverage, wire
from node.protocol.alerts import Alert, Kind, Outcome, State, Transition
from node.protocol.keys import Roster
from node.radio.link import text_alert
from node.store import Store

log = logging.getLogger(__name__)


class RequestOutcome(Protocol):
    """A captain's request being acted on. Its outcome is written inside the transaction of its
    effect, so a crash between the two can neither apply it twice nor misreport it."""

    def signed(self, alert: Alert, seq: int) -> None: ...

    def refused(self, reason: str) -> None: ...

# Re-sends of a state this node signed: first after REPEAT_BASE seconds, doubling up to
# alerts.repeat_max_interval. Active states repeat until they end; ended ones a few times.
REPEAT_BASE = 30.0
MAX_RESENDS = 8           # re-sends of one state while live buildings are missing from its receipts


class Desk:
    """This node's alerts. Entry points take the node's ``lock``; ``changed`` is notified after a change."""

    def __init__(self, me: int, location: int, members: list[int], roster: Roster, config: Config, *,
                 store: Store, signer: Signer, hardware: Hardware, outbox: Outbox, relays: Relays,
                 receipts: Receipts, liveness: Liveness, troubles: Troubles, rng: random.Random,
                 counts: collections.Counter[str], clock: Callable[[], float], lock: threading.RLock,
                 changed: threading.Condition):
        self.me, self.location, self.members, self.roster, self.config = me, location, members, roster, config
        self.store, self.signer, self.hardware, self.outbox = store, signer, hardware, outbox
        self.relays, self.receipts, self.liveness, self.troubles = relays, receipts, liveness, troubles
        self.rng, self.counts, self.clock = rng, counts, clock
        self._lock, self._changed = lock, changed
        self._own_report: tuple[str, float] | None = None  # (alert id, when) of this button's last new report
        self._outbox_blocked = NEVER  # when the radio was last away, or the outbox last held unsent frames

    # -- the buttons ----------------------------------------------------------------------

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
        if alert.reporter == self.me and alert.opened_at == alert.last_report_at:  # new, not merged
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
                           if a.state is State.REPORTED and a.reporter != self.me), None)
            target = target or next((("all_clear", a) for a in reversed(active) if a.state is State.CONFIRMED), None)
            if target is None:
                log.info("confirm button held, but there is no report to confirm or alert to clear")
                return None
            try:
                return self.act(target[0], target[1].id)
            except SilbatoError as exc:
                log.error("confirm button: could not %s %s: %s", target[0], target[1].id, exc)
                return None

    # -- this node's own transitions ---------------------------------------------------------

    def report(self, kind: Kind = Kind.RAID, location: int | None = None, *,
               outcome: RequestOutcome | None = None) -> Alert:
        """Report ``kind`` at ``location`` (default: this node's). Merges into a recent report there.

        ``outcome`` (a captain's request) is recorded in the same transaction as the effect."""
        location = self.location if location is None else location
        if location not in self.roster.by_location:
            raise TransitionError(f"location {location} is not on the roster")
        request = outcome
        with self._lock:
            now = self.clock()
            target = alerts.merge_target(self.store.active_alerts(), kind, location, now,
                                         self.config["alerts.merge_window"])
            if target is not None:
                return self._act(lambda counter: Transition(target.id, kind, location, target.reporter,
                                                            State.REPORTED, self.me), now, request)
            return self._act(lambda counter: Transition(alerts.alert_id(self.me, counter), kind, location,
                                                        self.me, State.REPORTED, self.me), now, request)

    def act(self, action: str, alert_id: str, *, outcome: RequestOutcome | None = None,
            second_person: bool = False) -> Alert:
        """A captain's ``confirm``, ``all_clear`` or ``cancel`` on ``alert_id`` (``outcome``: as in ``report``).

        ``second_person``: a confirmation by a captain or responder other than the one whose
        request raised the report (checked by the caller, ``Chores``). Only with it may a
        dispatcher node confirm its own report; never from its buttons."""
        with self._lock:
            now = self.clock()
            current = self.store.get_alert(alert_id)
            try:
                t = alerts.request(current, action, self.me, alert_id)
                if t.state is State.CONFIRMED and current is not None and current.reporter == self.me \
                        and not second_person:
                    raise TransitionError(f"alert {current.id}: confirming needs a signer other than the reporter"
                                          + (" (this dispatcher node confirms its own report only for a second "
                                             "captain or responder)" if self.me in self.roster.dispatchers else ""))
            except TransitionError as exc:
                self.reject(alert_id, alerts.ACTION_STATE.get(action, State.REPORTED), str(exc), self.me,
                            "local", None, now, request=outcome)
                raise
            return self._act(lambda counter: t, now, outcome)

    def _act(self, make: Callable[[int], Transition], now: float, request: RequestOutcome | None = None) -> Alert:
        # One commit (one sync to disk: the wait a busy SD card makes longest) for the counter and
        # the effect. The counter is persisted before anything is sent all the same: the frame
        # goes to the radio only after the commit.
        refused: TransitionError | None = None
        with self.store.transaction():
            counter = self.signer.reserve()
            t = make(counter)
            try:
                alert, outcome = alerts.apply(self.store.get_alert(t.alert_id), t, now, self.roster.dispatchers)
            except TransitionError as exc:
                refused = exc   # the counter stays spent; the refusal is recorded below, in its own transaction
            else:
                frame = self.signer.encode(wire.TransitionFrame(self.me, counter, *alerts.parse_alert_id(alert.id),
                                                                alert.kind, t.state, alert.location))
                self.store.save_alert(alert)
                if outcome is not Outcome.STALE:
                    self.store.set_repeat(alert.id, now + jitter(self.rng, REPEAT_BASE), 0)
                self.store.record_event(alert.id, t.state, outcome.value, signer=self.me, source="local",
                                        counter=counter, received_at=now, frame=frame)
                seq = self.store.enqueue(frame, now)
                if request is not None:  # a captain's request: its outcome commits with its effect
                    request.signed(alert, seq)
                if outcome.sounds:
                    self.store.set_alert_frame(alert.id, frame)
                    self.store.add_coverage(alert.id, alert.state, {self.me}, set())  # sounded: below
                    self.receipts.schedule(alert.id, alert.state, now)
                    self.relays.sent_own(alert, counter, frame, now)
        if refused is not None:
            self.reject(t.alert_id, t.state, str(refused), self.me, "local", counter, now, request=request)
            raise refused
        log.info("alert %s %s by this node (%s)", alert.id, t.state.word, outcome.value)
        if outcome.sounds and alert.kind is Kind.RAID and self.config["radio.text_alerts"]:
            place = self.roster.place(alert.location) if self.config["radio.text_alert_places"] else None
            text = text_alert(alert.state.word, alert.location, alert.id, self.config.languages[0], place)
            if text is not None:
                self.outbox.add_text(text)
        if outcome.sounds:
            self.sound(alert, at_origin=True)
        else:
            self.hardware.siren.sound("ack")
        self.outbox.flush(now)
        self.troubles.show()
        self._changed.notify_all()
        return alert

    def sound(self, alert: Alert, *, at_origin: bool) -> None:
        """Sound ``alert``'s state (unless its kind is silent) and record it for the receipts."""
        if not alert.kind.silent:
            self.receipts.sounded(alert, self.hardware.sound(alert.state, at_origin=at_origin,
                                                             test=alert.kind is Kind.TEST, location=alert.location))

    # -- transitions heard on the air ----------------------------------------------------------

    def apply_remote(self, frame: wire.TransitionFrame, now: float, data: bytes) -> Alert | None:
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
            alert, outcome = alerts.apply(current, t, now, self.roster.dispatchers)
        except TransitionError as exc:
            self.reject(t.alert_id, t.state, str(exc), frame.origin, "air", frame.counter, now)
            return None
        if outcome is Outcome.STALE:  # a late copy of an older state: old news, not an incident event
            self.counts["stale"] += 1
            return None
        if merged:
            outcome = Outcome.MERGED
        self.store.save_alert(alert)
        if outcome is Outcome.CHANGED and current is not None and current.signer == self.me:
            self.store.set_repeat(alert.id, None, 0)  # someone moved it on; stop re-sending ours
        self.store.record_event(alert.id, t.state, outcome.value, signer=frame.origin, source="air",
                                counter=frame.counter, received_at=now,
                                frame=data if outcome.sounds or outcome is Outcome.MERGED else None)
        if outcome is Outcome.DUPLICATE:
            self.relays.count_copy((alert.id, alert.state))
            self.receipts.heard_again(alert.id, alert.state, now)   # a re-send: its signer lacks receipts
        if outcome.sounds:
            log.info("alert %s %s from node %s", alert.id, t.state.word, frame.origin)
            self.store.set_alert_frame(alert.id, data)
            # Relay it to neighbours ourselves, unless enough of them do first: Meshtastic's
            # flooding leaves holes where relays cancel each other or collide.
            self.relays.relay(alert, frame.origin, frame.counter, data, now)
            self.store.add_coverage(alert.id, alert.state, {self.me, frame.origin}, set())  # sounded: by the caller
            self.receipts.schedule(alert.id, alert.state, now)
            return alert
        return None

    def reject(self, alert_id: str, state: State, reason: str, signer: int, source: str,
               counter: int | None, now: float, *, request: RequestOutcome | None = None) -> None:
        """Record a refused transition (``source`` "local" or "air") as a ``rejected`` event
        (and a captain's ``request`` as refused, in the same transaction)."""
        self.counts["rejected"] += 1
        log.warning("transition refused: %s", reason)
        try:
            with self.store.transaction():
                self.store.record_event(alert_id, state, "rejected", reason=reason, signer=signer,
                                        source=source, counter=counter, received_at=now)
                if request is not None:
                    request.refused(reason)
        except StoreError as exc:
            log.error("could not record the refusal: %s", exc)

    # -- chores, once a tick ----------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End the active alerts that had no update for ``alerts.expire_after`` seconds."""
        for alert in alerts.expired(self.store.active_alerts(), now, self.config["alerts.expire_after"]):
            with self.store.transaction():
                self.store.save_alert(alert)
                self.store.set_repeat(alert.id, None, 0)
                self.store.record_event(alert.id, State.EXPIRED, Outcome.CHANGED.value, signer=self.me,
                                        source="local", counter=None, received_at=now)
            log.info("alert %s expired after %.0f s without a change", alert.id, self.config["alerts.expire_after"])

    def repeat(self, now: float) -> None:
        """Re-send a state this node signed while buildings not known to be silent lack it; bounded."""
        if self.outbox.radio_down or self.store.pending():
            # The radio is away, or has not taken what is queued: a copy now would only wait
            # behind the original and go out with it on replug. Re-sends wait until the original
            # has been out for REPEAT_BASE, as after any first send, and count nothing meanwhile.
            self._outbox_blocked = now
            return
        if now - self._outbox_blocked < REPEAT_BASE:
            return
        for alert, done in self.store.due_repeats(now):
            received, _ = self.store.coverage(alert.id, alert.state)
            missing = self.liveness.expected(now) - received
            if alert.signer != self.me or alert.state is State.EXPIRED or not missing or done >= MAX_RESENDS:
                self.store.set_repeat(alert.id, None, done)
                if missing and done >= MAX_RESENDS:
                    log.warning("alert %s %s: gave up re-sending; missing %s", alert.id, alert.state.word,
                                ", ".join(self.roster.members[m].name for m in sorted(missing)))
                continue
            with self.store.transaction():
                signed = self.signer.sign(wire.TransitionFrame, *alerts.parse_alert_id(alert.id), alert.kind,
                                          alert.state, alert.location)
                self.store.enqueue(signed.data, now)
                interval = min(REPEAT_BASE * 2 ** (done + 1), self.config["alerts.repeat_max_interval"])
                self.store.set_repeat(alert.id, now + jitter(self.rng, interval), done + 1)
            self.counts["repeat"] += 1

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
