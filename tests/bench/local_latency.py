"""Local latency benchmark: from the end of a panic-button hold to the siren on, the alert stored and queued.

    .venv/bin/python tests/bench/local_latency.py                  # 1,000 holds
    .venv/bin/python tests/bench/local_latency.py --holds 50       # quick look

One complete node (real SQLite store with synchronous=FULL, real keys and roster,
no radio) on gpiozero mock pins. Each hold presses the button, and the latency is
measured from the moment the hold became long enough (press + hold_time) until
both the siren pin switched on and the node had committed the alert and its
frame to the outbox. The node's clock jumps 1,000 s before each hold, so every
hold is a new report (past the merge and cancel windows); the alert is then
cancelled and the outbox emptied so that the store does not grow between holds.
Wall-clock figures depend on the machine; the target is p99 <= 50 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gpiozero.pins.mock import MockFactory, MockPin

from node.daemon.node import Node
from node.sim import Block, provision


class TimedPin(MockPin):
    """A mock pin that remembers the monotonic time of each change."""

    def _change_state(self, value):
        changed = super()._change_state(value)
        if changed:
            self.changes = getattr(self, "changes", [])
            self.changes.append((time.monotonic(), value))
        return changed


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure(root: Path, holds: int, hold_time: float) -> list[float]:
    """Latency in milliseconds for each of ``holds`` holds."""
    files = provision(root, 2, hold_time=hold_time)
    clock_now = [Block.EPOCH]
    factory = MockFactory(pin_class=TimedPin)
    node = Node(files.configs[0], pin_factory=factory, clock=lambda: clock_now[0]).start()
    button, siren = factory.pin(node.config["hardware.button_pin"]), factory.pin(node.config["hardware.siren_pin"])
    latencies = []
    try:
        for i in range(holds):
            clock_now[0] += 1000.0
            node.hardware.siren.silence()
            siren.changes = []
            pressed = time.monotonic()
            button.drive_low()
            if not node.wait_for(lambda: bool(node.store.active_alerts()), timeout=10):
                raise RuntimeError(f"hold {i} raised nothing")
            stored = time.monotonic()  # the alert and its frame are committed before the change is announced
            button.drive_high()
            on = next((t for t, state in siren.changes if state), None)
            if on is None:
                raise RuntimeError(f"hold {i}: the siren never came on")
            latencies.append((max(on, stored) - (pressed + hold_time)) * 1000)
            alert = node.store.active_alerts()[-1]
            if len(node.store.pending()) != 1:
                raise RuntimeError(f"hold {i}: the frame was not queued")
            node.act("cancel", alert.id)
            with node.store.transaction():
                for seq, _ in node.store.pending():
                    node.store.mark_sent(seq, clock_now[0])
    finally:
        node.stop()
    return latencies


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=1000)
    parser.add_argument("--hold-time", type=float, default=0.05,
                        help="seconds; short, so 1,000 holds take about a minute (latency does not depend on it)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        latencies = measure(Path(tmp), args.holds, args.hold_time)
    result = {"holds": args.holds, "hold_time": args.hold_time,
              "p50_ms": round(statistics.median(latencies), 2), "p99_ms": round(percentile(latencies, 0.99), 2),
              "max_ms": round(max(latencies), 2), "latencies_ms": latencies}
    print(f"{args.holds} holds: end of hold -> siren on + alert stored and queued: "
          f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, max {result['max_ms']:.1f} ms "
          f"(target p99 <= 50 ms)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
