"""Neighborhood propagation (P13): a raid confirmed on one block, to NEARBY on every node of the others.

    .venv/bin/python tests/bench/neighborhood.py                              # 10 blocks x 30 nodes, 10 raids
    .venv/bin/python tests/bench/neighborhood.py --blocks 3 --nodes 10 --raids 5
    .venv/bin/python tests/bench/neighborhood.py --blocks 2 --nodes 3 --raids 1   # the smoke size

``node.sim.Neighborhood``: B blocks of N nodes, each block a simulated LoRa mesh (sim air,
MEDIUM_FAST, ``--topology`` random as P3, seeded), node 1 of each its bridge node running the
real bridge (paho-mqtt) to a real Mosquitto on loopback; every other block is a neighbor. Raids
on random blocks (seeded): a random node holds its button, another confirms; then the reporter
gives the all clear. Measured for each raid, from CONFIRMED at the origin (the confirming
node's event time) to:

- **in-block**: CONFIRMED taken on every node of the origin block (the slowest node's event);
- **neighbors**: NEARBY (confirmed) kept on every node of every other block (the slowest
  node's ``nearby`` row), through the origin's bridge node, the broker, each block's bridge
  node and its own mesh; and the same for the ALL CLEAR.

**Time bases.** The broker path is real: it runs on the wall clock. So the blocks run at
``--scale 1`` (one simulated second per wall second) by default, and every timestamp a node
stores (its block's clock) is converted to the process's monotonic clock through that block's
own clock (``Clocks``: each block's clock is ``offset + scale * monotonic``), so all blocks'
times are on one time base. A node's time is when its daemon took the frame, so a sim that
falls behind (2 cores running hundreds of nodes in one process) shows up in the figures;
``sim lag`` is how late the blocks' simulated events ran (p95), to judge that.

Only loopback traffic; the figures are printed and returned (``--json`` keeps them).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.protocol.alerts import State  # noqa: E402
from node.protocol.neighborhood import code as block_code  # noqa: E402
from node.sim import Neighborhood  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def until(predicate: Callable[[], object], timeout: float, step: float = 0.5) -> object:
    """Poll ``predicate`` (wall clock) until it is true or ``timeout`` passed; returns its last value."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= end:
            return value
        time.sleep(step)


class Clocks:
    """Each block's clock to the process's monotonic clock: a block's clock is ``offset + scale * monotonic``."""

    def __init__(self, hood: Neighborhood):
        self.scale = {b: block.scheduler.scale for b, block in hood.blocks.items()}
        self.offset = {}
        for b, block in hood.blocks.items():
            before = time.monotonic()
            now = block.clock()
            after = time.monotonic()
            self.offset[b] = now - self.scale[b] * (before + after) / 2

    def wall(self, b: int, t: float) -> float:
        return (t - self.offset[b]) / self.scale[b]


class Lag:
    """How late each block's simulated events run (seconds, wall): an event at each whole second."""

    def __init__(self, hood: Neighborhood):
        self.samples: list[float] = []
        for block in hood.blocks.values():
            scheduler = block.scheduler
            self._probe(scheduler, scheduler.now() + 1.0)

    def _probe(self, scheduler, when: float) -> None:
        def run() -> None:
            self.samples.append((scheduler.now() - when) / scheduler.scale)
            self._probe(scheduler, when + 1.0)
        scheduler.at(when, run)

    def p95(self) -> float:
        return percentile(self.samples, 0.95)


# -- reading the nodes' stores (under each node's lock: the connection is its daemon's) ---------------

def query(node, sql: str, args: list) -> list:
    with node.lock:
        return node.store.db.execute(sql, args).fetchall()


def event_at(node, alert: str, state: State) -> float | None:
    """When ``node`` took ``state`` of ``alert`` (its block's clock), or None."""
    rows = query(node, "SELECT min(received_at) FROM events WHERE alert_id = ? AND state = ? "
                       "AND outcome IN ('new', 'changed')", [alert, int(state)])
    return rows[0][0]


def nearby_at(node, code: int, reporter: int, counter: int, state: State) -> float | None:
    rows = query(node, "SELECT received_at FROM nearby WHERE block_code = ? AND reporter = ? AND counter = ? "
                       "AND state = ?", [code, reporter, counter, int(state)])
    return rows[0][0] if rows else None


def bridges_up(hood: Neighborhood, timeout: float = 60.0) -> bool:
    return bool(until(lambda: all(s["link"] == "up" for b in hood.blocks for s in hood.link_state(b)), timeout))


# -- raising, confirming and clearing a raid ----------------------------------------------------------

class RaidError(RuntimeError):
    pass


def raise_raid(hood: Neighborhood, b: int, reporter: int, confirmer: int, *, timeout: float = 60.0) -> dict:
    """Node ``reporter`` of block b holds its button; node ``confirmer`` confirms the report once it has it."""
    block = hood.blocks[b]
    node = block.nodes[reporter]
    before = {a.id for a in _active(node)}
    block.hold(reporter, block.files.configs[reporter - 1]["hardware.hold_time"] + 0.5)
    new = until(lambda: [a.id for a in _active(node) if a.id not in before], timeout, step=0.1)
    if not new:
        raise RaidError(f"block {b} node {reporter}: no report after holding its button")
    alert = new[0]
    if not until(lambda: event_at(block.nodes[confirmer], alert, State.REPORTED) is not None, timeout, step=0.1):
        raise RaidError(f"block {b} node {confirmer} never took report {alert}")
    block.nodes[confirmer].act("confirm", alert)
    at = event_at(block.nodes[confirmer], alert, State.CONFIRMED)
    r, c = (int(x) for x in alert.split("-"))
    return {"block": b, "alert": alert, "reporter": r, "counter": c, "confirmer": confirmer, "confirmed_at": at}


def clear_raid(hood: Neighborhood, raid: dict, node: int) -> float:
    """Node ``node`` of the raid's block gives the all clear; returns its event time (block clock)."""
    target = hood.blocks[raid["block"]].nodes[node]
    if not until(lambda: event_at(target, raid["alert"], State.CONFIRMED) is not None, 60.0, step=0.1):
        raise RaidError(f"block {raid['block']} node {node} never took {raid['alert']} confirmed")
    target.act("all_clear", raid["alert"])
    return event_at(target, raid["alert"], State.ALL_CLEAR)


def _active(node) -> list:
    with node.lock:
        return node.store.active_alerts()


def spread(hood: Neighborhood, clocks: Clocks, raid: dict, state: State, since: float, *,
           timeout: float) -> dict:
    """From ``since`` (block clock of the origin) to ``state`` on every node of the origin block and
    NEARBY ``state`` on every node of every other block: the slowest node of each, in seconds."""
    origin = raid["block"]
    code = block_code(hood.blocks[origin].name)
    t0 = clocks.wall(origin, since)
    own: dict[int, float] = {}
    far: dict[tuple[int, int], float] = {}

    def look() -> bool:
        for i, node in hood.blocks[origin].nodes.items():
            if i not in own and (t := event_at(node, raid["alert"], state)) is not None:
                own[i] = clocks.wall(origin, t) - t0
        for b, block in hood.blocks.items():
            if b == origin:
                continue
            for i, node in block.nodes.items():
                if (b, i) not in far and (t := nearby_at(node, code, raid["reporter"], raid["counter"], state)):
                    far[(b, i)] = clocks.wall(b, t) - t0
        n = len(hood.blocks[origin].nodes)
        return len(own) == n and len(far) == sum(len(bl.nodes) for k, bl in hood.blocks.items() if k != origin)

    complete = bool(until(look, timeout, step=1.0))
    blocks = {}
    for (b, i), t in far.items():
        blocks[b] = max(blocks.get(b, 0.0), t)
    bridge = hood.bridge_nodes[0]
    return {"complete": complete, "in_block_s": max(own.values()) if len(own) == len(hood.blocks[origin].nodes)
            else float("inf"), "nodes": len(far), "per_block_s": blocks,
            # where the time goes: the origin's bridge node took the state; each neighbor's bridge node kept its NEARBY
            "origin_bridge_s": own.get(bridge, float("inf")),
            "neighbor_bridges_s": [t for (b, i), t in far.items() if i == bridge],
            # the broker path alone: the origin's bridge node took it -> a neighbor's bridge node kept its NEARBY
            "bridge_to_bridge_s": [t - own[bridge] for (b, i), t in far.items() if i == bridge and bridge in own],
            "missing": sorted(
                (b, i) for b, bl in hood.blocks.items() if b != origin for i in bl.nodes if (b, i) not in far)}


def run(blocks: int, nodes: int, raids: int, *, seed: int, scale: float, topology: str, timeout: float,
        root: Path) -> dict:
    started = time.monotonic()
    hood = Neighborhood(root, blocks, nodes, topology=topology, preset="MEDIUM_FAST", seed=seed, scale=scale)
    try:
        hood.start()
        start_s = time.monotonic() - started
        if not bridges_up(hood):
            raise RaidError(f"bridges not up: {[hood.link_state(b) for b in hood.blocks]}")
        clocks, lag = Clocks(hood), Lag(hood)
        rng = random.Random(seed)
        measured = []
        for _ in range(raids):
            b = rng.randint(1, blocks)
            reporter, confirmer = rng.sample(range(1, nodes + 1), 2)
            raid = raise_raid(hood, b, reporter, confirmer)
            confirmed = spread(hood, clocks, raid, State.CONFIRMED, raid["confirmed_at"], timeout=timeout)
            cleared_at = clear_raid(hood, raid, reporter)
            cleared = spread(hood, clocks, raid, State.ALL_CLEAR, cleared_at, timeout=timeout)
            measured.append({"raid": raid, "confirmed": confirmed, "all_clear": cleared})
            print(f"  raid {raid['alert']} on block {b}: in-block {confirmed['in_block_s']:.1f} s, neighbors "
                  f"{max(confirmed['per_block_s'].values(), default=float('inf')):.1f} s, all clear "
                  f"{max(cleared['per_block_s'].values(), default=float('inf')):.1f} s", flush=True)
        return summarize(blocks, nodes, scale, topology, measured, lag, start_s, time.monotonic() - started)
    finally:
        hood.stop()


def summarize(blocks, nodes, scale, topology, measured, lag, start_s, total_s) -> dict:
    def stats(values: list[float], prefix: str) -> dict:
        return {f"{prefix}_p50_s": round(percentile(values, 0.5), 2),
                f"{prefix}_p95_s": round(percentile(values, 0.95), 2),
                f"{prefix}_max_s": round(max(values), 2) if values else float("nan")}

    def every(state: str, key: str) -> list[float]:
        return [m[state][key] for m in measured]

    neighbor = [t for m in measured for t in m["confirmed"]["per_block_s"].values()]
    cleared = [t for m in measured for t in m["all_clear"]["per_block_s"].values()]
    expected = len(measured) * (blocks - 1) * nodes
    got = sum(m["confirmed"]["nodes"] for m in measured)
    return {"blocks": blocks, "nodes": nodes, "raids": len(measured), "scale": scale, "topology": topology,
            "neighbor_nodes_expected": expected, "neighbor_nodes_nearby": got,
            "delivered_ratio": round(got / expected, 4) if expected else float("nan"),
            "all_clear_delivered_ratio": round(sum(m["all_clear"]["nodes"] for m in measured) / expected, 4)
            if expected else float("nan"),
            "missing": [m["confirmed"]["missing"] for m in measured if m["confirmed"]["missing"]],
            **stats(every("confirmed", "in_block_s"), "in_block"),
            **stats(neighbor, "neighbor_block"), **stats(cleared, "all_clear_neighbor_block"),
            **stats([m["confirmed"]["origin_bridge_s"] for m in measured], "origin_bridge"),
            **stats([t for m in measured for t in m["confirmed"]["neighbor_bridges_s"]], "neighbor_bridge"),
            **stats([t for m in measured for t in m["confirmed"]["bridge_to_bridge_s"]], "bridge_to_bridge"),
            "sim_lag_p95_s": round(lag.p95(), 3), "start_s": round(start_s, 1), "run_s": round(total_s, 1)}


def table(row: dict) -> str:
    return "\n".join([
        f"{row['blocks']} blocks x {row['nodes']} nodes ({row['topology']}, MEDIUM_FAST, scale {row['scale']:g}), "
        f"{row['raids']} raids, started in {row['start_s']} s, run {row['run_s']} s, sim lag p95 {row['sim_lag_p95_s']} s",
        f"{'from CONFIRMED at the origin to':<52} {'p50':>7} {'p95':>7} {'max':>7}",
        f"{'CONFIRMED on every node of the origin block':<52} {row['in_block_p50_s']:>6.1f}s {row['in_block_p95_s']:>6.1f}s "
        f"{row['in_block_max_s']:>6.1f}s",
        f"{'NEARBY on every node of a neighbor block':<52} {row['neighbor_block_p50_s']:>6.1f}s "
        f"{row['neighbor_block_p95_s']:>6.1f}s {row['neighbor_block_max_s']:>6.1f}s",
        f"{'  of which: the bridge node of the origin has it':<52} {row['origin_bridge_p50_s']:>6.1f}s "
        f"{row['origin_bridge_p95_s']:>6.1f}s {row['origin_bridge_max_s']:>6.1f}s",
        f"{'  the bridge node of a neighbor has the NEARBY':<52} {row['neighbor_bridge_p50_s']:>6.1f}s "
        f"{row['neighbor_bridge_p95_s']:>6.1f}s {row['neighbor_bridge_max_s']:>6.1f}s",
        f"{'  bridge node to bridge node (the broker path)':<52} {row['bridge_to_bridge_p50_s']:>6.1f}s "
        f"{row['bridge_to_bridge_p95_s']:>6.1f}s {row['bridge_to_bridge_max_s']:>6.1f}s",
        f"{'(ALL CLEAR: from it to every node of a neighbor)':<52} {row['all_clear_neighbor_block_p50_s']:>6.1f}s "
        f"{row['all_clear_neighbor_block_p95_s']:>6.1f}s {row['all_clear_neighbor_block_max_s']:>6.1f}s",
        f"neighbor nodes with the NEARBY: {row['neighbor_nodes_nearby']}/{row['neighbor_nodes_expected']} "
        f"(all clear: {row['all_clear_delivered_ratio']:.0%})"])


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--nodes", type=int, default=30, help="nodes per block")
    parser.add_argument("--raids", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="simulated seconds per wall second (1: honest)")
    parser.add_argument("--topology", default="random", choices=("line", "grid", "random"))
    parser.add_argument("--timeout", type=float, default=180.0, help="wall seconds to wait for one state everywhere")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.blocks < 2 or args.nodes < 2:
        parser.error("at least 2 blocks of 2 nodes (a neighbor to reach, and a node to confirm)")
    with tempfile.TemporaryDirectory(prefix="bench-hood-") as tmp:
        row = run(args.blocks, args.nodes, args.raids, seed=args.seed, scale=args.scale, topology=args.topology,
                  timeout=args.timeout, root=Path(tmp))
    print(table(row))
    if args.json:
        args.json.write_text(json.dumps(row, indent=1, default=str))
    return [row]


if __name__ == "__main__":
    main(sys.argv[1:])
