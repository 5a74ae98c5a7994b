"""Coverage: which buildings received each alert state, and which sounded it. Pure.

A receipt is a node's whole knowledge of one alert state: bitmaps, in roster
order, of the buildings known to have received it and to have sounded it.
Knowledge only grows, so receipts merge by union and every node converges on
the same view, whichever receipts it happened to hear. Receipts go to direct
neighbours only; a node passes on what it learned in its next receipt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence


def to_bitmap(nodes: Iterable[int], members: Sequence[int]) -> bytes:
    index = {m: i for i, m in enumerate(members)}
    out = bytearray((len(members) + 7) // 8)
    for node in nodes:
        if node in index:
            i = index[node]
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


def from_bitmap(bitmap: bytes, members: Sequence[int]) -> set[int]:
    return {m for i, m in enumerate(members) if i // 8 < len(bitmap) and bitmap[i // 8] >> (i % 8) & 1}


@dataclass
class View:
    """What one node knows of one alert state's reach."""

    state: str
    received: set[int] = field(default_factory=set)
    sounded: set[int] = field(default_factory=set)

    def missing(self, expected: Iterable[int]) -> list[int]:
        return sorted(set(expected) - self.received)

    def summary(self, total: int, missing_names: Sequence[str]) -> str:
        """For example ``CONFIRMED: 27 of 30 buildings received, 26 sounded; missing: B7, B19, C3``."""
        text = (f"{self.state.replace('_', ' ').upper()}: {len(self.received)} of {total} buildings received, "
                f"{len(self.sounded)} sounded")
        return text + (f"; missing: {', '.join(missing_names)}" if missing_names else "")


def describe(state: str, received: Iterable[int], sounded: Iterable[int], names: dict[int, str], *,
             late: bool) -> dict:
    """The view the page, the API and the daemon show: the roster's size, the names of buildings
    without a receipt (only once ``late``, after the receipt timeout), and one sentence."""
    view = View(state, set(received), set(sounded))
    missing = [names[m] for m in view.missing(names)] if late else []
    return {"of": len(names), "missing": missing, "summary": view.summary(len(names), missing)}
