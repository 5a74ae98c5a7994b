"""The binary frame codec: pure, bytes in, a frame or ``FrameError`` out.

Every frame is signed by its origin node's Ed25519 key. All integers are big-endian.

Header (8 bytes)::

    offset size field
    0      1    version   = 1
    1      1    type      1 transition, 2 receipt, 3 heartbeat
    2      2    origin    node id of the signer (from the roster)
    4      4    counter   the origin's monotonic frame counter, persisted before sending

Body, by type::

    transition (10 bytes)              receipt (8 bytes)          heartbeat (6 bytes)
    0  2 alert_reporter                0 2 alert_reporter         0 2 troubles (bit mask)
    2  4 alert_counter                 2 4 alert_counter          2 1 active alerts
    6  1 kind  (1 raid, 2 test)        6 1 state                  3 1 latest state (0 none)
    7  1 state (1 reported,            7 1 flags (bit 0: sounded) 4 2 uptime, minutes (saturating)
             2 confirmed, 3 all clear,
             4 cancelled)
    8  2 location code

Signature (64 bytes): Ed25519 over ``b"silbato/1\\0" + block + b"\\0" + header + body``,
where ``block`` is the roster's block name. The block name is not sent; it keeps a
frame from one block from being accepted on another.

Sizes: transition 82 bytes, receipt 80, heartbeat 78. ``MAX_FRAME`` is 120.

The alert id is ``"<alert_reporter>-<alert_counter>"``: the counter of the frame that
first reported it. Places travel as location codes; names stay in each node's roster.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Callable, Union

from node.alerts import Kind, State, Transition, alert_id
from node.errors import FrameError
from node.keys import Roster, SigningKey

VERSION = 1
MAX_FRAME = 120
SIGNATURE_SIZE = 64
_HEADER = struct.Struct(">BBHI")
_BODIES = {1: struct.Struct(">HIBBH"), 2: struct.Struct(">HIBB"), 3: struct.Struct(">HBBH")}


class FrameType(enum.IntEnum):
    TRANSITION = 1
    RECEIPT = 2
    HEARTBEAT = 3


FRAME_SIZES = {t: _HEADER.size + _BODIES[t].size + SIGNATURE_SIZE for t in FrameType}
MIN_FRAME = min(FRAME_SIZES.values())


@dataclass(frozen=True)
class TransitionFrame:
    origin: int
    counter: int
    alert_reporter: int
    alert_counter: int
    kind: Kind
    state: State
    location: int

    type = FrameType.TRANSITION

    @property
    def alert_id(self) -> str:
        return alert_id(self.alert_reporter, self.alert_counter)

    def transition(self) -> Transition:
        return Transition(self.alert_id, self.kind, self.location, self.alert_reporter, self.state, self.origin)

    def _body(self) -> tuple:
        return (self.alert_reporter, self.alert_counter, int(self.kind), int(self.state), self.location)


@dataclass(frozen=True)
class ReceiptFrame:
    origin: int
    counter: int
    alert_reporter: int
    alert_counter: int
    state: State
    sounded: bool

    type = FrameType.RECEIPT

    @property
    def alert_id(self) -> str:
        return alert_id(self.alert_reporter, self.alert_counter)

    def _body(self) -> tuple:
        return (self.alert_reporter, self.alert_counter, int(self.state), 1 if self.sounded else 0)


@dataclass(frozen=True)
class HeartbeatFrame:
    origin: int
    counter: int
    troubles: int
    active: int
    latest_state: int  # a State value, or 0 for none
    uptime_minutes: int

    type = FrameType.HEARTBEAT

    def _body(self) -> tuple:
        return (self.troubles, self.active, self.latest_state, min(self.uptime_minutes, 0xFFFF))


Frame = Union[TransitionFrame, ReceiptFrame, HeartbeatFrame]
_WIRE_STATES = {s.value for s in (State.REPORTED, State.CONFIRMED, State.ALL_CLEAR, State.CANCELLED)}


def _signed_part(block: str, unsigned: bytes) -> bytes:
    return b"silbato/1\0" + block.encode("utf-8") + b"\0" + unsigned


def encode(frame: Frame, key: SigningKey, block: str) -> bytes:
    """Serialise and sign ``frame`` with the origin's key for roster block ``block``."""
    unsigned = _HEADER.pack(VERSION, int(frame.type), frame.origin, frame.counter) + _BODIES[frame.type].pack(*frame._body())
    return unsigned + key.sign(_signed_part(block, unsigned))


def peek_origin(data: bytes) -> tuple[int, int] | None:
    """(origin, counter) from a frame's header without verifying it: for log lines only."""
    if len(data) < _HEADER.size:
        return None
    _, _, origin, counter = _HEADER.unpack_from(data)
    return origin, counter


def decode(data: object, roster: Roster, seen: Callable[[int, int], bool] | None = None) -> Frame:
    """Verify and parse one frame. Raises ``FrameError`` with a reason, and nothing else.

    ``seen(origin, counter)`` says whether that counter was already accepted from
    that origin (the replay check); the caller records accepted counters.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FrameError("not-bytes", type(data).__name__)
    data = bytes(data)
    if len(data) > MAX_FRAME:
        raise FrameError("oversized", f"{len(data)} bytes > {MAX_FRAME}")
    if len(data) < MIN_FRAME:
        raise FrameError("truncated", f"{len(data)} bytes")
    version, ftype, origin, counter = _HEADER.unpack_from(data)
    if version != VERSION:
        raise FrameError("unknown-version", str(version))
    if ftype not in _BODIES:
        raise FrameError("unknown-type", str(ftype))
    expected = FRAME_SIZES[FrameType(ftype)]
    if len(data) != expected:
        raise FrameError("truncated" if len(data) < expected else "oversized",
                         f"{FrameType(ftype).name.lower()} is {expected} bytes, got {len(data)}")
    member = roster.member(origin)
    if member is None:
        raise FrameError("unknown-key", f"origin {origin} is not on roster v{roster.version}")
    if member.revoked:
        raise FrameError("revoked-key", f"origin {origin} ({member.name}) is revoked")
    unsigned, signature = data[:-SIGNATURE_SIZE], data[-SIGNATURE_SIZE:]
    if not member.verify(signature, _signed_part(roster.block, unsigned)):
        raise FrameError("bad-signature", f"origin {origin}")
    if counter == 0:
        raise FrameError("bad-counter", "counter 0 is never sent")
    fields = _BODIES[ftype].unpack_from(data, _HEADER.size)
    frame = _build(FrameType(ftype), origin, counter, fields, roster)
    if seen is not None and seen(origin, counter):
        raise FrameError("replayed", f"origin {origin} counter {counter}")
    return frame


def _build(ftype: FrameType, origin: int, counter: int, fields: tuple, roster: Roster) -> Frame:
    if ftype is FrameType.TRANSITION:
        reporter, acounter, kind, state, location = fields
        _check_alert(reporter, acounter, roster)
        if kind not in (Kind.RAID, Kind.TEST):
            raise FrameError("bad-field", f"kind {kind}")
        if state not in _WIRE_STATES:
            raise FrameError("bad-field", f"state {state}")
        if location not in roster.by_location:
            raise FrameError("bad-field", f"location {location} is not on the roster")
        return TransitionFrame(origin, counter, reporter, acounter, Kind(kind), State(state), location)
    if ftype is FrameType.RECEIPT:
        reporter, acounter, state, flags = fields
        _check_alert(reporter, acounter, roster)
        if state not in _WIRE_STATES:
            raise FrameError("bad-field", f"state {state}")
        if flags & ~1:
            raise FrameError("bad-field", f"receipt flags {flags:#x}")
        return ReceiptFrame(origin, counter, reporter, acounter, State(state), bool(flags & 1))
    troubles, active, latest, uptime = fields
    if latest not in _WIRE_STATES | {0, State.EXPIRED.value}:
        raise FrameError("bad-field", f"state {latest}")
    return HeartbeatFrame(origin, counter, troubles, active, latest, uptime)


def _check_alert(reporter: int, acounter: int, roster: Roster) -> None:
    if reporter not in roster or acounter == 0:
        raise FrameError("bad-field", f"alert {reporter}-{acounter} has no rostered reporter")
