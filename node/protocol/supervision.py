"""Supervision: which buildings are alive, learned from heartbeats gossiped between neighbours. Pure.

Every node sends a heartbeat to its direct neighbours only (hop limit 0), every
``interval`` seconds. The heartbeat carries the sender's *age vector*: for each
node on the roster, how long ago the sender last had first-hand or gossiped
evidence that the node was alive, in units of ``AGE_UNIT`` seconds (longer on
slow presets; 6 bits,
rounded up), together with two bits of that node's own troubles (radio, other). A node takes,
for each building, the freshest evidence from anyone. Ages are rounded *up*
before they are sent, so gossip can make evidence look older but never newer:
a dead node cannot be kept alive by its neighbours repeating each other.

Gossip is fast between neighbours and slow across the block (about one
heartbeat interval per hop), so the verdict is local: a *neighbour* of a
building (a node that has heard it first-hand) that has no evidence of it for
``period`` seconds floods a signed SILENT verdict, once per outage; every node
shows the building silent on the verdict, until it hears of the building again,
and marks it so in its own heartbeats, which carries the verdict to any node
that missed the flood.

Only a live neighbour judges. A node whose own radio is down, or back for less than
a full ``period`` (its news of every neighbour is as old as the outage, and a live
neighbour needs up to a period to be heard again), calls nobody silent. And a
building whose news stopped because the buildings between are down is not silent
but *out of reach*: each node remembers through which neighbour its freshest news
of each building came, and a building whose news came through a building now
silent or out of reach (or whose news is no newer than the last sign of life of a
building judged silent, or judged silent and heard of again less than ``FAR_PERIODS``
periods ago)
shows "out of reach (through B2)", the way a fire panel reports a broken loop rather
than every device beyond it.
A building is thus shown silent everywhere about ``period`` seconds after its
last heartbeat (a verdict falls due ``VERDICT_LEAD`` early, for its random wait
and its flood), while a far node's slow gossip never raises a false alarm. Far nodes still fall back on their own evidence after
``FAR_PERIODS`` periods in case no verdict can reach them.

News that a building is back travels as fast as its verdict did: a node that learns that a
building named silent, or out of reach, is alive sends its next heartbeat early (a node that
sees a neighbour still marking silent a building it knows is back does the same), so the
return crosses the block in an early heartbeat's wait a hop, not a heartbeat interval a hop.

Lost heartbeats are made good by asking rather than by sending more often: a
node whose neighbour has been quiet for 0.6 of the period *polls* (sends its next
heartbeat early, showing the neighbour's age), and a node that sees in a
neighbour's heartbeat that it was missed answers with an early heartbeat. Both
wait a random span of many airtimes first, so neighbours hidden from each other
that answer the same cue do not collide. With polls, 2.5 heartbeats per period
keep false TROUBLE under 1 per node-week at 10% loss (tests/bench/supervision.py).

The period is the configured one unless the preset is too slow for it
(``effective_period``): the block then stretches it, the same on every node, so
that heartbeats stay within the airtime budget and leave the channel to alerts.

One byte per roster node rides in each heartbeat, so supervision covers the
first ``MAX_NODES`` nodes of a roster.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from node.protocol import wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air

AGE_UNIT = 4.0           # seconds per step of the 6-bit age, at least; longer on slow presets (age_unit)
AGE_MAX = 63             # "no fresh evidence" (63 units: beyond the supervision period, whatever it is)
SILENT_MARK = 62         # "a neighbour of it called it silent": passes a verdict on to nodes that missed it
AGE_AIRTIMES = 10        # on slow presets an age unit is this many heartbeats' airtime (LONG_FAST: 13 s)
MAX_NODES = 33           # one byte per node keeps the heartbeat (with its block time) within 120 bytes
MIN_INTERVAL = 30.0      # seconds: the shortest heartbeat interval, however few neighbours a node has
TRANSIT = 1.0            # seconds a heartbeat may take on air and through the radio; counted as age
BEATS_PER_PERIOD = 2.5   # heartbeats per period, at least: with polls (below) enough for under 1 false TROUBLE a week
MAX_BEATS_PER_PERIOD = 6  # and at most this many, however few neighbours a node has
REFERENCE_NEIGHBOURS = 8  # the neighbourhood the period is sized for when the preset is slow
VERDICT_LEAD = 10.0      # seconds before the period that a verdict falls due: its random wait (8 s) and flood
POLL_FROM = 0.6          # share of the period a neighbour may be quiet before this node asks after it
POLLS = 12               # at most this many polls, and answers to them, per period
EARLY_WINDOW = 25        # heartbeats' airtimes: an early heartbeat waits a random 1 s to this many after its cue
FAR_PERIODS = 3          # periods without news before a far node calls a building silent on its own evidence
# How many periods of silence make a neighbour silent while this node's own radio has reported the
# channel degraded (``channel_busy``) within the last period. On a channel that busy, frames are lost
# to collisions and queues, and a silence of one period is no evidence: with LONG_FAST alerts a
# minute apart (P3's loop, seed 4: the busiest node's channel 95% busy over the alerts) healthy
# buildings, heard by their other neighbours, were named silent 13 times in 30 alert states.
# The degraded channel is itself a TROUBLE (MESH DEGRADED), as a fire panel reports a faulty loop.
BUSY_PERIODS = 2

# A node's own troubles, as 2 bits that travel in every heartbeat: its radio, or anything else.
TROUBLE_BITS = {"radio": 1, "storage": 2, "roster": 2, "speaker": 2, "mesh": 2, "hardware": 2}


def trouble_bits(subsystems: Iterable[str]) -> int:
    """The 2-bit summary of a node's TROUBLE subsystems (``radio-firmware`` counts as radio)."""
    bits = 0
    for name in subsystems:
        bits |= TROUBLE_BITS.get(name.split("-")[0], 0)
    return bits


# The 16-bit trouble mask of a heartbeat's header: the 4 shared bits, then more detail.
_MASK_BITS = {"radio": 4, "storage": 8, "roster": 16, "speaker": 32, "mesh": 64, "radio-firmware": 128,
              "radio-channel": 256, "radio-mqtt": 512, "radio-region": 1024, "hardware": 2048, "wiped": 4096}


def trouble_mask(subsystems: Iterable[str]) -> int:
    """The heartbeat header's 16-bit mask of this node's TROUBLE subsystems."""
    mask = 0
    for name in subsystems:
        mask |= _MASK_BITS.get(name, 0) | trouble_bits([name])
    return mask


def trouble_bits_from_mask(mask: int) -> int:
    return mask & 0x03


def trouble_names(mask: int) -> list[str]:
    """The subsystems named by a heartbeat header's trouble mask."""
    return [name for name, bit in _MASK_BITS.items() if mask & bit]


def heartbeat_airtime(preset: str, members: int = MAX_NODES) -> float:
    """Seconds on air of a heartbeat with an age vector for ``members`` nodes, on ``preset``."""
    return time_on_air(wire.frame_size(wire.FrameType.HEARTBEAT, min(members, wire.MAX_VECTOR)) + MESH_OVERHEAD, preset)


def age_unit(preset: str) -> float:
    """Seconds per step of the 6-bit age on ``preset``: 4 s, or ten heartbeats' airtime if longer.

    It follows the preset alone, which every node of a block shares (they could not hear each
    other otherwise), so every node reads a neighbour's ages in the unit they were written in;
    61 units span 1.3 times the period a slow preset stretches to.
    """
    return max(AGE_UNIT, AGE_AIRTIMES * heartbeat_airtime(preset))


def effective_period(configured: float, preset: str, budget: float) -> float:
    """The supervision period the block runs: ``configured``, or longer when the preset is too slow for it.

    At least ``BEATS_PER_PERIOD`` heartbeats must fit in a period, and a node with
    ``REFERENCE_NEIGHBOURS`` neighbours must hear them all within ``budget`` of the channel.
    MEDIUM_FAST and faster keep the default 180 s; on LONG_FAST a heartbeat (33 nodes) takes
    1.3 s on air, and the period grows to about ten minutes rather than let heartbeats crowd
    out the alerts. It depends only on settings every node shares (not on how many
    neighbours a node hears), so the whole block judges with the same period.
    """
    needed = BEATS_PER_PERIOD * (REFERENCE_NEIGHBOURS + 1) * heartbeat_airtime(preset) / budget
    return max(configured, math.ceil(needed / 10.0) * 10.0)


def heartbeat_interval(airtime: float, *, neighbours: int = 8, budget: float = 0.05, period: float = 180.0) -> float:
    """Seconds between heartbeats: what keeps the heartbeats a node hears (its own and its
    ``neighbours``', of ``airtime`` seconds each) within ``budget`` of the channel, but at
    least ``BEATS_PER_PERIOD`` per supervision period, and at most one each MIN_INTERVAL seconds
    and ``MAX_BEATS_PER_PERIOD`` per period: a node with one neighbour would otherwise fill the
    channel of that neighbour, which may hear a dozen others.
    """
    wanted = (neighbours + 1) * airtime / budget
    return max(MIN_INTERVAL, period / MAX_BEATS_PER_PERIOD, min(wanted, period / BEATS_PER_PERIOD))


def early_delay(airtime: float, rng) -> float:
    """Seconds to wait before a heartbeat sent early (a poll, or the answer to one).

    Every neighbour that a node missed answers the same cue, and neighbours that heard a
    building's last heartbeat together start asking after it together; those hidden from
    each other would collide every time if they all went within a second or two, so the
    wait spans many heartbeats' airtimes.
    """
    return rng.uniform(1.0, 1.0 + EARLY_WINDOW * airtime)


class Supervisor:
    """One node's view of the block's liveness. ``members`` is the roster's node ids, in order."""

    def __init__(self, me: int, members: Sequence[int], *, period: float, now: float, unit: float = AGE_UNIT):
        self.me = me
        self.members = list(members)[:MAX_NODES]
        self.index = {m: i for i, m in enumerate(self.members)}
        self.period = period
        self.unit = unit   # seconds per age step: the same on every node (``age_unit``)
        self.started = now
        self.evidence: dict[int, float] = {}   # node -> newest time known alive
        self.troubles: dict[int, int] = {}     # node -> its trouble bits, as of that evidence
        self.neighbours: set[int] = set()      # nodes heard first-hand
        self.verdicts: dict[int, float] = {}   # node -> last time alive, per a SILENT verdict
        self.via: dict[int, int] = {}          # node -> the neighbour its freshest news came through (itself: heard)
        self.revived: dict[int, float] = {}    # node -> when it was first heard of again after a SILENT verdict
        self.receipts: dict[int, float] = {}   # neighbour -> when its newest fresh receipt was signed (``receipt``)
        self.busy_until = -math.inf            # until when a silence must last BUSY_PERIODS (``channel_busy``)
        # Since when this node's own radio has been up (None: down). A node boots listening.
        self.listening_since: float | None = now

    def heard(self, node: int, now: float, troubles: int | None = None) -> bool:
        """First-hand evidence: a fresh heartbeat signed by ``node`` at ``now`` (this node's clock; the
        daemon converts the heartbeat's block time, ``node.protocol.clock``) was received from it.
        True if a verdict had named it silent: it is back (``merge``)."""
        if node not in self.index or node == self.me:
            return False
        self.neighbours.add(node)
        back = self._revive(node, now, now)
        if now >= self.evidence.get(node, -math.inf):
            self.evidence[node] = now
            self.via[node] = node
            if troubles is not None:
                self.troubles[node] = troubles
        return back

    def receipt(self, node: int, signed: float) -> None:
        """A fresh receipt signed by neighbour ``node`` at ``signed`` (this node's clock) was received
        from it: it was alive then, and is not to be judged silent for a period from then.

        Only that: the receipt is not news for the age vectors, the polls or a return after a
        verdict, which heartbeats carry. Counted as news everywhere, receipts stood in for the
        heartbeats lost among them, so the polls those losses drew stopped, with the early
        heartbeats that carried far buildings' ages; P10 (the block, seed 1) then showed a healthy
        far building silent for about a minute after the return, its news ten minutes old at a far leaf.
        """
        if node in self.neighbours and signed > self.receipts.get(node, -math.inf):
            self.receipts[node] = signed

    def channel_busy(self, now: float) -> None:
        """This node's radio reports the channel degraded: for a period from ``now``, a neighbour is
        silent only after BUSY_PERIODS periods without news of it."""
        self.busy_until = now + self.period

    def silence_limit(self, now: float) -> float:
        """Seconds without news after which a neighbour is silent: the period, or BUSY_PERIODS of them
        while the channel is (or was, within a period) degraded."""
        return self.period * (BUSY_PERIODS if now < self.busy_until else 1)

    def _last_heard(self, node: int) -> float:
        """The newest first-hand or gossiped sign that ``node`` was alive, receipts included (-inf: none)."""
        return max(self.evidence.get(node, -math.inf), self.receipts.get(node, -math.inf))

    def merge(self, vector: bytes, now: float, via: int | None = None) -> tuple[set[int], set[int]]:
        """Fold in the age vector (same roster order) of neighbour ``via``, signed at ``now`` on this
        node's clock: its ages count from when it was signed, not from when it arrived.

        Returns the buildings a verdict had named silent that this news shows alive since, and those
        shown out of reach (``through``) of which it is the first news since: the daemon passes
        that on at once (an early heartbeat), so a building's return crosses the block in seconds,
        as its verdict did, not a heartbeat interval a hop.
        """
        back, reached = set(), set()
        for i, byte in enumerate(vector[:len(self.members)]):
            units = byte >> 2
            if units >= AGE_MAX:
                continue
            node = self.members[i]
            if units == SILENT_MARK:
                # A verdict this node may have missed: take it if its own news is no newer.
                if node != self.me and now - self.evidence.get(node, -math.inf) > self.period / 2:
                    self.verdict(node, min(self.evidence.get(node, now - self.period), now - self.period))
                continue
            when = now - units * self.unit - TRANSIT  # the heartbeat took time to arrive: never newer
            old = self.evidence.get(node, -math.inf)
            if when > old:
                if self._revive(node, when, now):
                    back.add(node)
                elif (now - old > self.period and node not in self.neighbours
                      and self.status(node, now) == "unreachable"):
                    reached.add(node)
                self.evidence[node] = when
                self.troubles[node] = byte & 0x03
                if via is not None:
                    self.via[node] = via
        return back, reached

    def _revive(self, node: int, alive: float, at: float) -> bool:
        """News that ``node`` was alive at ``alive`` came at ``at``: if a verdict had named it silent,
        remember when it came back (``through``), and say so."""
        if self._named_silent(node) and alive > self.verdicts[node] + self.unit:
            self.revived[node] = at
            return True
        return False

    def missed_return(self, vector: bytes, now: float) -> bool:
        """Whether a neighbour's vector (signed at ``now``) still marks silent a building this node has
        news of from the last half period: it missed that building's return, and an early heartbeat
        from this node tells it (the news of a return, like a verdict, should not wait an interval)."""
        for i, byte in enumerate(vector[:len(self.members)]):
            node = self.members[i]
            if (byte >> 2 == SILENT_MARK and node != self.me and not self._named_silent(node)
                    and now - self.evidence.get(node, -math.inf) <= self.period / 2):
                return True
        return False

    def stale_about_me(self, vector: bytes, interval: float) -> bool:
        """Whether a neighbour's vector shows it missed this node's recent heartbeats.

        A node that sees its own entry older than 1.3 heartbeat intervals in a neighbour's
        heartbeat (or older than ``POLL_FROM`` of the period, when that neighbour polls) sends
        its next one early: a lost heartbeat is made good in seconds, not left to age toward
        a false TROUBLE.
        """
        i = self.index.get(self.me)
        if i is None or i >= len(vector):
            return False
        units = vector[i] >> 2
        if units == SILENT_MARK:
            return True
        return units * self.unit > min(1.3 * interval + self.unit, POLL_FROM * self.period)

    def vector(self, now: float, own_troubles: int) -> bytes:
        """This node's age vector for its next heartbeat."""
        self.evidence[self.me] = now
        self.troubles[self.me] = own_troubles
        out = bytearray()
        for node in self.members:
            when = self.evidence.get(node)
            if when is None:
                out.append(AGE_MAX << 2)
                continue
            if node != self.me and self.verdicts.get(node, -math.inf) >= when - self.unit:
                out.append(SILENT_MARK << 2)
                continue
            units = math.ceil(max(0.0, now - when) / self.unit - 1e-9)
            if units >= SILENT_MARK:
                out.append(AGE_MAX << 2)  # older than an age can say: no news (never rounded down)
                continue
            out.append(units << 2 | (self.troubles.get(node, 0) & 0x03))
        return bytes(out)

    def wants_poll(self, now: float) -> bool:
        """Whether a neighbour has been quiet for over ``POLL_FROM`` of the period (but not yet the period).

        Before calling a neighbour silent, a node asks: its next heartbeat goes early, showing the
        neighbour's age, and a live neighbour that sees itself missed answers with an early heartbeat
        of its own (``stale_about_me``). A node whose only news of a building is that building's own
        heartbeats (a leaf, or a pair with no neighbour in common) is thus not left to chance.
        """
        for node in self.neighbours:
            if node == self.me or self.verdicts.get(node, -math.inf) >= self.evidence.get(node, -math.inf):
                continue
            if POLL_FROM * self.period < now - self.evidence.get(node, -math.inf) <= self.silence_limit(now):
                return True
        return False

    def age(self, node: int, now: float) -> float | None:
        when = self.evidence.get(node)
        return None if when is None else now - when

    def verdict(self, node: int, last_alive: float) -> None:
        """A SILENT verdict from a neighbour of ``node``: it was last known alive at ``last_alive``."""
        if node in self.index and node != self.me and last_alive > self.verdicts.get(node, -math.inf):
            self.verdicts[node] = last_alive

    def radio(self, up: bool, now: float) -> None:
        """This node's own radio is ``up`` (connected) or down, as of ``now``: a node without its
        radio hears nobody, so it must not take the silence for its neighbours'."""
        if not up:
            self.listening_since = None
        elif self.listening_since is None:
            self.listening_since = now

    def judging(self, now: float) -> bool:
        """Whether this node may judge its neighbours: its radio has been up for a whole period.

        Back from an outage, its news of every neighbour is as old as the outage, and a live
        neighbour may need most of a period to be heard (2.5 heartbeats a period, polls at 0.6 of
        it): judging sooner would condemn healthy buildings for this node's own deafness. At start
        the node is listening, and a period passes before any verdict, as it always did.
        """
        return self.listening_since is not None and now - self.listening_since >= self.period - VERDICT_LEAD

    def due_verdicts(self, now: float) -> list[tuple[int, float]]:
        """Neighbours silent for ``period`` (less ``VERDICT_LEAD``) that no verdict has named yet: (node, last alive).

        The lead is the random wait before a verdict and its flood: the block shows the building
        silent about ``period`` seconds after it went quiet, not ``period`` plus those. None while
        this node's own radio is down, and the silence counts only from when it came back.
        """
        if self.listening_since is None:
            return []
        out, limit = [], self.silence_limit(now)
        for node in sorted(self.neighbours):
            when = self._last_heard(node)
            if (node != self.me and now - max(when, self.listening_since) > limit - VERDICT_LEAD
                    and self.verdicts.get(node, -math.inf) < when):
                out.append((node, when))
        return out

    def _named_silent(self, node: int) -> bool:
        """A live neighbour of ``node`` said it is silent, and nothing newer has been heard of it."""
        named = self.verdicts.get(node)
        when = self.evidence.get(node)
        return named is not None and (when is None or when <= named + self.unit)

    def _carrier_down(self, node: int, now: float) -> int | None:
        """The neighbour that carried the freshest news of far ``node``, if it is silent (named, or
        stale past the period) and has not been heard since it carried that news; else None."""
        carrier, when = self.via.get(node), self.evidence.get(node)
        if carrier is None or when is None or carrier == node or carrier not in self.neighbours:
            return None
        if self._named_silent(carrier):
            return carrier if when <= self.verdicts[carrier] + self.unit else None
        last = self._last_heard(carrier)
        # stale, and not named yet: this node calls it silent within seconds (its verdict's random wait)
        return carrier if now - last > self.silence_limit(now) and when <= last + self.unit else None

    def through(self, node: int, now: float) -> int | None:
        """The building through which news of ``node`` stopped, or None while its news can flow.

        This node itself while its radio is down or freshly back; else the neighbour its freshest
        news came through, if that one is now silent and has not been heard since it carried it;
        else, once ``node``'s news is stale, the building judged silent soonest after that news
        (its news stopped no later than that building did, which stands between: the broken loop).
        Neighbours are judged by this node, not reached through anyone.
        """
        if not self.judging(now):
            return self.me
        if node in self.neighbours or node == self.me or node not in self.evidence:
            return None
        carrier = self._carrier_down(node, now)
        if carrier is not None:
            return carrier
        when = self.evidence[node]
        if now - when <= FAR_PERIODS * self.period:
            return None  # far news is slow (a heartbeat interval a hop): not stale yet
        # A building named silent and heard of again less than FAR_PERIODS ago still counts: the news of
        # those beyond it flows again a heartbeat a hop, and until it comes they are beyond it, not silent,
        # for as long as far news may take at any time (P10 seed 4: 14 healthy buildings shown silent for
        # up to 135 s after the middle node came back; with one period, 6 once its return spread fast).
        breaks = [(last, s) for s, last in self.verdicts.items()
                  if s != node and (self._named_silent(s)
                                    or now - self.revived.get(s, -math.inf) < FAR_PERIODS * self.period)
                  and last >= when - self.unit]
        return min(breaks)[1] if breaks else None

    def status(self, node: int, now: float) -> str:
        """``ok``, ``trouble`` (alive, with troubles of its own), ``silent`` (a live neighbour said so, or
        this node judged it), ``unreachable`` (its news stopped at a building between, or this node's own
        radio is down or freshly back: ``through``), or ``unknown`` (not heard since this node started)."""
        if node == self.me:
            return "trouble" if self.troubles.get(node) else "ok"
        if self._named_silent(node):
            return "silent"  # a neighbour said so, and nothing newer has been heard of it
        when = self.evidence.get(node)
        if node not in self.neighbours and self.judging(now) and self._carrier_down(node, now) is not None:
            return "unreachable"  # its news came through a building that is down: not its own silence
        if node in self.neighbours:
            limit, when = self.silence_limit(now), self._last_heard(node)   # a fresh receipt is first-hand too
        else:
            limit = FAR_PERIODS * self.period
        if when is not None and now - when <= limit:
            return "trouble" if self.troubles.get(node) else "ok"
        if when is None and now - self.started <= limit:
            return "unknown"
        if self.through(node, now) is not None:
            return "unreachable"
        return "silent"  # this node's own judgement, or far and no verdict could reach it

    def alive(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) in ("ok", "trouble")}

    def silent(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) == "silent"}

    def unreachable(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) == "unreachable"}
