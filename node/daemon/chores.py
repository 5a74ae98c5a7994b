"""Chores: the captains' requests from the web page, the weekly self-test, the retention purge.

The web process only writes requests; ``process_requests`` is where one becomes a fact,
signed through the alert desk, or is refused with the reason the page shows. Only what a
logged-in captain could ask on the page is taken (``CAPTAIN_ACTIONS``); any other row, a
wipe included, is refused and logged: the page's user may write that table. Times are
seconds on the node's clock; callers hold the node's lock.
"""

from __future__ import annotations

import logging
import time

from node.config import Config, parse_weekly
from node.daemon.desk import Desk
from node.errors import SilbatoError, TransitionError
from node.protocol.alerts import Alert, Kind
from node.store import REQUEST_TTL, Store

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0      # seconds between two retention purges
SELFTEST_GRACE = 3600.0   # seconds after its time that a missed self-test still runs (the node was off)
WEEK = 7 * 86400.0
# What a captain may ask through the page (web.data.ACTIONS); notes need no daemon.
CAPTAIN_ACTIONS = frozenset({"raise", "test", "confirm", "all_clear", "cancel"})


class Chores:
    """Requests, self-test and purge."""

    def __init__(self, config: Config, store: Store, desk: Desk):
        self.config, self.store, self.desk = config, store, desk
        self._last_purge = 0.0

    def process_requests(self, now: float) -> None:
        """Sign and apply each pending request through ``report()``/``act()``; record the outcome on its row."""
        for req in self.store.pending_requests():
            if req["action"] not in CAPTAIN_ACTIONS:
                log.warning("captain's request %d refused: %r is not something a captain can ask "
                            "(a wipe comes only from 'silbato wipe' or the buttons)", req["id"], req["action"])
                self.store.finish_request(req["id"], "refused", now, reason="not a captain's action")
                continue
            outcome = _Outcome(self.store, req["id"], now)
            try:
                alert = self._apply_request(req, now, outcome)
            except SilbatoError as exc:
                log.warning("captain's request %d (%s) refused: %s", req["id"], req["action"], exc)
                if not outcome.recorded:   # refused before any change: nothing to commit it with
                    outcome.refused(str(exc))
            except Exception:
                log.exception("captain's request %d (%s) failed", req["id"], req["action"])
                if not outcome.recorded:
                    outcome.refused("internal error; see the node's log")
            else:
                log.info("captain's request %d (%s) signed: alert %s", req["id"], req["action"], alert.id)

    def _apply_request(self, req: dict, now: float, outcome: "_Outcome") -> Alert:
        if not -REQUEST_TTL <= now - req["created_at"] <= REQUEST_TTL:
            raise TransitionError(f"the node did not pick this up within {REQUEST_TTL:.0f} s; ask again")
        action = req["action"]
        if action in ("raise", "test"):
            if req["location"] is None:
                raise TransitionError("a report needs a place")
            return self.desk.report(Kind.RAID if action == "raise" else Kind.TEST, req["location"], outcome=outcome)
        if action == "confirm" and self.store.captain_reported(req["captain"], req["alert_id"] or ""):
            raise TransitionError("the captain who reported this alert cannot also confirm it")
        # A dispatcher node (the SMS gateway) confirms its own report only for a second person:
        # the report came from another captain's or responder's request, never from the button.
        second = action == "confirm" and self.store.reported_by_request(req["alert_id"] or "")
        return self.desk.act(action, req["alert_id"] or "", outcome=outcome, second_person=second)

    def selftest(self, now: float) -> None:
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
                    summary = self.desk.coverage_view(alert.id, now)["summary"]
                    log.info("self-test %s: %s", alert.id, summary)
                    self.store.set_meta("selftest_result", summary)
                    if alert.active:
                        self.desk.act("cancel", alert.id)
            return
        weekday, hour, minute = parse_weekly(schedule)
        local = time.localtime(now)
        days_back = (local.tm_wday - weekday) % 7
        due = time.mktime((local.tm_year, local.tm_mon, local.tm_mday - days_back, hour, minute, 0, 0, 0, -1))
        if due > now:
            due -= WEEK
        last = float(self.store.meta("selftest_last") or 0)
        if due <= last or now - due > SELFTEST_GRACE:
            return  # done already, or missed by more than an hour (the node was off): wait a week
        audible = self.config["selftest.audible"] == "monthly" and time.localtime(due).tm_mday <= 7
        self.store.set_meta("selftest_last", str(due))
        alert = self.desk.report(Kind.TEST if audible else Kind.DRILL)
        self.store.set_meta("selftest_alert", alert.id)
        log.info("self-test %s started (%s)", alert.id, "audible" if audible else "silent")

    def purge(self, now: float) -> None:
        """Remove alerts past ``alerts.retention``, once every PURGE_EVERY seconds."""
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            removed = self.store.purge(now, self.config["alerts.retention"])
            if removed:
                log.info("retention purge removed %d alerts", removed)


class _Outcome:
    """A request's outcome (``desk.RequestOutcome``), written in whatever transaction is open."""

    def __init__(self, store: Store, request_id: int, now: float):
        self.store, self.request_id, self.now = store, request_id, now
        self.recorded = False

    def signed(self, alert: Alert, seq: int) -> None:
        self.store.finish_request(self.request_id, "signed", self.now, alert_id=alert.id, frame_seq=seq)
        self.recorded = True

    def refused(self, reason: str) -> None:
        self.store.finish_request(self.request_id, "refused", self.now, reason=reason)
        self.recorded = True
