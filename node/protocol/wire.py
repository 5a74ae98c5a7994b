"""The binary frame codec: pure, bytes in, a frame or ``FrameError`` out.

Every frame is signed by its origin node's Ed25519 key. All integers are big-endian.

Header (8 bytes)::

    offset size field
    0      1    version   = 2 (version 1 frames, without block times, are refused)
    1      1    type      1 transition, 2 receipt, 3 heartbeat, 4 silent, 5 nearby
    2      2    origin    node id of the signer (from the roster)
    4      4    counter   the origin's monotonic frame counter, persisted before sending

Body, by type::

    transition (10 bytes)            receipt (9 + 2k bytes)        heartbeat (15 + n bytes)
    0  2 alert_reporter              0   2 alert_reporter          0  2 troubles (bit mask)
    2  4 alert_counter               2   4 alert_counter           2  2 roster version
    6  1 kind: 1 raid, 2 test,       6   1 state                   4  2 latest alert reporter (0: none)
         3 silent self-test          7   2 roster version          6  4 latest alert counter
    7  1 state: 1 reported,          9   k received bitmap         10 1 latest alert state (0: none)
         2 confirmed, 3 all clear,   9+k k sounded bitmap          11 4 block time when signed (seconds)
         4 cancelled                                               15 n age vector, 1 byte per roster
    8  2 location code                                                   node: 6 high bits its age in
                                                                         4 s units, 2 low its troubles

A heartbeat that names an alert with state 0 says its sender lacks that alert and asks for
it (a receipt showed it exists); its neighbours that hold it pass it on.

A silent verdict (8 bytes): subject node id (2), seconds since it was last
known alive (2, saturating), block time when signed (4). Sent by a neighbour of the
subject, flooded. The block time (``node.protocol.clock``) lets a node that never saw
the signer's counters tell a fresh heartbeat or verdict from a recording.

A NEARBY (17 bytes): a state change of an alert on another block of the neighborhood,
signed by a bridge node of this block (``node.daemon.neighborhood``): the foreign block's
code (4, ``node.protocol.neighborhood.code``), the foreign alert's reporter (2) and counter
(4), its state (1), its location code on that block (2), block time when signed (4).
Codes only: names stay in the neighborhood roster and the foreign block's roster.

A receipt's bitmaps and a heartbeat's vector are in roster order, so they are
read only when the sender's roster version is the receiver's; k is 1 to 19 and
n is 0 to 33 (``node.protocol.coverage``, ``node.protocol.supervision``).

Signature (64 bytes): Ed25519 over ``b"silbato/1\\0" + block + b"\\0" + header + body``,
where ``block`` is the roster's block name. The block name is not sent; it keeps a
frame from one block from being accepted on another.

Sizes: transition 82 bytes; receipt 83 to 119 (89 for 30 nodes); heartbeat
87 to 120 (117 for 30 nodes); silent 80; nearby 89. ``MAX_FRAME`` is 120.

The alert id is ``"<alert_reporter>-<alert_counter>"``: the counter of the frame that
first reported it. Places travel as location codes; names stay in each node's roster.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Callable, Union

from node.protocol.alerts import Kind, State, Transition, alert_id
from node.errors import FrameError
from node.protocol import keys
from node.protocol.keys import Roster, SigningKey

VERSION = 2
MAX_FRAME = 120
SIGNATURE_SIZE = 64
_HEADER = struct.Struct(">BBHI")
# Fixed part of each body; receipts and heartbeats carry a variable tail after it.
_BODIES = {1: struct.Struct(">HIBBH"), 2: struct.Struct(">HIBHI"), 3: struct.Struct(">HHHIBI"), 4: struct.Struct(">HHI"),
           5: struct.Struct(">IHIBHI")}
MAX_BITMAP = 17   # bytes per receipt bitmap: up to 136 roster nodes
assert MAX_BITMAP * 8 >= keys.MAX_MEMBERS, "every roster a node accepts must fit a receipt"
MAX_VECTOR = 33   # bytes of heartbeat age vector: one per roster node, up to 33


class FrameType(enum.IntEnum):
    TRANSITION = 1
    RECEIPT = 2
    HEARTBEAT = 3
    SILENT = 4
    NEARBY = 5


_FIXED = {t: _HEADER.size + _BODIES[t].size + SIGNATURE_SIZE for t in _BODIES}
_TAIL = {1: (0, 0), 2: (2, 2 * MAX_BITMAP), 3: (0, MAX_VECTOR), 4: (0, 0), 5: (0, 0)}  # (min, max) bytes after the body
MIN_FRAME = min(_FIXED[t] + _TAIL[t][0] for t in _FIXED)


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

    def _tail(self) -> bytes:
        return b""


@dataclass(frozen=True)
class ReceiptFrame:
    """What the sender knows of who received (and sounded) one alert state: bitmaps in roster order."""

    origin: int
    counter: int
    alert_reporter: int
    alert_counter: int
    state: State
    roster_version: int
    received: bytes
    sounded: bytes
    clock: int        # the signer's block time when it signed, seconds (node.protocol.clock)

    type = FrameType.RECEIPT

    @property
    def alert_id(self) -> str:
        return alert_id(self.alert_reporter, self.alert_counter)

    def _body(self) -> tuple:
        return (self.alert_reporter, self.alert_counter, int(self.state), self.roster_version, self.clock)

    def _tail(self) -> bytes:
        if len(self.received) != len(self.sounded) or not 1 <= len(self.received) <= MAX_BITMAP:
            raise ValueError(f"receipt bitmaps must be equal, 1 to {MAX_BITMAP} bytes")
        return self.received + self.sounded


@dataclass(frozen=True)
class HeartbeatFrame:
    """The sender is alive: its troubles, its latest alert state, and its age vector (``node.protocol.supervision``)."""

    origin: int
    counter: int
    troubles: int
    roster_version: int
    latest_reporter: int   # 0: no alert
    latest_counter: int
    latest_state: int      # a State value, or 0 for none
    vector: bytes
    clock: int             # the signer's block time when it signed, seconds (node.protocol.clock)

    type = FrameType.HEARTBEAT

    @property
    def latest_alert_id(self) -> str | None:
        return alert_id(self.latest_reporter, self.latest_counter) if self.latest_reporter else None

    def _body(self) -> tuple:
        return (self.troubles, self.roster_version, self.latest_reporter, self.latest_counter, self.latest_state,
                self.clock)

    def _tail(self) -> bytes:
        if len(self.vector) > MAX_VECTOR:
            raise ValueError(f"a heartbeat vector has at most {MAX_VECTOR} bytes")
        return self.vector


@dataclass(frozen=True)
class SilentFrame:
    """A neighbour's verdict: ``subject`` has not been heard for the supervision period."""

    origin: int
    counter: int
    subject: int
    silent_for: int   # seconds since the subject was last known alive (saturating)
    clock: int        # the signer's block time when it signed, seconds (node.protocol.clock)

    type = FrameType.SILENT

    def _body(self) -> tuple:
        return (self.subject, min(self.silent_for, 0xFFFF), self.clock)

    def _tail(self) -> bytes:
        return b""


@dataclass(frozen=True)
class NearbyFrame:
    """An alert state on another block of the neighborhood, passed on by a bridge node (codes only)."""

    origin: int
    counter: int
    block_code: int       # the foreign block's code (node.protocol.neighborhood.code)
    alert_reporter: int   # the foreign alert's id, on its block
    alert_counter: int
    state: State
    location: int         # the foreign location code, on its block's roster
    clock: int            # the signer's block time when it signed, seconds (node.protocol.clock)

    type = FrameType.NEARBY

    @property
    def foreign_alert_id(self) -> str:
        return alert_id(self.alert_reporter, self.alert_counter)

    def _body(self) -> tuple:
        return (self.block_code, self.alert_reporter, self.alert_counter, int(self.state), self.location, self.clock)

    def _tail(self) -> bytes:
        return b""


def frame_size(ftype: FrameType, tail: int = 0) -> int:
    """Bytes on air for a frame of ``ftype`` with ``tail`` variable bytes."""
    return _FIXED[ftype] + tail


Frame = Union[TransitionFrame, ReceiptFrame, HeartbeatFrame, SilentFrame, NearbyFrame]
_WIRE_STATES = {s.value for s in (State.REPORTED, State.CONFIRMED, State.ALL_CLEAR, State.CANCELLED)}


def _signed_part(block: str, unsigned: bytes) -> bytes:
    return b"silbato/1\0" + block.encode("utf-8") + b"\0" + unsigned


def encode(frame: Frame, key: SigningKey, block: str) -> bytes:
    """Serialise and sign ``frame`` with the origin's key for roster block ``block``."""
    unsigned = (_HEADER.pack(VERSION, int(frame.type), frame.origin, frame.counter)
                + _BODIES[frame.type].pack(*frame._body()) + frame._tail())
    data = unsigned + key.sign(_signed_part(block, unsigned))
    if len(data) > MAX_FRAME:
        raise ValueError(f"frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


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
    # Size first, through the buffer protocol (which a subclass cannot override): no copy of
    # a huge buffer, and no __bytes__ or __len__ of a subclass runs.
    try:
        view = memoryview(data)
    except (TypeError, ValueError) as exc:  # a released memoryview
        raise FrameError("not-bytes", str(exc)) from None
    with view:
        if view.nbytes > MAX_FRAME:
            raise FrameError("oversized", f"{view.nbytes} bytes > {MAX_FRAME}")
        data = view.tobytes()
    if len(data) < MIN_FRAME:
        raise FrameError("truncated", f"{len(data)} bytes")
    version, ftype, origin, counter = _HEADER.unpack_from(data)
    if version != VERSION:
        raise FrameError("unknown-version", f"version {version}; this node speaks version {VERSION} "
                                            "(update every node of the block to the same release)")
    if ftype not in _BODIES:
        raise FrameError("unknown-type", str(ftype))
    fixed, (low, high) = _FIXED[ftype], _TAIL[ftype]
    if not fixed + low <= len(data) <= fixed + high:
        raise FrameError("truncated" if len(data) < fixed + low else "oversized",
                         f"{FrameType(ftype).name.lower()} is {fixed + low} to {fixed + high} bytes, got {len(data)}")
    if ftype == FrameType.RECEIPT and (len(data) - fixed) % 2:
        raise FrameError("truncated", "receipt bitmaps of unequal length")
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
    tail = data[_HEADER.size + _BODIES[ftype].size:-SIGNATURE_SIZE]
    frame = _build(FrameType(ftype), origin, counter, fields, tail, roster)
    if seen is not None and seen(origin, counter):
        raise FrameError("replayed", f"origin {origin} counter {counter}")
    return frame


def _build(ftype: FrameType, origin: int, counter: int, fields: tuple, tail: bytes, roster: Roster) -> Frame:
    if ftype is FrameType.TRANSITION:
        reporter, acounter, kind, state, location = fields
        _check_alert(reporter, acounter, roster)
        if kind not in (Kind.RAID, Kind.TEST, Kind.DRILL):
            raise FrameError("bad-field", f"kind {kind}")
        if state not in _WIRE_STATES:
            raise FrameError("bad-field", f"state {state}")
        if location not in roster.by_location:
            raise FrameError("bad-field", f"location {location} is not on the roster")
        return TransitionFrame(origin, counter, reporter, acounter, Kind(kind), State(state), location)
    if ftype is FrameType.RECEIPT:
        reporter, acounter, state, version, clock = fields
        _check_alert(reporter, acounter, roster)
        if state not in _WIRE_STATES:
            raise FrameError("bad-field", f"state {state}")
        half = len(tail) // 2
        return ReceiptFrame(origin, counter, reporter, acounter, State(state), version, tail[:half], tail[half:],
                            clock)
    if ftype is FrameType.NEARBY:
        block_code, reporter, acounter, state, location, clock = fields
        if not reporter or not acounter or not location:
            raise FrameError("bad-field", f"nearby alert {reporter}-{acounter} at {location}")
        if state not in _WIRE_STATES:
            raise FrameError("bad-field", f"state {state}")
        return NearbyFrame(origin, counter, block_code, reporter, acounter, State(state), location, clock)
    if ftype is FrameType.SILENT:
        subject, silent_for, clock = fields
        if subject not in roster or subject == origin:
            raise FrameError("bad-field", f"silent subject {subject}")
        return SilentFrame(origin, counter, subject, silent_for, clock)
    troubles, version, reporter, acounter, latest, clock = fields
    if latest not in _WIRE_STATES | {0, State.EXPIRED.value}:
        raise FrameError("bad-field", f"state {latest}")
    if reporter:
        _check_alert(reporter, acounter, roster)
    elif acounter or latest:
        raise FrameError("bad-field", "a latest state without an alert")
    return HeartbeatFrame(origin, counter, troubles, version, reporter, acounter, latest, tail, clock)


def _check_alert(reporter: int, acounter: int, roster: Roster) -> None:
    if reporter not in roster or acounter == 0:
        raise FrameError("bad-field", f"alert {reporter}-{acounter} has no rostered reporter")
