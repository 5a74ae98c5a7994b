"""P10: a middle node's radio gone for 5 minutes during alerts, in a line and in the 30-node block.

    .venv/bin/python tests/bench/outage.py                        # a 5-node line and the 30-node block, MEDIUM_FAST
    .venv/bin/python tests/bench/outage.py --kinds line --preset LONG_FAST

Complete nodes on the simulated air, on virtual time, 10% loss. After the block settles,
the radio of the node in the middle of the shortest path from node 1 to the node furthest
from it is unplugged for ``--outage`` seconds. Meanwhile three alerts are raised: at node 1,
at the far node and at the middle node itself (its radio gone), evenly spread over the
outage, and left active. Measured, looking once a simulated second:

- healthy buildings shown silent: buildings other than the one whose radio is gone that any
  node's supervision shows silent: during the outage (the most at one moment and all
  distinct ones, on nodes other than the deaf one) and after the return (on any node, the
  deaf one too, and until when); 2 minutes after the return and at the end (``--after``)
  every building is healthy, the one that was gone too, so any shown silent counts;
- after the return: seconds until every node holds every alert raised meanwhile, and until
  every node's coverage of each of them shows every building (target: 2 minutes).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
from pathlib import Path

if str(Path(__file__).parent) not in sys.path:   # plain_flood, also when the suite loads this file by path
    sys.path.insert(0, str(Path(__file__).parent))

from plain_flood import seconds

from node.protocol.alerts import State
from node.radio.sim_air import hops
from node.sim import Block

SETTLE = 600.0   # simulated seconds for supervision to settle before the outage
LOOK = 1.0       # seconds between looks at the stores and the supervision


def shortest_path(links, a: int, b: int) -> list[int]:
    parent, todo = {a: a}, [a]
    while todo and b not in parent:
        nxt = []
        for x in todo:
            for y in sorted(links[x]):
                if y not in parent:
                    parent[y] = x
                    nxt.append(y)
        todo = nxt
    path = [b]
    while path[-1] != a:
        path.append(parent[path[-1]])
    return path[::-1]


def run(kind: str, nodes: int, preset: str, loss: float, seed: int, outage: float, after: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        block = Block(Path(tmp), nodes, kind, loss=loss, preset=preset, seed=seed,
                      overrides={"alerts.merge_window": 1.0}).start()
        try:
            distance = hops(block.air.links, 1)
            far = max(distance.items(), key=lambda kv: kv[1])[0]
            path = shortest_path(block.air.links, 1, far)
            middle = path[len(path) // 2]
            sched = block.scheduler
            sched.run_for(SETTLE)

            def silent_on_any(exclude_viewer: int | None = None) -> set[int]:
                now = block.clock()
                return set().union(*(n.supervisor.silent(now) for i, n in block.nodes.items() if i != exclude_viewer))

            radio = block.air.radios[middle]
            out_at = sched.now()
            radio.plugged = False
            origins = [1, far, middle]
            raise_at = [out_at + outage * (k + 1) / (len(origins) + 1) for k in range(len(origins))]
            raised: list[str] = []
            most_at_once, ever, middle_seen_silent_by = 0, set(), set()
            while sched.now() < out_at + outage:
                while len(raised) < len(origins) and sched.now() >= raise_at[len(raised)]:
                    raised.append(block.nodes[origins[len(raised)]].report().id)
                sched.run_for(LOOK)
                # The outaged node's own view is of a deaf radio (and shows TROUBLE (radio)): not counted here.
                wrong = silent_on_any(exclude_viewer=middle) - {middle}
                most_at_once = max(most_at_once, len(wrong))
                ever |= wrong
                middle_seen_silent_by |= {i for i, n in block.nodes.items()
                                          if middle in n.supervisor.silent(block.clock())}
            radio.plugged = True
            back = sched.now()
            holds_all = coverage_all = None
            silent_after_2min = None
            silent_after_ever: set[int] = set()
            last_silent = middle_last_silent = None
            viewers: set[int] = set()    # the nodes that showed a healthy building silent after the return
            while sched.now() < back + after:
                sched.run_for(LOOK)
                t = sched.now() - back
                wrong = silent_on_any()
                silent_after_ever |= wrong - {middle}
                viewers |= {i for i, n in block.nodes.items() if n.supervisor.silent(block.clock()) - {middle}}
                if wrong - {middle}:
                    last_silent = t
                if middle in wrong:
                    middle_last_silent = t
                if silent_after_2min is None and t >= 120.0:
                    silent_after_2min = sorted(wrong)
                if holds_all is None and all(n.store.get_alert(a) is not None for a in raised for n in block.nodes.values()):
                    holds_all = t
                if holds_all is not None and coverage_all is None and all(
                        n.store.coverage(a, State.REPORTED)[0] == set(block.nodes)
                        for a in raised for n in block.nodes.values()):
                    coverage_all = t
            silent_at_end = sorted(silent_on_any())
            # What is still wrong at the end, per alert raised meanwhile (reporter-counter): who lacks it,
            # and on how many nodes its coverage still misses a building.
            lacking = {a: [i for i, n in block.nodes.items() if n.store.get_alert(a) is None] for a in raised}
            short = {a: sum(n.store.coverage(a, State.REPORTED)[0] != set(block.nodes) for n in block.nodes.values())
                     for a in raised}
        finally:
            block.stop()
    return {"kind": kind, "nodes": nodes, "preset": preset, "loss": loss, "seed": seed, "middle": middle,
            "hops_to_farthest": distance[far], "outage_s": outage, "after_s": after, "alerts_meanwhile": len(raised),
            "healthy_silent_most_at_once": most_at_once, "healthy_silent_during": sorted(ever),
            "outaged_shown_silent_by": len(middle_seen_silent_by),
            "silent_2min_after_return": silent_after_2min if silent_after_2min is not None else [],
            "silent_after_return_ever": sorted(silent_after_ever), "silent_at_end": silent_at_end,
            "silent_after_return_shown_by": sorted(viewers),
            "last_shown_silent_after_return_s": 0.0 if last_silent is None else last_silent,
            "outaged_shown_silent_after_return_until_s": 0.0 if middle_last_silent is None else middle_last_silent,
            "holds_all_after_return_s": math.inf if holds_all is None else holds_all,
            "coverage_complete_after_return_s": math.inf if coverage_all is None else coverage_all,
            "lacking_at_end": lacking, "coverage_short_on_at_end": short}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="line,random", help="line (5 nodes) and/or random (the 30-node block)")
    parser.add_argument("--line-nodes", type=int, default=5)
    parser.add_argument("--nodes", type=int, default=30, help="nodes in the random block")
    parser.add_argument("--preset", default="MEDIUM_FAST")
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--outage", type=float, default=300.0, help="seconds the middle node's radio is gone")
    parser.add_argument("--after", type=float, default=900.0, help="seconds watched after the radio's return")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    try:
        rows = [run(kind, args.line_nodes if kind == "line" else args.nodes, args.preset, args.loss, args.seed,
                    args.outage, args.after) for kind in args.kinds.split(",")]
    finally:
        logging.disable(logging.NOTSET)
    print(f"{'block':8} {'nodes':>5} {'mid':>3} {'alerts':>6} {'healthy silent: at once':>23} {'distinct':>8} "
          f"{'after return':>12} {'until':>6} {'at +2 min':>9} {'at end':>6} {'all hold':>8} {'coverage':>8}")
    for r in rows:
        print(f"{r['kind']:8} {r['nodes']:5d} {r['middle']:3d} {r['alerts_meanwhile']:6d} "
              f"{r['healthy_silent_most_at_once']:23d} {len(r['healthy_silent_during']):8d} "
              f"{len(r['silent_after_return_ever']):12d} {seconds(r['last_shown_silent_after_return_s'])} "
              f"{len(r['silent_2min_after_return']):9d} "
              f"{len(r['silent_at_end']):6d} {seconds(r['holds_all_after_return_s'], 8)} "
              f"{seconds(r['coverage_complete_after_return_s'], 8)}")
    for r in rows:
        print(f"{r['kind']}: after the return, healthy buildings {r['silent_after_return_ever'] or 'none'} were shown "
              f"silent, by nodes {r['silent_after_return_shown_by'] or 'none'}")
        print(f"{r['kind']}: at the end, alert: nodes without it / nodes whose coverage misses a building: "
              + ", ".join(f"{a}: {r['lacking_at_end'][a] or 'none'} / {r['coverage_short_on_at_end'][a]}"
                          for a in r["lacking_at_end"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
