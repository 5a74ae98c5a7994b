"""Fuzz: random and mutated frames get ``FrameError`` and nothing else, none is taken, memory stays flat.

CI runs 10,000 frames through Hypothesis (derandomized) and 10,000 through a seeded
mutation loop into a running node; ``SILBATO_LONG=1`` runs 100,000 of each, and
1,000,000 more through atheris (libFuzzer) when it is installed.
"""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adversary import LONG, ROSTER, TALLY, install, key, mutate, stream, valid_frames
from node.protocol import wire
from node.daemon.node import Node
from node.errors import FrameError
from node.hardware.devices import mock_factory

FRAMES = 100_000 if LONG else 10_000
SEEDS = valid_frames()
# The node under fuzz has taken every seed frame once, so an unchanged copy is a replay.
SEEN = {wire.peek_origin(f) for f in SEEDS}


def seen(origin: int, counter: int) -> bool:
    return (origin, counter) in SEEN


def test_the_seed_frames_are_valid():
    """The mutators start from frames a node takes: the fuzz reaches the signature check and beyond."""
    decoded = [wire.decode(f, ROSTER) for f in SEEDS]
    assert {type(f) for f in decoded} == {wire.TransitionFrame, wire.ReceiptFrame, wire.HeartbeatFrame,
                                          wire.SilentFrame}
    assert {len(f) for f in SEEDS} >= {wire.MIN_FRAME, 82, 119}


@settings(derandomize=True, max_examples=FRAMES, database=None, deadline=None,
          suppress_health_check=list(HealthCheck))
@given(data=st.one_of(
    st.binary(max_size=wire.MAX_FRAME + 10),
    st.randoms(use_true_random=False).map(lambda rng: mutate(rng, SEEDS)[1]),
))
def test_fuzzed_frames_only_ever_raise_frame_error(data):
    TALLY["frames fuzzed (Hypothesis)"] += 1
    with pytest.raises(FrameError):
        wire.decode(data, ROSTER, seen=seen)


def test_mutated_frames_through_a_running_node(tmp_path):
    """A node hears ``FRAMES`` mutated frames: all refused, none an error, and no memory growth."""
    config = install(tmp_path)[2]
    node = Node(config, pin_factory=mock_factory()).start()
    daemon_log = logging.getLogger("node.daemon")
    level = daemon_log.level
    daemon_log.setLevel(logging.ERROR)  # a refused frame logs a warning: 10,000 of them are noise here
    try:
        for frame in SEEDS:
            node.on_frame(frame)
        # its own: dropped as such; old heartbeats and receipts: old news, dropped before the flood limit
        taken = ("accepted", "own-echo", "stale-heartbeat", "stale-receipt")
        assert sum(node.counts[k] for k in taken) == len(SEEDS), node.counts
        node.counts.clear()
        batches, size = 10, FRAMES // 10
        frames = stream(6, SEEDS, FRAMES)
        tracemalloc.start()
        memory = []
        for _ in range(batches):
            for _how, data in (next(frames) for _ in range(size)):
                node.on_frame(data)
            gc.collect()
            memory.append(tracemalloc.get_traced_memory()[0])
        tracemalloc.stop()
    finally:
        daemon_log.setLevel(level)
        node.stop()
    TALLY["frames fuzzed (mutations into a node)"] += FRAMES
    assert node.counts["accepted"] == 0, node.counts
    assert node.counts["error"] == 0, node.counts
    assert node.counts["rate-limited"] == 0
    assert sum(node.counts.values()) == FRAMES, node.counts
    assert node.counts["replayed"] > 0 and node.counts["bad-signature"] > 0  # the fuzz reached the deep checks
    # The first batch warms caches (statements, interned reasons); after it, nothing may pile up.
    growth = max(memory[1:]) - memory[1]
    assert growth < 64 * 1024, f"traced memory after each batch of {size}: {memory}"


def fields(fmt: str):
    """Values for a struct format's fields: mostly near the valid codes (ids, locations, states), some anywhere."""
    width = {"B": 2**8 - 1, "H": 2**16 - 1, "I": 2**32 - 1}
    return st.tuples(*(st.one_of(st.integers(0, 6), st.integers(99, 106), st.integers(0, width[c]))
                       for c in fmt.lstrip(">")))


@st.composite
def signed_bodies(draw):
    """A header and body of any type with fields near the valid ones, signed by a rostered node's key."""
    ftype = draw(st.sampled_from(list(wire.FrameType)))
    origin = draw(st.sampled_from([1, 2, 3]))
    low, high = wire._TAIL[ftype]
    body = wire._BODIES[ftype].pack(*draw(fields(wire._BODIES[ftype].format)))
    tail = draw(st.binary(min_size=max(0, low - 1), max_size=high + 1))
    unsigned = wire._HEADER.pack(wire.VERSION, ftype, origin, draw(st.integers(0, 2**32 - 1))) + body + tail
    return origin, unsigned + key(origin).sign(b"silbato/1\0" + ROSTER.block.encode() + b"\0" + unsigned)


def test_signed_random_fields_are_refused_or_decoded_exactly():
    """With a real node key (a rogue node), any fields either fail with ``FrameError`` or decode to a
    frame that encodes back to the same bytes: the decoder takes nothing it would not itself send."""
    outcomes = {"decoded": 0, "refused": 0}

    @settings(derandomize=True, max_examples=FRAMES // 10, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(signed=signed_bodies())
    def check(signed):
        origin, data = signed
        try:
            frame = wire.decode(data, ROSTER)
        except FrameError:
            outcomes["refused"] += 1
            return
        outcomes["decoded"] += 1
        assert wire.encode(frame, key(origin), ROSTER.block) == data

    check()
    TALLY["signed frames with random fields"] += sum(outcomes.values())
    assert outcomes["decoded"] > 0 and outcomes["refused"] > 0, outcomes  # the property is not vacuous


ATHERIS_TARGET = '''
import sys
sys.path.insert(0, sys.argv.pop(1))
import atheris
with atheris.instrument_imports():
    from node.protocol import wire
    from node.errors import FrameError
from adversary import ROSTER, valid_frames
SEEN = {wire.peek_origin(f) for f in valid_frames()}

def one(data):
    try:
        wire.decode(data, ROSTER, seen=lambda o, c: (o, c) in SEEN)
    except FrameError:
        return
    raise AssertionError(f"frame accepted: {data.hex()}")

atheris.Setup(sys.argv, one)
atheris.Fuzz()
'''


if LONG:  # the long run only: atheris has no wheels for ARM, where the suite also runs
    def test_atheris_long_run(tmp_path):
        """1,000,000 libFuzzer-guided frames, starting from the valid ones; any other exception is a crash."""
        pytest.importorskip("atheris")
        corpus = tmp_path / "corpus"
        corpus.mkdir()
        for i, frame in enumerate(SEEDS):
            (corpus / f"seed{i}").write_bytes(frame)
        script = tmp_path / "target.py"
        script.write_text(ATHERIS_TARGET)
        here = str(Path(__file__).parent)
        runs = 10 * FRAMES  # cheap: most inputs fail the length checks in microseconds
        result = subprocess.run([sys.executable, str(script), here, f"-runs={runs}", "-seed=6",
                                 f"-max_len={wire.MAX_FRAME + 10}", str(corpus)],
                                capture_output=True, text=True, timeout=3600,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        TALLY["frames fuzzed (atheris)"] += runs
        assert result.returncode == 0, result.stderr[-4000:]
        assert f"Done {runs} runs" in result.stderr, result.stderr[-2000:]
