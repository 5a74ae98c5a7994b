"""Supervision: which buildings are alive, learned from heartbeats gossiped between neighbours. Pure.

Every node sends a heartbeat to its direct neighbours only (hop limit 0), every
``interval`` seconds. The heartbeat carries the sender's *age vector*: for each
node on the roster, how long ago the sender last had first-hand or gossiped
evidence that the node was alive, in units of ``AGE_UNIT`` seconds (4 bits,
rounded up), together with that node's own trouble bits (4 bits). A node takes,
for each building, the freshest evidence from anyone. Ages are rounded *up*
before they are sent, so gossip can make evidence look older but never newer:
a dead node cannot be kept alive by its neighbours repeating each other.

A building whose freshest evidence is older than ``period`` seconds is SILENT.
Since every node's evidence of it only ages after it stops, every node shows it
silent at most ``period`` seconds after its last heartbeat, wherever it is.

One byte per roster node rides in each heartbeat, so supervision covers the
first ``MAX_NODES`` nodes of a roster.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

AGE_UNIT = 12.0          # seconds per step of the 4-bit age
AGE_MAX = 15             # "no fresh evidence" (15 * 12 s = 180 s)
MAX_NODES = 36           # one byte per node keeps the heartbeat within 120 bytes

# A node's own troubles, as 4 bits that travel in every heartbeat.
TROUBLE_BITS = {"radio": 1, "storage": 2, "roster": 4, "speaker": 8}


def trouble_bits(subsystems: Iterable[str]) -> int:
    """The 4-bit summary of a node's TROUBLE subsystems (``radio-firmware`` counts as radio)."""
    bits = 0
    for name in subsystems:
        bits |= TROUBLE_BITS.get(name.split("-")[0], 0)
    return bits


# The 16-bit trouble mask of a heartbeat's header: the 4 shared bits, then more detail.
_MASK_BITS = {"radio": 1, "storage": 2, "roster": 4, "speaker": 8, "mesh": 16, "radio-firmware": 32,
              "radio-channel": 64, "radio-mqtt": 128, "radio-region": 256, "hardware": 512}


def trouble_mask(subsystems: Iterable[str]) -> int:
    """The heartbeat header's 16-bit mask of this node's TROUBLE subsystems."""
    mask = 0
    for name in subsystems:
        mask |= _MASK_BITS.get(name, 0) | trouble_bits([name])
    return mask


def trouble_bits_from_mask(mask: int) -> int:
    return mask & 0x0F


def trouble_names(bits: int) -> list[str]:
    return [name for name, bit in TROUBLE_BITS.items() if bits & bit]


def heartbeat_interval(airtime: float, *, neighbours: int = 8, budget: float = 0.05, period: float = 180.0) -> float:
    """Seconds between heartbeats: the budget share of the channel that ``neighbours``
    heartbeats of ``airtime`` seconds each may use, but at least 3 per supervision period.
    """
    wanted = (neighbours + 1) * airtime / budget
    return max(20.0, min(wanted, period / 3.0))


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

    def heard(self, node: int, now: float, troubles: int | None = None) -> None:
        """First-hand evidence: a frame signed by ``node`` was just received."""
        if node not in self.index:
            return
        if now >= self.evidence.get(node, -math.inf):
            self.evidence[node] = now
            if troubles is not None:
                self.troubles[node] = troubles

    def merge(self, vector: bytes, now: float) -> None:
        """Fold in a neighbour's age vector (same roster order)."""
        for i, byte in enumerate(vector[:len(self.members)]):
            units = byte >> 4
            if units >= AGE_MAX:
                continue
            node = self.members[i]
            when = now - units * AGE_UNIT
            if when > self.evidence.get(node, -math.inf):
                self.evidence[node] = when
                self.troubles[node] = byte & 0x0F

    def vector(self, now: float, own_troubles: int) -> bytes:
        """This node's age vector for its next heartbeat."""
        self.evidence[self.me] = now
        self.troubles[self.me] = own_troubles
        out = bytearray()
        for node in self.members:
            when = self.evidence.get(node)
            if when is None:
                out.append(AGE_MAX << 4)
                continue
            units = min(AGE_MAX, math.ceil(max(0.0, now - when) / AGE_UNIT - 1e-9))
            out.append(units << 4 | (self.troubles.get(node, 0) & 0x0F))
        return bytes(out)

    def age(self, node: int, now: float) -> float | None:
        when = self.evidence.get(node)
        return None if when is None else now - when

    def status(self, node: int, now: float) -> str:
        """``ok``, ``trouble`` (alive, with troubles of its own), ``silent``, or ``unknown`` (just started)."""
        if node == self.me:
            return "trouble" if self.troubles.get(node) else "ok"
        when = self.evidence.get(node)
        if when is None or now - when > self.period:
            return "silent" if now - self.started > self.period else "unknown"
        return "trouble" if self.troubles.get(node) else "ok"

    def alive(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) in ("ok", "trouble")}

    def silent(self, now: float) -> set[int]:
        return {m for m in self.members if self.status(m, now) == "silent"}
