"""Liveness: heartbeats, polls and silent verdicts, and the block's liveness into the store.

Each node sends a heartbeat on a jittered schedule sized to the airtime budget
(``supervision.heartbeat_interval``), brings it forward to answer or poll a neighbour, and
calls a neighbour silent (a signed verdict, flooded) when nothing first-hand (a heartbeat or
a receipt it signed) has come from it for the supervision period. Only heartbeats carry the
gossip of far buildings' ages, and only they make a building alive again after a verdict.
A node without its radio judges nobody and sends nothing: it cannot tell its neighbours'
silence from its own deafness (``Supervisor.judging``).
Heartbeats also carry this node's latest alert, so a neighbour that is behind is repaired
(``Relays.repair``). Times are seconds on the node's clock.
"""

from __future__ import annotations

import collections
import logging
import random
from typing import Callable

from node.config import Config
from node.daemon.outbox import Outbox
from node.daemon.relays import NEVER, RELAY_DELAY, REPAIR_GAP, Relays
from node.daemon.signer import Signer
from node.daemon.troubles import Troubles
from node.protocol import alerts, clock, supervision, wire
from node.protocol.alerts import Alert
from node.protocol.keys import Roster
from node.radio.link import Link
from node.store import Store

log = logging.getLogger(__name__)

VERDICT_JITTER = 8.0      # seconds: the random wait before calling a neighbour silent (within VERDICT_LEAD)
VERDICT_AGAIN = (2.0, 6.0)  # seconds: the random wait before flooding this node's own verdict once more
MESH_DEGRADED = 0.40      # channel utilisation above which the mesh is degraded
PEER_ROW_REFRESH = 60.0   # seconds of newer evidence that are worth a write of a peer's row by themselves
# Seconds after its signing (on the block clock) that a heartbeat is still news: it goes to direct
# neighbours only, so anything older is a recording played back, or one held up far too long.
# Neighbours' clocks agree within seconds, but on a crowded channel a heartbeat can wait in the
# radio's queue for tens of seconds (a flood: 20-60 s), and its repair cue is still worth having.
# A copy played back sooner says only what was true when it was signed: its ages count from then.
FRESH = clock.FRESH
# Seconds a heartbeat goes on showing an alert after it ended (ALL CLEAR or CANCELLED): long enough
# for every re-send of the end and the repairs it needs, then a node with no alert shows none.
ENDED_SHOWN = 900.0
# The heartbeat mask's own bit for "wiped", without the 2-bit summary (radio, anything else)
# that every trouble also sets: a wiped node may have other troubles, but only this bit says wiped.
SUMMARY_BITS = 0x03
WIPED_BIT = supervision.trouble_mask(["wiped"]) & ~SUMMARY_BITS
ACTIVE_CODES = frozenset(int(state) for state in alerts.ACTIVE)
# Seconds a heartbeat goes on naming an alert this node lacks (with state 0: "I lack it") after a
# neighbour's receipt or heartbeat showed it exists. A heartbeat shows one alert; without this, a
# node back from an outage that missed an alert older than its latest could ask for it only by
# chance: the repairs of it were spent while it was away, and those at its return collide (P10,
# the line, seed 2: the middle node lacked an alert raised meanwhile for 14 minutes).
WANTED_FOR = 180.0


def jitter(rng: random.Random, seconds: float) -> float:
    """``seconds`` give or take a quarter, at random: nodes that act at the same moment must not
    keep transmitting at the same moment, or they collide every time."""
    return seconds * rng.uniform(0.75, 1.25)


def latest_alert(store: Store) -> Alert | None:
    """The active alert updated last, or None."""
    active = store.active_alerts()
    return max(active, key=lambda a: a.updated_at) if active else None


def shown_alert(store: Store, now: float) -> Alert | None:
    """The alert a heartbeat shows: the active one updated last; with none active, the one that
    ended last, for ``ENDED_SHOWN`` seconds after it ended. A neighbour still on an earlier state
    of it then sees it is behind (and asks), rather than taking this node for one with no alert and
    pushing its own stale state at it."""
    latest = latest_alert(store)
    if latest is not None:
        return latest
    recent = store.alerts(limit=1)
    if recent and recent[0].state in alerts.ON_AIR and now - recent[0].updated_at <= ENDED_SHOWN:
        return recent[0]
    return None


def make_supervisor(cfg: Config, me: int, members: list[int], now: float) -> supervision.Supervisor:
    """This node's view of the block's liveness, on a period long enough for the preset (warned if lengthened)."""
    period = supervision.effective_period(cfg["supervision.period"], cfg["radio.preset"],
                                          cfg["supervision.airtime_budget"])
    if period > cfg["supervision.period"]:
        log.warning("supervision.period %.0f s is too short for %s (a heartbeat takes %.2f s on air, "
                    "the budget is %.0f%%): the block supervises with %.0f s; a silent building shows "
                    "TROUBLE after that", cfg["supervision.period"], cfg["radio.preset"],
                    supervision.heartbeat_airtime(cfg["radio.preset"]),
                    100 * cfg["supervision.airtime_budget"], period)
    return supervision.Supervisor(me, members, period=period, now=now, unit=supervision.age_unit(cfg["radio.preset"]))


class Liveness:
    """Heartbeats, polls, verdicts and the peers' rows. Callers hold the node's lock."""

    def __init__(self, me: int, members: list[int], roster: Roster, config: Config, *, store: Store,
                 supervisor: supervision.Supervisor, signer: Signer, outbox: Outbox, relays: Relays,
                 troubles: Troubles, link: Link, rng: random.Random, counts: collections.Counter[str]):
        self.me, self.members, self.roster, self.config = me, members, roster, config
        self.store, self.supervisor, self.signer, self.outbox = store, supervisor, signer, outbox
        self.relays, self.troubles, self.link, self.rng, self.counts = relays, troubles, link, rng, counts
        self.heartbeat_airtime = supervision.heartbeat_airtime(config["radio.preset"], len(members))  # seconds
        self.heartbeat_interval = self._interval()
        # The first heartbeat at a random moment of the first interval, as nodes boot at random moments.
        self.next_heartbeat = supervisor.started + rng.uniform(0, self.heartbeat_interval)
        self.early_heartbeat = NEVER   # when the heartbeat was last brought forward by ``answer_early``
        self._last_poll = NEVER
        self._verdicts_due: dict[int, float] = {}  # node -> when this node will call it silent
        self._peer_rows: dict[int, tuple] = {}      # node -> ((status, troubles), last heard) as stored
        self._wanted: tuple[str, float] | None = None   # an alert this node lacks, and since when (WANTED_FOR)
        # Called with a neighbour heard first-hand after a silence, and the time (Receipts.neighbour_back).
        self.on_back: Callable[[int, float], None] = lambda node, now: None

    def _interval(self) -> float:
        """Seconds to the next heartbeat: set, or sized to the airtime budget and the neighbours heard."""
        cfg = self.config
        if cfg["supervision.heartbeat_interval"]:
            return cfg["supervision.heartbeat_interval"]
        neighbours = len(self.supervisor.neighbours) or len(self.members) - 1
        return supervision.heartbeat_interval(self.heartbeat_airtime, neighbours=neighbours,
                                              budget=cfg["supervision.airtime_budget"], period=self.supervisor.period)

    def expected(self, now: float) -> set[int]:
        """Buildings that should answer: every rostered node not known to be silent or out of reach, but this one."""
        return {m for m in self.members if m != self.me and not self.roster.members[m].revoked} \
            - self.supervisor.silent(now) - self.supervisor.unreachable(now)

    def radio(self, now: float) -> bool:
        """Whether this node's own radio is up; tells the supervisor. Back from an outage, the next
        heartbeat goes early (built fresh, with no radio trouble), so the neighbours hear it is back."""
        up = not self.outbox.radio_down
        if up and self.supervisor.listening_since is None:
            log.info("radio back: listening for a whole period before judging any neighbour")
            self._heartbeat_early(now)
        elif not up and self.supervisor.listening_since is not None:
            log.info("radio away: no heartbeats, and no neighbour judged, until it is back")
            self._verdicts_due.clear()
        self.supervisor.radio(up, now)
        return up

    # -- frames from the air -------------------------------------------------------------

    def signed_at(self, stamp: int, now: float) -> float:
        """When a heartbeat or verdict signed at block time ``stamp`` was signed, on this node's clock.

        The clock first rises to ``stamp`` if it is ahead (``node.protocol.clock``). A recording
        converts to an old time, so it is never fresher news than what this node holds.
        """
        return self.signer.signed_at(stamp, now)

    def apply_heartbeat(self, frame: wire.HeartbeatFrame, now: float) -> None:
        """A neighbour's heartbeat (inside the caller's transaction): first-hand news of it, and its gossip.

        Only a heartbeat signed at most ``FRESH`` seconds ago counts: heartbeats go to direct
        neighbours only, so one signed earlier is a recording played back (or one held up far too
        long), and nothing in it is news. Its ages are relative to when it was signed.
        """
        signed = self.signed_at(frame.clock, now)
        if now - signed > FRESH:
            self.counts["stale-heartbeat"] += 1
            log.debug("heartbeat from node %s signed %.0f s ago: old news", frame.origin, now - signed)
            return
        self.store.peer_heard(frame.origin, signed, frame.troubles)
        # Back from a real outage: shown silent or out of reach here. (Not a mere gap in first-hand
        # news: on LONG_FAST those are common, and repairing on each doubled every-node p95 in P3.)
        back = self.supervisor.status(frame.origin, now) in ("silent", "unreachable")
        returned = self.supervisor.heard(frame.origin, signed, supervision.trouble_bits_from_mask(frame.troubles))
        if back:
            # Heard first-hand after a silence: it may have missed any number of alerts meanwhile,
            # not just the latest its heartbeat shows.
            self.on_back(frame.origin, now)
        if frame.troubles & WIPED_BIT:
            name = self.roster.members[frame.origin].name
            self.troubles.record(f"wiped-{frame.origin}", f"{name} was wiped: ask the organizers to revoke its key",
                                 now)
            log.critical("node %s (%s) says it was wiped; its key must be revoked", frame.origin, name)
        if frame.roster_version == self.roster.version:
            revived, reached = self.supervisor.merge(frame.vector, signed, via=frame.origin)
            returned = returned or bool(revived or reached)
            # It missed our recent heartbeats: send the next one early rather than let it age.
            if self.supervisor.stale_about_me(frame.vector, self.heartbeat_interval):
                self.answer_early(now, "answer")
            elif self.supervisor.missed_return(frame.vector, signed):
                self.answer_early(now, "answer")   # it still shows silent a building that is back
        if returned:
            # A building named silent (or shown out of reach) is alive: the verdict crossed the block
            # in seconds, and so does the news that it was wrong or is over: the next heartbeat goes
            # early. (Within the early answers' limit: without it, after a middle node's outage, the
            # early heartbeats collided with the repairs and receipts the block needed then, and the
            # coverage of a 5-node line took up to 135 s to settle, where it took up to 83 s.)
            self.answer_early(now, "revive")
        # Repair. A neighbour that lacks an alert state this node holds gets this node's copy of the
        # signed frame; if this node lacks the one it shows, this node's next heartbeat goes early,
        # so that the neighbour sees it is behind and repairs it in turn.
        theirs = self.store.resolve(frame.latest_alert_id) if frame.latest_alert_id else None
        known = self.store.get_alert(theirs) if theirs else None
        if theirs and ((known is None and frame.latest_state in ACTIVE_CODES)
                       or (known is not None and int(known.state) < frame.latest_state)):
            self.pull(theirs, now, lacking=known is None)   # (an ended alert it never had is not worth the air)
            if known is not None:   # past the state this node holds: it has it, as far as that one's coverage goes
                self.store.add_coverage(theirs, known.state, {frame.origin}, set())
        if known is not None and int(known.state) > frame.latest_state and known.state in alerts.ON_AIR:
            self.relays.repair(known, frame.origin, now, shown=True)   # it missed a later state, say the withdrawal
        # Our latest alert, to a neighbour that has none, or whose latest has ended here or is clearly
        # older. (Which of two active alerts is "latest" can differ between nodes by moments: those
        # it has both, and would otherwise pass to each other for as long as both are active.) Not
        # when the coverage shows it has it: "older" is by the times each was taken here, and a node
        # that took an old alert late, back from an outage, took it for the newest and passed it, as
        # lacking, to neighbours that had it, on each of their heartbeats (P10, the block, seed 4:
        # every 40 s for 13 minutes).
        latest = latest_alert(self.store)
        asking = theirs is not None and frame.latest_state == 0   # it names an alert it lacks, not its latest
        if latest is not None and latest.id != theirs and not asking and (
                theirs is None or (known is not None and (known.state not in alerts.ACTIVE
                                                          or latest.opened_at - known.opened_at > REPAIR_GAP))
        ) and frame.origin not in self.store.coverage(latest.id, latest.state)[0]:
            self.relays.repair(latest, frame.origin, now, shown=True)

    def apply_receipt(self, frame: wire.ReceiptFrame, now: float) -> None:
        """A neighbour's fresh receipt (the caller dropped stale ones): proof that it is alive, against
        a verdict (``Supervisor.receipt``).

        A receipt goes to direct neighbours only and carries its signer's block time, as a heartbeat
        does, so one signed ``FRESH`` seconds ago or less proves its sender was alive when it was
        signed, and a recording converts to an old time. On a busy channel receipts outnumber
        heartbeats (LONG_FAST, alerts a minute apart: 5 to 1), and buildings whose heartbeats were
        lost among them were judged silent while their receipts were heard (P3's loop, seeds 1-3:
        28 false verdicts in 30 alerts).
        """
        self.supervisor.receipt(frame.origin, self.signed_at(frame.clock, now))

    def apply_silent(self, frame: wire.SilentFrame, now: float, data: bytes) -> None:
        """A neighbour of ``frame.subject`` says it has gone silent: show it, and pass the word on.

        The verdict counts only if this node has no news of the subject alive after the verdict's
        "last alive" (its block time less ``silent_for``): a recorded verdict played back after
        the building came back is old news, and is neither shown nor passed on; nor is one about an
        outage this node already shows (say, the judge's second copy).
        """
        signed = self.signed_at(frame.clock, now)
        last_alive = signed - frame.silent_for
        known = self.supervisor.evidence.get(frame.subject)
        if frame.subject == self.me:
            if now - signed > self.supervisor.period:   # a recording: no one is asking now
                self.counts["stale-verdict"] += 1
                return
            log.warning("node %s says this node is silent; answering with a heartbeat", frame.origin)
            self._heartbeat_early(now)
            return
        if known is not None and known > last_alive + self.supervisor.unit:
            self.counts["stale-verdict"] += 1
            log.info("node %s's verdict on %s (last alive %.0f s ago) is old news here", frame.origin,
                     self.roster.members[frame.subject].name, now - last_alive)
            return
        if self.supervisor.verdicts.get(frame.subject, NEVER) >= last_alive - self.supervisor.unit:
            self.counts["known-verdict"] += 1   # this outage is shown already, and was passed on then
            return
        self.supervisor.verdict(frame.subject, last_alive)
        log.warning("TROUBLE: %s is silent (%d s, says node %s)", self.roster.members[frame.subject].name,
                    frame.silent_for, frame.origin)
        # Every node relays a verdict once (they are rare, and a node that misses one waits long).
        self.relays.relay_verdict(("silent", frame.origin, frame.counter), data, now, delay=RELAY_DELAY, hop_limit=0)

    def pull(self, alert_id: str, now: float, *, lacking: bool) -> None:
        """A neighbour's frame showed this node behind on ``alert_id`` (``lacking``: it has none of it):
        its next heartbeat goes early and shows it, so a neighbour repairs it. One it lacks is named in
        the heartbeats, with state 0, for WANTED_FOR seconds or until it comes (``shown``)."""
        if lacking:
            self._wanted = (alert_id, now)
        self.answer_early(now, "pull")
        self.relays.behind(alert_id, now)

    def shown(self, now: float) -> tuple[str, int] | None:
        """The alert and state this node's heartbeat shows: one it lacks and asks for (state 0), else its
        latest (``shown_alert``); None for none."""
        if self._wanted is not None:
            alert_id, since = self._wanted
            if now - since <= WANTED_FOR and self.store.get_alert(alert_id) is None:
                return alert_id, 0
            self._wanted = None
        latest = shown_alert(self.store, now)
        return (latest.id, int(latest.state)) if latest else None

    def answer_early(self, now: float, why: str) -> None:
        """Bring the heartbeat forward, at most once each POLLS-th of the period (or half an interval):
        to ``answer`` a neighbour that missed ours, or to ``pull`` an alert state this node lacks,
        since the heartbeat shows the neighbours that it is behind."""
        if now - self.early_heartbeat > min(self.heartbeat_interval / 2, self.supervisor.period / supervision.POLLS):
            self.early_heartbeat = now
            self.counts[why] += 1
            self._heartbeat_early(now)

    def _heartbeat_early(self, now: float) -> None:
        """Bring the next heartbeat forward: to answer a neighbour that missed ours, or to poll one."""
        self.next_heartbeat = min(self.next_heartbeat, now + supervision.early_delay(self.heartbeat_airtime, self.rng))

    # -- chores, once a tick ---------------------------------------------------------------

    def verdicts(self, now: float) -> None:
        """Call silent, and tell the block about, each neighbour whose verdict fell due (none while
        this node's radio is away or freshly back: ``Supervisor.due_verdicts``)."""
        self.radio(now)
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
            signed = self.signer.sign(wire.SilentFrame, node, int(min(now - last, 0xFFFF)), self.signer.stamp(now))
            log.warning("TROUBLE: %s is silent: nothing from it for %.0f s; telling the block",
                        self.roster.members[node].name, now - last)
            self.outbox.send_ephemeral(signed.data, hop_limit=None)
            # Once more a few seconds later, flooded again: a verdict lost to a collision costs minutes.
            self.relays.relay_verdict(("silent-again", signed.counter), signed.data, now, delay=VERDICT_AGAIN,
                                      hop_limit=None)
            self.counts["silent-verdict"] += 1

    def poll(self, now: float) -> None:
        """A neighbour has been quiet for most of the period: ask after it before calling it silent."""
        if self.supervisor.wants_poll(now) and now - self._last_poll >= self.supervisor.period / supervision.POLLS:
            self._last_poll = now
            self.counts["poll"] += 1
            self._heartbeat_early(now)

    def heartbeat(self, now: float) -> None:
        """This node's heartbeat, when due: its troubles, roster, latest alert and the ages it heard."""
        if now < self.next_heartbeat or not self.radio(now):
            return  # none while the radio is away: it would go out stale, if at all
        self.heartbeat_interval = self._interval()
        self.next_heartbeat = now + jitter(self.rng, self.heartbeat_interval)
        shown = self.shown(now)
        reporter, acounter = alerts.parse_alert_id(shown[0]) if shown else (0, 0)
        # The radio's troubles as the link has them now: the store's copy follows at the outbox's turn.
        troubles = {k: v for k, v in self.store.troubles().items() if not k.startswith("radio")} | self.link.troubles
        vector = self.supervisor.vector(now, supervision.trouble_bits(troubles))[:wire.MAX_VECTOR]
        signed = self.signer.sign(wire.HeartbeatFrame, supervision.trouble_mask(troubles), self.roster.version,
                                  reporter, acounter, shown[1] if shown else 0, vector,
                                  self.signer.stamp(now))
        self.outbox.send_ephemeral(signed.data, hop_limit=0)
        self.counts["heartbeat"] += 1

    def record_peers(self, now: float) -> None:
        """The block's liveness into the store for the page: only what changed, or a minute's news,
        in one commit (a write per peer per second would wear out the SD card)."""
        changes = []
        for m in self.members:
            if m == self.me:
                continue
            status = self.supervisor.status(m, now)
            through = self.supervisor.through(m, now) if status == "unreachable" else None
            row = (status, self.supervisor.troubles.get(m, 0), through)
            when = self.supervisor.evidence.get(m)
            written = self._peer_rows.get(m)
            if written is None or written[0] != row or (when or 0) - (written[1] or 0) >= PEER_ROW_REFRESH:
                changes.append((m, row, when))
        if changes:
            with self.store.transaction():
                for m, (status, troubles, through), when in changes:
                    self.store.set_peer_status(m, status, when, troubles, through)
                    self._peer_rows[m] = (status, troubles, through), when

    def check_mesh(self, now: float) -> None:
        """TROUBLE (mesh) while the radio reports the channel busier than MESH_DEGRADED."""
        utilisation = getattr(self.link, "channel_utilisation", None)
        if utilisation is not None and utilisation > MESH_DEGRADED:
            self.supervisor.channel_busy(now)   # a neighbour's silence is weak evidence now: BUSY_PERIODS
            self.troubles.record("mesh", f"MESH DEGRADED: the channel is busy {utilisation:.0%} of the time", now)
        elif "mesh" in self.store.troubles():
            self.store.clear_trouble("mesh")
