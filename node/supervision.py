"""Supervision: which buildings are alive, learned from heartbeats gossiped between neighbours. Pure.

Every node sends a heartbeat to its direct neighbours only (hop limit 0), every
``interval`` seconds. The heartbeat carries the sender's *age vector*: for each
node on the roster, how long ago the sender last had first-hand or gossiped
evidence that the node was alive, in units of ``AGE_UNIT`` seconds (6 bits,
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
A building is thus shown silent everywhere about ``period`` seconds after its
last heartbeat, plus a flood's few seconds, while a far node's slow gossip never
raises a false alarm. Far nodes still fall back on their own evidence after
``3 * period`` in case no verdict can reach them.

One byte per roster node rides in each heartbeat, so supervision covers the
first ``MAX_NODES`` nodes of a roster.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

AGE_UNIT = 4.0           # seconds per step of the 6-bit age: each gossip hop adds at most this
AGE_MAX = 63             # "no fresh evidence" (63 * 4 s = 252 s, beyond any supervision period)
SILENT_MARK = 62         # "a neighbour of it called it silent": passes a verdict on to nodes that missed it
MAX_NODES = 36           # one byte per node keeps the heartbeat within 120 bytes
MIN_INTERVAL = 30.0      # seconds: the shortest heartbeat interval, however few neighbours a node has
TRANSIT = 1.0            # seconds a heartbeat may take on air and through the radio; counted as age

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


def heartbeat_interval(airtime: float, *, neighbours: int = 8, budget: float = 0.05, period: float = 180.0) -> float:
    """Seconds between heartbeats: what keeps the heartbeats a node hears (its own and its
    ``neighbours``', of ``airtime`` seconds each) within ``budget`` of the channel, but at
    least 3.8 per supervision period, and at most one each MIN_INTERVAL seconds.
    """
    wanted = (neighbours + 1) * airtime / budget
    return max(MIN_INTERVAL, min(wanted, period / 3.8))


class Supervisor:
    """One node's view of the block's liveness. ``members`` is the roster's node ids, in order."""

    def __init__(self, me: int, members: Sequence[int], *, period: float, now: float):
        self.me = me
        self.members = list(members)[:MAX_NODES]
        self.index = {m: i for i, m in enumerate(self.members)}
        self.period = period
        self.started = now
        self.evidence: dict[int, float] = {}   # node -> newest time known alive
        self.troubles: dict[int, int] = {}     # node -> its trouble bits, as of that evidence
        self.neighbours: set[int] = set()      # nodes heard first-hand
        self.verdicts: dict[int, float] = {}   # node -> last time alive, per a SILENT verdict

    def heard(self, node: int, now: float, troubles: int | None = None) -> None:
        """First-hand evidence: a frame signed by ``node`` was just received."""
        if node not in self.index:
            return
        self.neighbours.add(node)
        if now >= self.evidence.get(node, -math.inf):
            self.evidence[node] = now
            if troubles is not None:
                self.troubles[node] = troubles

    def merge(self, vector: bytes, now: float) -> None:
        """Fold in a neighbour's age vector (same roster order)."""
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
            when = now - units * AGE_UNIT - TRANSIT  # the heartbeat took time to arrive: never newer
            if when > self.evidence.get(node, -math.inf):
                self.evidence[node] = when
                self.troubles[node] = byte & 0x03

    def stale_about_me(self, vector: bytes, interval: float) -> bool:
        """Whether a neighbour's vector shows it missed this node's recent heartbeats.

        A node that sees its own entry older than 1.3 heartbeat intervals in a neighbour's
        heartbeat sends its next one early: a lost heartbeat is made good in seconds, not
        left to age toward a false TROUBLE.
        """
        i = self.index.get(self.me)
        if i is None or i >= len(vector):
            return False
        return (vector[i] >> 2) * AGE_UNIT > 1.3 * interval + AGE_UNIT

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
            if node != self.me and self.verdicts.get(node, -math.inf) >= when - AGE_UNIT:
                out.append(SILENT_MARK << 2)
                continue
            units = math.ceil(max(0.0, now - when) / AGE_UNIT - 1e-9)
            if units >= SILENT_MARK:
                out.append(AGE_MAX << 2)  # older than an age can say: no news (never rounded down)
                continue
            out.append(units << 2 | (self.troubles.get(node, 0) & 0x03))
        return bytes(out)

    def age(self, node: int, now: float) -> float | None:
        when = self.evidence.get(node)
        return None if when is None else now - when

    def verdict(self, node: int, last_alive: float) -> None:
        """A SILENT verdict from a neighbour of ``node``: it was last known alive at ``last_alive``."""
        if node in self.index and node != self.me and last_alive > self.verdicts.get(node, -math.inf):
            self.verdicts[node] = last_alive

    def due_verdicts(self, now: float) -> list[tuple[int, float]]:
        """Neighbours silent for ``period`` that no verdict has named yet: (node, last alive)."""
        out = []
        for node in sorted(self.neighbours):
            when = self.evidence.get(node, -math.inf)
            if node != self.me and now - when > self.period and self.verdicts.get(node, -math.inf) < when:
                out.append((node, when))
        return out

    def status(self, node: int, now: float) -> str:
        """``ok``, ``trouble`` (alive, with troubles of its own), ``silent``, or ``unknown`` (just started)."""
        if node == self.me:
            return "trouble" if self.troubles.get(node) else "ok"
        when = self.evidence.get(node)
        named = self.verdicts.get(node)
        if named is not None and (when is None or when <= named + AGE_UNIT):
            return "silent"  # a neighbour said so, and nothing newer has been heard of it
        limit = self.period if node in self.neighbours else 3 * self.period
        if when is None or now - when > limit:
            return "silent" if now - self.started > limit else "unknown"
        return "trouble" if self.troubles.get(node) else "ok"

    def alive(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) in ("ok", "trouble")}

    def silent(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) == "silent"}
