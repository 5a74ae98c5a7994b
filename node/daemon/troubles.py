"""TROUBLE lines: recorded in the store, where the page and the status light see them.

One line per subsystem (``radio``, ``storage``, ``speaker``, ``flooding``, ``mesh``,
``wiped-N``...), written when it appears or changes and cleared when it is over.
"""

from __future__ import annotations

import logging

from node.hardware.devices import Hardware
from node.protocol.alerts import Kind
from node.protocol.keys import Roster
from node.protocol.ratelimit import OriginRateLimit
from node.store import Store

log = logging.getLogger(__name__)


class Troubles:
    """This node's TROUBLE lines and its status light. Callers hold the node's lock; times are seconds."""

    def __init__(self, store: Store, roster: Roster, rate_limit: OriginRateLimit, hardware: Hardware):
        self.store, self.roster, self.rate_limit, self.hardware = store, roster, rate_limit, hardware
        self._flooding_shown: list[int] = []  # the origins TROUBLE (flooding) names in the store

    def record(self, subsystem: str, message: str, now: float) -> None:
        """Show ``message`` as ``subsystem``'s TROUBLE (logged when new or changed). Never raises."""
        try:
            if self.store.troubles().get(subsystem) != message:
                log.warning("TROUBLE %s: %s", subsystem, message)
            self.store.set_trouble(subsystem, message, now)
        except Exception:
            log.exception("could not record TROUBLE %s", subsystem)

    def calm(self, now: float) -> None:
        """Forget the flooding origins that calmed down, and show who still floods."""
        self.rate_limit.calmed(now)
        self.show_flooding(now)  # writes only when the set of flooding origins changed

    def show_flooding(self, now: float) -> None:
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
                self.record("flooding", f"{names}: more frames than a node ever sends; dropped until it calms down",
                            now)
            else:
                self.store.clear_trouble("flooding")
                log.info("no node is flooding the channel any more")
            self._flooding_shown = flooding
        except Exception:
            log.exception("could not record TROUBLE flooding")

    def check_speaker(self, now: float) -> None:
        """The speaker's TROUBLE line (missing device, aplay or espeak-ng); the siren never depends on it."""
        trouble = self.hardware.trouble
        if trouble:
            self.record("speaker", trouble, now)
        elif "speaker" in self.store.troubles():
            self.store.clear_trouble("speaker")

    def show(self) -> None:
        """The status light: alarm while a raid is active, trouble while any TROUBLE line stands."""
        active = any(a.kind is Kind.RAID for a in self.store.active_alerts())
        self.hardware.light.show(alarm=active, trouble=bool(self.store.troubles()))
