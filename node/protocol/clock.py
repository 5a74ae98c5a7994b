"""The block clock: a time every node agrees on closely enough to tell a fresh frame from a recording. Pure.

Counters stop a frame being taken twice by a node that heard it, but heartbeats and
receipts go to direct neighbours only, so a node two hops away never saw their
counters; and a heartbeat's ages are relative to when it was signed. So every heartbeat,
receipt and SILENT verdict carries its signer's block time ``C`` (whole seconds, 4 bytes)::

    C = local + offset

where ``local`` is the node's own clock. A node that hears a verified frame with a
larger ``C`` raises its offset to match (the max rule of a Lamport clock): every clock
converges on the fastest, and none ever goes back, even when the local clock is set
back. A frame signed at block time ``T`` was signed at local time ``T - offset`` (never
later than now): a recording converts to an old local time, and so is never news.

Liveness is kept in local time, so raising the offset never ages what a node knows.
The daemon keeps a floor of ``C`` and the offset on disk (``node.daemon.signer``), so a
restart never sends a smaller ``C`` than before.
"""

from __future__ import annotations

MAX_STAMP = 0xFFFFFFFF   # 4 bytes of seconds
# Frames that go to direct neighbours only (heartbeats, receipts) signed more than this many
# seconds before they are heard are recordings played back (or held up far too long): old news.
FRESH = 60.0


class BlockClock:
    """``C = local + offset`` seconds; the offset only rises. ``local`` is the node's clock, passed in."""

    def __init__(self, offset: float = 0.0, *, floor: float = 0.0):
        self.offset = offset
        self._last = floor   # C never goes below what this node last read or stamped

    @classmethod
    def restored(cls, floor: float, offset: float, local: float) -> "BlockClock":
        """After a restart: the saved ``offset``, raised so that ``C`` starts at ``floor`` or later."""
        return cls(max(offset, floor - local), floor=floor)

    def now(self, local: float) -> float:
        """This node's block time, seconds. A local clock set back raises the offset instead."""
        c = local + self.offset
        if c < self._last:
            self.offset += self._last - c
            c = self._last
        self._last = c
        return c

    def stamp(self, local: float) -> int:
        """The block time for a frame signed now: whole seconds, rounded down (so never ahead)."""
        return min(int(self.now(local)), MAX_STAMP)

    def observe(self, stamp: int, local: float) -> bool:
        """A verified frame signed at block time ``stamp``: raise this clock to it. True if it rose."""
        if stamp <= self.now(local):
            return False
        self.offset = stamp - local
        self._last = float(stamp)
        return True

    def to_local(self, stamp: int, local: float) -> float:
        """The local time at which block time ``stamp`` was (never later than ``local``)."""
        return min(local, stamp - self.offset)
