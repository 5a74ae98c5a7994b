"""The adversary's toolkit for the adversarial suite: fixed keys, a roster, valid frames, mutators.

Keys come from fixed seeds, and Ed25519 signatures are deterministic, so every frame here,
and every mutation of one drawn from a seeded ``random.Random``, is the same on every run.
The adversary holds the Meshtastic channel key, not a node key: what it sends is random
bytes, mutations of frames it heard, frames signed by keys that are not (or no longer) on
the roster, and copies of frames it recorded.

``SILBATO_LONG=1`` switches the suite to its long sizes (README, Development).
"""

from __future__ import annotations

import collections
import hashlib
import os
import random
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from node import config as config_mod
from node.protocol import wire
from node.protocol.alerts import Kind, State
from node.protocol.keys import Roster, SigningKey, b64, install_roster, sign_roster
from node.protocol.wire import HeartbeatFrame, ReceiptFrame, SilentFrame, TransitionFrame

LONG = os.environ.get("SILBATO_LONG") == "1"
# What the suite tried, by name ("frames fuzzed"); printed at the end of the run (conftest.py).
TALLY: collections.Counter[str] = collections.Counter()
BLOCK = "elm-st"
NODES = (1, 2, 3, 4)   # node 4 is revoked
REVOKED = 4
STRANGER = 99          # a key that was never on the roster


def key(n: int, generation: int = 0) -> SigningKey:
    """A fixed Ed25519 key: 0 the organizers', 1..4 the nodes', ``generation`` 1 a node's older key."""
    seed = hashlib.sha256(f"silbato-adversary/{n}/{generation}".encode()).digest()
    return SigningKey(Ed25519PrivateKey.from_private_bytes(seed))


ORGANIZER = key(0)


def roster_document(version: int = 2) -> dict:
    """The block's signed roster. Version 2 replaced node 3's key (generation 1, on version 1)."""
    nodes = [{"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
              "public_key": key(i, 1 if (i == 3 and version == 1) else 0).public_b64, "revoked": i == REVOKED}
             for i in NODES]
    return sign_roster({"block": BLOCK, "version": version, "nodes": nodes}, ORGANIZER)


ROSTER = Roster.parse(roster_document(), ORGANIZER.public)


def sign(frame, signer: SigningKey | None = None, block: str = BLOCK) -> bytes:
    """``frame`` signed by its origin's current key, or by ``signer``."""
    return wire.encode(frame, signer or key(frame.origin), block)


def valid_frames(counter: int = 1000) -> list[bytes]:
    """One frame of every type and size class, each from a rostered, unrevoked node, counters from ``counter``."""
    frames = [
        TransitionFrame(1, counter, 1, counter, Kind.RAID, State.REPORTED, 101),
        TransitionFrame(2, counter + 1, 1, counter, Kind.RAID, State.CONFIRMED, 101),
        TransitionFrame(1, counter + 2, 1, counter, Kind.RAID, State.ALL_CLEAR, 101),
        TransitionFrame(3, counter + 3, 3, counter + 3, Kind.TEST, State.CANCELLED, 103),
        TransitionFrame(2, counter + 4, 2, counter + 4, Kind.DRILL, State.REPORTED, 102),
        ReceiptFrame(3, counter + 5, 1, counter, State.CONFIRMED, 2, b"\x07", b"\x03", 1000),
        ReceiptFrame(2, counter + 6, 1, counter, State.REPORTED, 2, bytes(range(17)), bytes(17), 1000),  # largest
        HeartbeatFrame(1, counter + 7, 0b101, 2, 1, counter, int(State.REPORTED), bytes([5, 48, 240, 33]), counter),
        HeartbeatFrame(3, counter + 8, 0, 2, 0, 0, 0, b"", 1),                                      # smallest
        HeartbeatFrame(2, counter + 9, 0xFFFF, 2, 1, counter, int(State.EXPIRED), bytes(range(33)),  # largest
                       0xFFFFFFFF),
        SilentFrame(2, counter + 10, 3, 185, counter),
    ]
    return [sign(f) for f in frames]


def forged_frames(counter: int = 5000) -> dict[str, bytes]:
    """Well-formed frames no node may take, by why: each is signed, but by the wrong key."""
    report = TransitionFrame(1, counter, 1, counter, Kind.RAID, State.REPORTED, 101)
    return {
        "stranger's key, as node 1": sign(report, key(STRANGER)),
        "stranger's key, as an unknown origin": sign(TransitionFrame(STRANGER, counter, 1, counter, Kind.RAID,
                                                                     State.REPORTED, 101), key(STRANGER)),
        "revoked node 4's own key": sign(TransitionFrame(REVOKED, counter, REVOKED, counter, Kind.RAID,
                                                         State.REPORTED, 104)),
        "node 3's key from roster v1": sign(TransitionFrame(3, counter, 3, counter, Kind.RAID, State.REPORTED, 103),
                                            key(3, 1)),
        "node 2's key, as node 1": sign(report, key(2)),
        "node 1's key, for another block": sign(report, block="oak-ave"),
    }


def install(root: Path, n_nodes: tuple[int, ...] = (1, 2, 3), overrides: dict | None = None
            ) -> dict[int, config_mod.Config]:
    """Key files, the organizers' public key and the v2 roster under ``root``; a config per node."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "organizer.pub").write_text(ORGANIZER.public_b64 + "\n")
    configs = {}
    for i in n_nodes:
        state = root / f"node{i}"
        state.mkdir(parents=True, exist_ok=True)
        key_file = state / "node.key"
        key_file.write_text(b64(key(i)._private.private_bytes_raw()) + "\n")
        key_file.chmod(0o600)
        install_roster(roster_document(), ORGANIZER.public, state / "roster.json")
        configs[i] = config_mod.from_mapping({"node.state_dir": str(state),
                                              "node.organizer_key": str(root / "organizer.pub"),
                                              **(overrides or {})}, source="adversary")
    return configs


# -- mutations ------------------------------------------------------------------------------------

MUTATORS = ("random", "flip", "bytes", "truncate", "extend", "insert", "delete", "splice", "header",
            "signature", "zeros", "replay")


def mutate(rng: random.Random, seeds: list[bytes]) -> tuple[str, bytes]:
    """One adversarial frame: (mutator, bytes). ``replay`` returns a seed unchanged."""
    how = rng.choice(MUTATORS)
    base = bytearray(rng.choice(seeds))
    if how == "random":
        return how, rng.randbytes(rng.randint(0, wire.MAX_FRAME + 10))
    if how == "flip":
        for _ in range(rng.randint(1, 8)):
            bit = rng.randrange(len(base) * 8)
            base[bit // 8] ^= 1 << bit % 8
    elif how == "bytes":
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] ^= rng.randint(1, 255)
    elif how == "truncate":
        del base[rng.randrange(len(base)):]
    elif how == "extend":
        base += rng.randbytes(rng.randint(1, 40))
    elif how == "insert":
        at = rng.randrange(len(base) + 1)
        base[at:at] = rng.randbytes(rng.randint(1, 4))
    elif how == "delete":
        at = rng.randrange(len(base))
        del base[at:at + rng.randint(1, 4)]
    elif how == "splice":
        other = rng.choice(seeds)
        base = base[:rng.randrange(len(base))] + other[rng.randrange(len(other)):]
    elif how == "header":
        # A plausible header on a signed body: another type, origin, counter or version.
        field = rng.randrange(4)
        if field == 0:
            base[0] = rng.choice([0, 2, 255])
        elif field == 1:
            base[1] = rng.choice([0, 1, 2, 3, 4, 5, 255])
        elif field == 2:
            base[2:4] = rng.choice([0, 1, 2, 3, 4, STRANGER, 0xFFFF]).to_bytes(2, "big")
        else:
            base[4:8] = rng.choice([0, 1, 2**31, 2**32 - 1, rng.randrange(2**32)]).to_bytes(4, "big")
    elif how == "signature":
        other = rng.choice(seeds)  # a real signature, over other bytes
        base[-wire.SIGNATURE_SIZE:] = other[-wire.SIGNATURE_SIZE:]
    elif how == "zeros":
        return how, bytes([rng.choice([0, 0xFF])]) * rng.randint(wire.MIN_FRAME, wire.MAX_FRAME)
    return how, bytes(base)


def stream(seed: int, seeds: list[bytes], count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for _ in range(count):
        yield mutate(rng, seeds)


# -- what a node shows ------------------------------------------------------------------------------

def snapshot(node) -> dict:
    """Everything a frame from the air could change in ``node``'s store."""
    tables = ("alerts", "aliases", "events", "counters", "coverage", "troubles", "outbox")
    rows = {t: node.store.db.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    rows["peers"] = node.store.db.execute("SELECT node_id, last_heard, troubles FROM peers").fetchall()
    return rows


def siren(node):
    """``node``'s siren pin (mock pins: its ``states`` list every change)."""
    return node.pin_factory.pin(node.config["hardware.siren_pin"])


def sounded(node) -> bool:
    """Whether ``node``'s siren came on since its pin's states were last cleared."""
    return any(state for _, state in siren(node).states)
