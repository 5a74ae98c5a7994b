"""The frame codec: bytes in, a frame or FrameError out, and nothing else."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.protocol import wire
from node.protocol.alerts import Kind, State
from node.errors import FrameError
from node.protocol.keys import Roster, SigningKey, sign_roster
from node.protocol.wire import MAX_FRAME, FrameType, HeartbeatFrame, ReceiptFrame, SilentFrame, TransitionFrame, frame_size

FRAMES = {
    FrameType.TRANSITION: TransitionFrame(origin=2, counter=41, alert_reporter=1, alert_counter=7,
                                          kind=Kind.RAID, state=State.CONFIRMED, location=101),
    FrameType.RECEIPT: ReceiptFrame(origin=3, counter=9, alert_reporter=1, alert_counter=7,
                                    state=State.CONFIRMED, roster_version=1, received=b"\x07", sounded=b"\x03",
                                    clock=1_790_000_789),
    FrameType.HEARTBEAT: HeartbeatFrame(origin=1, counter=1000, troubles=0b101, roster_version=1,
                                        latest_reporter=1, latest_counter=7, latest_state=int(State.REPORTED),
                                        vector=bytes([0x05, 0x30, 0xF0, 0x21]), clock=1_790_000_123),
    FrameType.SILENT: SilentFrame(origin=2, counter=77, subject=3, silent_for=185, clock=1_790_000_456),
    FrameType.NEARBY: wire.NearbyFrame(origin=2, counter=78, block_code=0x4BA76876, alert_reporter=9,
                                       alert_counter=12, state=State.CONFIRMED, location=907, clock=1_790_000_500),
}


def heartbeat(origin=1, counter=1, **changes):
    fields = dict(troubles=0, roster_version=1, latest_reporter=0, latest_counter=0, latest_state=0, vector=b"",
                  clock=1_790_000_000)
    return HeartbeatFrame(origin=origin, counter=counter, **{**fields, **changes})


def encode(setup, frame, block=None) -> bytes:
    return wire.encode(frame, setup.keys[frame.origin], setup.block if block is None else block)


def reason(data, roster, seen=None) -> str:
    with pytest.raises(FrameError) as exc:
        wire.decode(data, roster, seen=seen)
    return exc.value.reason


@pytest.fixture(params=list(FrameType), ids=lambda t: t.name.lower())
def frame(request):
    return FRAMES[request.param]


@pytest.fixture(scope="module")
def shared_roster():
    """A roster for property tests (Hypothesis refuses function-scoped fixtures)."""
    organizer = SigningKey.generate()
    nodes = [{"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
              "public_key": SigningKey.generate().public_b64, "revoked": i == 4} for i in range(1, 5)]
    return Roster.parse(sign_roster({"block": "elm-st", "version": 1, "nodes": nodes}, organizer),
                        organizer.public)


# -- round trips and sizes ---------------------------------------------------------------------


def test_every_frame_type_round_trips(roster_setup, frame):
    assert wire.decode(encode(roster_setup, frame), roster_setup.roster) == frame


def test_frame_sizes(roster_setup):
    sizes = {t: len(encode(roster_setup, f)) for t, f in FRAMES.items()}
    assert sizes == {FrameType.TRANSITION: 82, FrameType.RECEIPT: 87, FrameType.HEARTBEAT: 91, FrameType.SILENT: 80,
                     FrameType.NEARBY: 89}
    assert sizes[FrameType.HEARTBEAT] == frame_size(FrameType.HEARTBEAT, 4)


def test_the_largest_frames_fit_in_120_bytes(roster_setup):
    big_receipt = ReceiptFrame(3, 9, 1, 7, State.REPORTED, 1, bytes(17), bytes(17), 1)
    big_heartbeat = heartbeat(vector=bytes(33))
    assert len(encode(roster_setup, big_receipt)) == 119
    assert len(encode(roster_setup, big_heartbeat)) == 120 == MAX_FRAME
    with pytest.raises(ValueError):
        encode(roster_setup, heartbeat(vector=bytes(34)))
    with pytest.raises(ValueError):
        encode(roster_setup, ReceiptFrame(3, 9, 1, 7, State.REPORTED, 1, bytes(18), bytes(18), 1))


def test_bytearray_and_memoryview_are_accepted(roster_setup, frame):
    data = encode(roster_setup, frame)
    assert wire.decode(bytearray(data), roster_setup.roster) == frame
    assert wire.decode(memoryview(data), roster_setup.roster) == frame


def test_transition_frame_carries_the_alert(roster_setup):
    decoded = wire.decode(encode(roster_setup, FRAMES[FrameType.TRANSITION]), roster_setup.roster)
    t = decoded.transition()
    assert (t.alert_id, t.reporter, t.signer, t.state, t.location) == ("1-7", 1, 2, State.CONFIRMED, 101)


def test_receipt_bitmaps_round_trip(roster_setup):
    frame = ReceiptFrame(3, 10, 1, 7, State.ALL_CLEAR, 2, received=b"\xff\x01", sounded=b"\x00\x00", clock=5)
    decoded = wire.decode(encode(roster_setup, frame), roster_setup.roster)
    assert decoded == frame and decoded.alert_id == "1-7"


def test_heartbeat_without_an_alert_round_trips(roster_setup):
    frame = heartbeat(vector=bytes(3))
    decoded = wire.decode(encode(roster_setup, frame), roster_setup.roster)
    assert decoded == frame and decoded.latest_alert_id is None


def test_peek_origin_reads_the_header(roster_setup, frame):
    assert wire.peek_origin(encode(roster_setup, frame)) == (frame.origin, frame.counter)
    assert wire.peek_origin(b"\x01\x01") is None


# -- nothing but FrameError ---------------------------------------------------------------------


@settings(derandomize=True, max_examples=2000, database=None, deadline=None)
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_never_decode(shared_roster, data):
    with pytest.raises(FrameError):
        wire.decode(data, shared_roster)


@settings(derandomize=True, max_examples=1000, database=None, deadline=None)
@given(ftype=st.sampled_from(list(FrameType)), origin=st.integers(1, 4), counter=st.integers(0, 2**32 - 1),
       rest=st.binary(min_size=70, max_size=74))
def test_well_formed_headers_with_arbitrary_bodies_never_decode(shared_roster, ftype, origin, counter, rest):
    data = wire._HEADER.pack(wire.VERSION, ftype, origin, counter) + rest
    with pytest.raises(FrameError):
        wire.decode(data, shared_roster)


def test_every_single_bit_flip_is_rejected(roster_setup, frame):
    data = encode(roster_setup, frame)
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(FrameError):
            wire.decode(bytes(flipped), roster_setup.roster)


# -- reasons -------------------------------------------------------------------------------------


def test_too_short_is_truncated(roster_setup, frame):
    data = encode(roster_setup, frame)
    shortest = {FrameType.TRANSITION: 82, FrameType.RECEIPT: 87, FrameType.HEARTBEAT: 87,
                FrameType.SILENT: 80, FrameType.NEARBY: 89}[frame.type]
    assert reason(data[:shortest - 1], roster_setup.roster) == "truncated"
    assert reason(b"", roster_setup.roster) == "truncated"


def test_transition_cut_short_is_truncated(roster_setup):
    data = encode(roster_setup, FRAMES[FrameType.TRANSITION])
    assert reason(data[:81], roster_setup.roster) == "truncated"


def test_longer_than_its_type_is_oversized(roster_setup):
    data = encode(roster_setup, FRAMES[FrameType.TRANSITION])
    assert reason(data + b"\0", roster_setup.roster) == "oversized"
    full = encode(roster_setup, heartbeat(vector=bytes(33)))
    assert len(full) == 120 and reason(full + b"\0", roster_setup.roster) == "oversized"


def test_a_receipt_with_unequal_bitmaps_is_refused(roster_setup):
    data = encode(roster_setup, FRAMES[FrameType.RECEIPT])
    assert reason(data[:-64] + b"\0" + data[-64:], roster_setup.roster) == "truncated"


def test_longer_than_max_frame_is_oversized(roster_setup):
    assert reason(bytes(MAX_FRAME + 1), roster_setup.roster) == "oversized"


@pytest.mark.parametrize("version", [1, 3])
def test_unknown_version(roster_setup, frame, version):
    data = bytearray(encode(roster_setup, frame))
    data[0] = version
    assert reason(bytes(data), roster_setup.roster) == "unknown-version"


def test_a_version_1_frame_is_refused_with_a_clear_reason(roster_setup):
    """Version 1 heartbeats and verdicts had no block time; a node on the old release is named as such."""
    old = struct.pack(">BBHI", 1, 4, 2, 77) + struct.pack(">HH", 3, 185)
    data = old + roster_setup.keys[2].sign(b"silbato/1\0" + roster_setup.block.encode() + b"\0" + old)
    with pytest.raises(FrameError) as exc:
        wire.decode(data + bytes(4), roster_setup.roster)  # padded to version 2's size
    assert exc.value.reason == "unknown-version"
    assert "version 1" in str(exc.value) and "version 2" in str(exc.value)


def test_unknown_type(roster_setup, frame):
    data = bytearray(encode(roster_setup, frame))
    data[1] = 9
    assert reason(bytes(data), roster_setup.roster) == "unknown-type"


def test_origin_not_on_roster_is_unknown_key(roster_setup):
    frame = heartbeat(origin=9, counter=1)
    data = wire.encode(frame, roster_setup.keys[1], roster_setup.block)
    assert reason(data, roster_setup.roster) == "unknown-key"


def test_revoked_origin_is_refused(roster_setup):
    frame = heartbeat(origin=4, counter=1)
    assert reason(encode(roster_setup, frame), roster_setup.roster) == "revoked-key"


def test_frame_signed_by_another_node_is_bad_signature(roster_setup):
    frame = FRAMES[FrameType.HEARTBEAT]  # origin 1
    data = wire.encode(frame, roster_setup.keys[2], roster_setup.block)
    assert reason(data, roster_setup.roster) == "bad-signature"


def test_frame_signed_for_another_block_is_bad_signature(roster_setup, frame):
    assert reason(encode(roster_setup, frame, block="oak-ave"), roster_setup.roster) == "bad-signature"


def test_counter_zero_is_refused(roster_setup):
    frame = heartbeat(origin=1, counter=0)
    assert reason(encode(roster_setup, frame), roster_setup.roster) == "bad-counter"


@pytest.mark.parametrize("changes", [
    {"location": 199},        # not on the roster
    {"alert_reporter": 9},    # reporter not on the roster
    {"alert_counter": 0},
    {"state": State.EXPIRED},  # never sent on air
])
def test_signed_transition_with_bad_field_is_refused(roster_setup, changes):
    fields = {**FRAMES[FrameType.TRANSITION].__dict__, **changes}
    assert reason(encode(roster_setup, TransitionFrame(**fields)), roster_setup.roster) == "bad-field"


def test_signed_receipt_with_an_unknown_state_is_refused(roster_setup):
    unsigned = wire._HEADER.pack(wire.VERSION, FrameType.RECEIPT, 3, 9) + bytes([0, 1, 0, 0, 0, 7, 9, 0, 1, 0, 0, 0, 5, 1, 1])
    # Signed as the module docstring specifies: b"silbato/1\0" + block + b"\0" + header + body.
    signature = roster_setup.keys[3].sign(b"silbato/1\0" + roster_setup.block.encode() + b"\0" + unsigned)
    assert reason(unsigned + signature, roster_setup.roster) == "bad-field"


@pytest.mark.parametrize("changes", [
    {"latest_state": 6},
    {"latest_reporter": 9, "latest_counter": 1, "latest_state": 1},  # reporter not on the roster
    {"latest_reporter": 0, "latest_counter": 0, "latest_state": 1},  # a state of no alert
])
def test_heartbeat_with_a_bad_latest_alert_is_refused(roster_setup, changes):
    assert reason(encode(roster_setup, heartbeat(**changes)), roster_setup.roster) == "bad-field"


def test_already_seen_counter_is_replayed(roster_setup, frame):
    calls = []

    def seen(origin, counter):
        calls.append((origin, counter))
        return True

    assert reason(encode(roster_setup, frame), roster_setup.roster, seen=seen) == "replayed"
    assert calls == [(frame.origin, frame.counter)]


def test_unseen_counter_is_accepted(roster_setup, frame):
    assert wire.decode(encode(roster_setup, frame), roster_setup.roster, seen=lambda o, c: False) == frame


@pytest.mark.parametrize("data", ["hello", None, 82, [1] * 82])
def test_non_bytes_input_is_refused(roster_setup, data):
    assert reason(data, roster_setup.roster) == "not-bytes"


class _Hostile(bytes):
    """A bytes subclass whose own conversions raise: decode must never call them."""

    def __bytes__(self):
        raise RuntimeError("__bytes__ called")

    def __len__(self):
        raise RuntimeError("__len__ called")


def test_a_bytes_subclass_is_read_through_its_buffer(roster_setup, frame):
    data = encode(roster_setup, frame)
    assert wire.decode(_Hostile(data), roster_setup.roster) == frame
    assert reason(_Hostile(bytes(MAX_FRAME + 1)), roster_setup.roster) == "oversized"


class _Counting(bytearray):
    copies = 0

    def __bytes__(self):
        type(self).copies += 1
        return super().__bytes__() if hasattr(bytearray, "__bytes__") else bytes(memoryview(self))


def test_a_huge_buffer_is_refused_before_any_copy(roster_setup):
    huge = _Counting(50 * 1024 * 1024)
    assert reason(huge, roster_setup.roster) == "oversized"
    assert _Counting.copies == 0


def test_a_released_memoryview_is_refused(roster_setup, frame):
    view = memoryview(encode(roster_setup, frame))
    view.release()
    assert reason(view, roster_setup.roster) == "not-bytes"


@pytest.mark.parametrize("subject", [9, 2])  # not on the roster; the sender itself
def test_a_silent_verdict_about_a_bad_subject_is_refused(roster_setup, subject):
    frame = SilentFrame(origin=2, counter=5, subject=subject, silent_for=200, clock=1_790_000_000)
    assert reason(encode(roster_setup, frame), roster_setup.roster) == "bad-field"
