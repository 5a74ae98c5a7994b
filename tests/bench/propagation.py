"""Propagation benchmark: simulated seconds from a report at node 1 until every node holds it.

    .venv/bin/python tests/bench/propagation.py                 # full run
    .venv/bin/python tests/bench/propagation.py --alerts 3      # quick look

Runs on virtual time with fixed seeds, so the figures are the same on any machine.
Prints one row per (preset, loss): delivery ratio, p50/p95/max time to the last node,
and the channel airtime spent per alert; then, side by side, plain Meshtastic on the
same air (same seeds, loss and line): one broadcast text of the same size flooded with
hop limit 3 and with 7, nothing more (see ``plain_flood.py``), and the physical floor.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:   # plain_flood, also when the suite loads this file by path
    sys.path.insert(0, str(Path(__file__).parent))

import plain_flood
from plain_flood import percentile, ratio, seconds

from node.protocol.alerts import State
from node.sim import Block


def one_run(root: Path, n: int, preset: str, loss: float, seed: int, limit: float) -> tuple[float | None, float, float]:
    """Seconds to every node (None: lost), total airtime, and seconds to the far end (inf: never)."""
    block = Block(root, n, "line", loss=loss, preset=preset, seed=seed).start()
    try:
        epoch = block.clock() - block.scheduler.now()
        alert = block.nodes[1].report()
        start = block.scheduler.now()
        done = block.scheduler.run_until_true(
            lambda: all((a := node.store.get_alert(alert.id)) is not None and a.state is State.REPORTED
                        for node in block.nodes.values()), limit=limit, step=0.1)
        # The stores say when each node took it, exactly; the polling above only says that all have.
        arrived = [math.inf if (a := node.store.get_alert(alert.id)) is None else a.opened_at - epoch - start
                   for node in block.nodes.values()]
        to_far = arrived[n - 1]
        return (None if done is None else max(arrived)), sum(block.air.airtime.values()), to_far
    finally:
        block.stop()


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
                times, airtimes, to_far, to_all = [], [], [], []
                plain = {h: ([], []) for h in plain_flood.MESHTASTIC_HOP_LIMITS}
                for seed in range(args.alerts):
                    t, air, far = one_run(Path(tmp) / f"{preset}-{loss}-{seed}", args.nodes, preset, loss, seed, args.limit)
                    airtimes.append(air)
                    to_far.append(far)
                    to_all.append(math.inf if t is None else t)
                    if t is not None:
                        times.append(t)
                    for h, (p_far, p_all) in plain.items():
                        flood = plain_flood.flood(args.nodes, "line", loss=loss, preset=preset, seed=seed, hop_limit=h,
                                                  texts=1, far=args.nodes)
                        p_far += flood["to_far"]
                        p_all += flood["to_all"]
                silbato = plain_flood.summary(to_far, to_all)
                baselines = []
                for h, (p_far, p_all) in plain.items():
                    b = {"hop_limit": h, **plain_flood.summary(p_far, p_all)}
                    for key in ("farthest_p50_s", "farthest_p95_s", "all_nodes_p95_s"):
                        b[f"ratio_{key}"] = ratio(silbato[key], b[key])
                    baselines.append(b)
                floor = plain_flood.floor_seconds(args.nodes - 1, preset)
                rows.append({"preset": preset, "loss": loss, "nodes": args.nodes, "runs": args.alerts,
                             "delivered": len(times) / args.alerts,
                             "p50_s": percentile(times, 0.5) if times else None,
                             "p95_s": percentile(times, 0.95) if times else None,
                             "max_s": max(times) if times else None,
                             "airtime_per_alert_s": statistics.mean(airtimes), **silbato,
                             "floor_s": floor, "farthest_p50_over_floor": ratio(silbato["farthest_p50_s"], floor),
                             "baseline": baselines})
    print(f"{'preset':12} {'loss':>5} {'delivered':>9} {'p50 s':>7} {'p95 s':>7} {'max s':>7} {'air s':>7}")
    for r in rows:
        fmt = lambda v: f"{v:7.2f}" if v is not None else "      -"
        print(f"{r['preset']:12} {r['loss']:5.0%} {r['delivered']:9.0%} {fmt(r['p50_s'])} {fmt(r['p95_s'])} "
              f"{fmt(r['max_s'])} {fmt(r['airtime_per_alert_s'])}")
    print("\nagainst plain Meshtastic (one broadcast text of the same size, same air; ratio = Silbato / baseline)"
          "\nand the floor (one airtime per hop):")
    print(f"  {'preset':12} {'loss':>5} {'system':16} {'to all':>6} {'far50':>6} {'far95':>6} {'all95':>6} "
          f"{'r far50':>7} {'r far95':>7} {'r all95':>7} {'floor':>6} {'50/fl':>6}")
    for r in rows:
        print(f"  {r['preset']:12} {r['loss']:5.0%} {'Silbato':16} {r['delivered_all']:6.0%} "
              f"{seconds(r['farthest_p50_s'])} {seconds(r['farthest_p95_s'])} {seconds(r['all_nodes_p95_s'])} "
              f"{'':23} {seconds(r['floor_s'])} {seconds(r['farthest_p50_over_floor'])}")
        for b in r["baseline"]:
            print(f"  {r['preset']:12} {r['loss']:5.0%} {'Meshtastic, hop ' + str(b['hop_limit']):16} "
                  f"{b['delivered_all']:6.0%} {seconds(b['farthest_p50_s'])} {seconds(b['farthest_p95_s'])} "
                  f"{seconds(b['all_nodes_p95_s'])} {seconds(b['ratio_farthest_p50_s'], 7)} "
                  f"{seconds(b['ratio_farthest_p95_s'], 7)} {seconds(b['ratio_all_nodes_p95_s'], 7)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    sys.exit(0 if all(r["delivered"] == 1.0 for r in main()) else 1)
