"""P1: frame sizes and LoRa airtime, against a naive equivalent (JSON with a base64 signature, as text).

    .venv/bin/python tests/bench/frames.py
"""

from __future__ import annotations

import base64
import json
import sys

from node.protocol import wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.protocol.alerts import Kind, State
from node.protocol.keys import SigningKey

PRESETS = ("SHORT_FAST", "MEDIUM_FAST", "LONG_FAST")


def naive(fields: dict) -> bytes:
    """The same content as readable JSON with a base64 Ed25519 signature, as a text message."""
    return json.dumps({**fields, "sig": base64.b64encode(bytes(64)).decode()}, separators=(",", ":")).encode()


def main(argv: list[str] | None = None) -> list[dict]:
    key = SigningKey.generate()
    n = 30
    frames = {
        "transition": (wire.TransitionFrame(1, 1234, 1, 1200, Kind.RAID, State.CONFIRMED, 101),
                       {"v": 1, "type": "transition", "origin": "B1", "counter": 1234, "alert": "1-1200",
                        "kind": "raid", "state": "confirmed", "location": 101}),
        "receipt (30 nodes)": (wire.ReceiptFrame(2, 99, 1, 1200, State.CONFIRMED, 1, bytes(4), bytes(4), 1_790_000_000),
                               {"v": 1, "type": "receipt", "origin": "B2", "counter": 99, "alert": "1-1200",
                                "state": "confirmed", "received": [f"B{i}" for i in range(1, 28)],
                                "sounded": [f"B{i}" for i in range(1, 27)], "clock": 1790000000}),
        "heartbeat (30 nodes)": (wire.HeartbeatFrame(3, 500, 0, 1, 1, 1200, 2, bytes(n), 1_790_000_000),
                                 {"v": 1, "type": "heartbeat", "origin": "B3", "counter": 500, "troubles": [],
                                  "latest": {"alert": "1-1200", "state": "confirmed"},
                                  "ages": {f"B{i}": 12 for i in range(1, n + 1)}, "clock": 1790000000}),
        "silent": (wire.SilentFrame(4, 77, 9, 185, 1_790_000_000),
                   {"v": 1, "type": "silent", "origin": "B4", "counter": 77, "subject": "B9", "silent_for": 185,
                    "clock": 1790000000}),
    }
    rows = []
    for name, (frame, fields) in frames.items():
        ours = len(wire.encode(frame, key, "elm-st"))
        theirs = len(naive(fields))
        row = {"frame": name, "bytes": ours, "naive_bytes": theirs, "size_ratio": theirs / ours}
        for preset in PRESETS:
            a = time_on_air(ours + MESH_OVERHEAD, preset)
            b = time_on_air(theirs + MESH_OVERHEAD, preset) if theirs + MESH_OVERHEAD <= 255 else float("nan")
            row[f"{preset}_s"] = a
            row[f"{preset}_naive_s"] = b
            row[f"{preset}_ratio"] = b / a
        rows.append(row)
    print(f"{'frame':22} {'bytes':>5} {'naive':>6} {'ratio':>6}  " +
          "  ".join(f"{p + ' s':>14} {'naive':>6}" for p in PRESETS))
    for r in rows:
        print(f"{r['frame']:22} {r['bytes']:5d} {r['naive_bytes']:6d} {r['size_ratio']:6.2f}  " +
              "  ".join(f"{r[p + '_s']:14.3f} {r[p + '_naive_s']:6.3f}" for p in PRESETS))
    print("(naive frames over 233 bytes do not fit one Meshtastic packet: nan)")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
