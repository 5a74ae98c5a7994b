"""Counter, frame, bytes: the one place this node's frames are made.

Replay protection rests on per-origin counters (the clock cannot be trusted), so a
counter is reserved and committed to the store *before* its frame can be sent: a node
that restarts never signs two frames with one counter.
"""

from __future__ import annotations

from typing import NamedTuple

from node.protocol import wire
from node.protocol.keys import Roster, SigningKey
from node.store import Store


class Signed(NamedTuple):
    """A frame this node signed, and the counter it took."""

    counter: int
    data: bytes    # the frame as it goes on air: at most wire.MAX_FRAME bytes, signed


class Signer:
    """This node's key over the store's counter. Callers hold the node's lock."""

    def __init__(self, me: int, store: Store, key: SigningKey, roster: Roster):
        self.me, self.store, self.key, self.roster = me, store, key, roster

    def reserve(self) -> int:
        """The next counter, committed (inside a caller's transaction it commits with that one)."""
        with self.store.transaction():
            return self.store.next_counter()

    def encode(self, frame: wire.Frame) -> bytes:
        """``frame`` signed with this node's key, for this block."""
        return wire.encode(frame, self.key, self.roster.block)

    def sign(self, kind: type[wire.Frame], *fields) -> Signed:
        """Reserve a counter, and sign the frame ``kind(this node, counter, *fields)``."""
        counter = self.reserve()
        return Signed(counter, self.encode(kind(self.me, counter, *fields)))
