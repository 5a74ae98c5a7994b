"""P3: block propagation: 30 nodes, four or more hops across, 10% loss per link.

    .venv/bin/python tests/bench/block.py                     # 200 alerts on MEDIUM_FAST and LONG_FAST
    .venv/bin/python tests/bench/block.py --alerts 20         # quicker

Complete nodes (keys, SQLite, the daemon) on the simulated air, on virtual time.
Each alert is raised at node 1 (the end of the hold) and timed to the siren at the
node furthest from it in hops; then it is withdrawn and the block rests before the
next one. Reports the delivery ratio and p50/p95/max seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

from node.sim import Block
from node.radio.sim_air import hops


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def run(preset: str, alerts: int, nodes: int, loss: float, seed: int, deadline: float, rest: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        block = Block(Path(tmp), nodes, "random", loss=loss, preset=preset, seed=seed,
                      overrides={"alerts.merge_window": 1.0}).start()
        try:
            distance = hops(block.air.links, 1)
            far = max(distance.items(), key=lambda kv: kv[1])[0]
            block.scheduler.run_for(300)   # supervision settles
            to_far, to_all, delivered_all = [], [], 0
            wall = time.monotonic()
            for _ in range(alerts):
                alert = block.nodes[1].report()
                t0 = block.scheduler.now()
                done = block.scheduler.run_until_true(
                    lambda: all(n.store.get_alert(alert.id) for n in block.nodes.values()), limit=deadline, step=0.1)
                got = block.nodes[far].store.get_alert(alert.id)
                if got is not None:
                    to_far.append(got.opened_at - block.clock() + block.scheduler.now() - t0)
                if done is not None:
                    delivered_all += 1
                    to_all.append(done - t0)
                block.nodes[1].act("cancel", alert.id)
                block.scheduler.run_for(rest)
            wall = time.monotonic() - wall
            util = max(block.air.utilisation(i, 3600) for i in block.nodes)
        finally:
            block.stop()
    return {"preset": preset, "nodes": nodes, "hops_to_farthest": distance[far], "loss": loss, "alerts": alerts,
            "delivered_ratio": delivered_all / alerts, "farthest_p50_s": percentile(to_far, 0.5),
            "farthest_p95_s": percentile(to_far, 0.95), "farthest_max_s": max(to_far, default=float("nan")),
            "all_nodes_p95_s": percentile(to_all, 0.95), "busiest_utilisation_last_hour": util,
            "wall_s": round(wall, 1)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--presets", default="MEDIUM_FAST,LONG_FAST")
    parser.add_argument("--deadline", type=float, default=600.0, help="simulated seconds before an alert counts as lost")
    parser.add_argument("--rest", type=float, default=60.0, help="simulated seconds between alerts")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    try:
        rows = [run(p, args.alerts, args.nodes, args.loss, args.seed, args.deadline, args.rest)
                for p in args.presets.split(",")]
    finally:
        logging.disable(logging.NOTSET)
    print(f"{'preset':12} {'nodes':>5} {'hops':>4} {'alerts':>6} {'delivered':>9} {'p50 s':>6} {'p95 s':>6} "
          f"{'max s':>6} {'util':>5}")
    for r in rows:
        print(f"{r['preset']:12} {r['nodes']:5d} {r['hops_to_farthest']:4d} {r['alerts']:6d} "
              f"{r['delivered_ratio']:9.1%} {r['farthest_p50_s']:6.2f} {r['farthest_p95_s']:6.2f} "
              f"{r['farthest_max_s']:6.2f} {r['busiest_utilisation_last_hour']:5.1%}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
