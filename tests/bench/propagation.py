"""Propagation benchmark: simulated seconds from a report at node 1 until every node holds it.

    .venv/bin/python tests/bench/propagation.py                 # full run
    .venv/bin/python tests/bench/propagation.py --alerts 3      # quick look

Runs on virtual time with fixed seeds, so the figures are the same on any machine.
Prints one row per (preset, loss): delivery ratio, p50/p95/max time to the last node,
and the channel airtime spent per alert.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

from node.protocol.alerts import State
from node.sim import Block


def one_run(root: Path, n: int, preset: str, loss: float, seed: int, limit: float) -> tuple[float | None, float]:
    block = Block(root, n, "line", loss=loss, preset=preset, seed=seed).start()
    try:
        alert = block.nodes[1].report()
        start = block.scheduler.now()
        done = block.scheduler.run_until_true(
            lambda: all((a := node.store.get_alert(alert.id)) is not None and a.state is State.REPORTED
                        for node in block.nodes.values()), limit=limit, step=0.1)
        return (None if done is None else done - start), sum(block.air.airtime.values())
    finally:
        block.stop()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--alerts", type=int, default=50, help="runs (seeds) per row")
    parser.add_argument("--limit", type=float, default=3600.0, help="simulated seconds before a run counts as lost")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # a LONG_FAST block says at start that it stretches its period
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in ("SHORT_FAST", "MEDIUM_FAST", "LONG_FAST"):
            for loss in (0.0, 0.2):
                times, airtimes = [], []
                for seed in range(args.alerts):
                    t, air = one_run(Path(tmp) / f"{preset}-{loss}-{seed}", args.nodes, preset, loss, seed, args.limit)
                    airtimes.append(air)
                    if t is not None:
                        times.append(t)
                rows.append({"preset": preset, "loss": loss, "nodes": args.nodes, "runs": args.alerts,
                             "delivered": len(times) / args.alerts,
                             "p50_s": percentile(times, 0.5) if times else None,
                             "p95_s": percentile(times, 0.95) if times else None,
                             "max_s": max(times) if times else None,
                             "airtime_per_alert_s": statistics.mean(airtimes)})
    print(f"{'preset':12} {'loss':>5} {'delivered':>9} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'air s':>7}")
    for r in rows:
        fmt = lambda v: f"{v:7.2f}" if v is not None else "      -"
        print(f"{r['preset']:12} {r['loss']:5.0%} {r['delivered']:9.0%} {fmt(r['p50_s'])} {fmt(r['p95_s'])} "
              f"{fmt(r['max_s'])} {fmt(r['airtime_per_alert_s'])}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["delivered"] == 1.0 for r in main()) else 1)
