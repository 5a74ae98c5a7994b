"""Counter, frame, bytes: the one place this node's frames are made.

Replay protection rests on per-origin counters (the clock cannot be trusted), so a
counter is reserved and committed to the store *before* its frame can be sent: a node
that restarts never signs two frames with one counter.

The page's user may write the database, so the counter there is not trusted alone: the
signer also keeps a floor in memory and, a block of ``FLOOR_STEP`` ahead, in
``<state_dir>/counter`` (the daemon's own folder). A counter set back in the database is
never used again; peers would drop those frames as replays.

It also keeps the block clock (``node.protocol.clock``) that heartbeats and verdicts
carry: ``stamp(now)`` reads it, and its floor and offset go to ``<state_dir>/clock``,
``CLOCK_STEP`` seconds ahead, so a restart never stamps a frame earlier than one before.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NamedTuple

from node.protocol import wire
from node.protocol.clock import BlockClock
from node.protocol.keys import Roster, SigningKey
from node.store import Store

log = logging.getLogger(__name__)

FLOOR_STEP = 64   # counters reserved on disk at a time: one write and fsync per 64 frames
CLOCK_STEP = 20.0  # seconds of block time reserved on disk at a time: about one write per heartbeat


class Signed(NamedTuple):
    """A frame this node signed, and the counter it took."""

    counter: int
    data: bytes    # the frame as it goes on air: at most wire.MAX_FRAME bytes, signed


class Signer:
    """This node's key over the store's counter. Callers hold the node's lock."""

    def __init__(self, me: int, store: Store, key: SigningKey, roster: Roster, *, floor_file: Path | None = None,
                 clock_file: Path | None = None, now: float = 0.0):
        self.me, self.store, self.key, self.roster = me, store, key, roster
        self._floor_file = floor_file
        self._reserved = self._read_floor()   # on disk: every counter this node may have taken is below it
        self._last = self._reserved           # the last counter this signer took (or its floor)
        self._clock_file = clock_file
        floor, offset = self._read_clock()
        self.clock = BlockClock.restored(floor, offset, now)
        self._clock_floor = floor              # on disk: every block time this node stamped is below it

    def reserve(self) -> int:
        """The next counter, committed (inside a caller's transaction it commits with that one)."""
        with self.store.transaction():
            counter = self.store.next_counter(at_least=self._last + 1)
        if counter != self._last + 1 and self._last:
            log.warning("the database's frame counter was %s; continuing from %d",
                        "set back" if counter <= self._last else "ahead", counter)
        self._last = counter
        if self._floor_file is not None and counter > self._reserved:
            self._write_floor(counter + FLOOR_STEP)
        return counter

    def stamp(self, now: float) -> int:
        """The block time for a heartbeat or verdict signed at ``now`` (seconds), its floor kept on disk."""
        stamp = self.clock.stamp(now)
        if self._clock_file is not None and stamp >= self._clock_floor:
            floor = stamp + CLOCK_STEP
            if _write_file(self._clock_file, f"{floor:.0f} {self.clock.offset:.3f}\n", "the block clock's floor"):
                self._clock_floor = floor
        return stamp

    def signed_at(self, stamp: int, now: float) -> float:
        """When a frame stamped at block time ``stamp`` was signed, on this node's clock; the
        block clock first rises to ``stamp`` if it is ahead. A recording converts to an old time."""
        self.clock.observe(stamp, now)
        return self.clock.to_local(stamp, now)

    def _read_clock(self) -> tuple[float, float]:
        """(floor, offset) of the block clock as last kept, or (0, 0)."""
        if self._clock_file is None:
            return 0.0, 0.0
        try:
            floor, offset = (float(v) for v in self._clock_file.read_text().split())
            return floor, offset
        except FileNotFoundError:
            return 0.0, 0.0
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s); the block clock starts from this node's clock", self._clock_file, exc)
            return 0.0, 0.0

    def _read_floor(self) -> int:
        if self._floor_file is None:
            return 0
        try:
            return int(self._floor_file.read_text().strip() or 0)
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s); the database's counter alone is used", self._floor_file, exc)
            return 0

    def _write_floor(self, value: int) -> None:
        # A full disk: the database's counter still holds, as before.
        if _write_file(self._floor_file, f"{value}\n", "the frame counter's floor"):
            self._reserved = value

    def encode(self, frame: wire.Frame) -> bytes:
        """``frame`` signed with this node's key, for this block."""
        return wire.encode(frame, self.key, self.roster.block)

    def sign(self, kind: type[wire.Frame], *fields) -> Signed:
        """Reserve a counter, and sign the frame ``kind(this node, counter, *fields)``."""
        counter = self.reserve()
        return Signed(counter, self.encode(kind(self.me, counter, *fields)))


def _write_file(path: Path, text: str, what: str) -> bool:
    """Replace ``path`` with ``text``, synced to disk; False (logged) if it could not."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, text.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.error("could not keep %s in %s: %s", what, path, exc)
        return False
