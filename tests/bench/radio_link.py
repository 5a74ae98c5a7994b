"""Radio link benchmark: start-up, time to TROUBLE after an unplug, and reconnect after a replug.

    .venv/bin/python tests/bench/radio_link.py              # 20 unplug/replug cycles
    .venv/bin/python tests/bench/radio_link.py --cycles 3   # quick look

Runs the real meshtastic library against a simulated radio on a pseudo-terminal,
on the wall clock, and prints median and max seconds for each step.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

from node.sim import Block


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the unplugs are on purpose
    startup, trouble, reconnect = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.monotonic()
        block = Block(Path(tmp), 2, "line", scale=1.0, radio="serial").start()
        node, radio = block.nodes[1], block.radios[1]
        try:
            if not node.link.connected.wait(30):
                raise SystemExit("the link never came up")
            startup.append(time.monotonic() - t0)
            for _ in range(args.cycles):
                radio.unplug()
                t0 = time.monotonic()
                if not node.wait_for(lambda: not node.link.connected.is_set()
                                     and "no radio at" in node.store.troubles().get("radio", ""), 60):
                    raise SystemExit("no TROUBLE after an unplug")
                trouble.append(time.monotonic() - t0)
                radio.plug()
                t0 = time.monotonic()
                if not node.link.connected.wait(60):
                    raise SystemExit("no reconnect after a replug")
                reconnect.append(time.monotonic() - t0)
        finally:
            block.stop()
            logging.disable(logging.NOTSET)
    rows = {name: {"n": len(v), "median_s": statistics.median(v), "max_s": max(v)}
            for name, v in (("startup (2 nodes)", startup), ("unplug to TROUBLE", trouble),
                            ("replug to connected", reconnect))}
    print(f"{'step':22} {'n':>3} {'median s':>9} {'max s':>7}")
    for name, r in rows.items():
        print(f"{name:22} {r['n']:3d} {r['median_s']:9.2f} {r['max_s']:7.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    rows = main()
    sys.exit(0 if rows["unplug to TROUBLE"]["max_s"] <= 30 and rows["replug to connected"]["max_s"] <= 10 else 1)
