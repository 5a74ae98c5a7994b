"""Neighborhood outage (P14): a block's link, or the broker, down for 10 minutes while alerts happen.

    .venv/bin/python tests/bench/neighborhood_outage.py                     # 600 s, link and broker
    .venv/bin/python tests/bench/neighborhood_outage.py --kinds link --outage 60 --scale 3   # the smoke (20 s)

``node.sim.Neighborhood`` (``--blocks`` of ``--nodes``, MEDIUM_FAST, seeded, a real Mosquitto on
loopback). Three kinds of outage, ``--outage`` seconds of the blocks' clocks each:

- ``link``: block 1's bridge off the broker (``Neighborhood.link_down``: the bridge's network
  down; it disconnects and does not come back until ``link_up``);
- ``broker``: the Mosquitto process stopped (SIGTERM: it saves its sessions, as a broker with
  ``persistence true`` does) and started again on the same port and state;
- ``freeze``: the Mosquitto process frozen (SIGSTOP, then SIGCONT): connections stay open and
  nothing answers, as when the network between the bridges and the broker goes dead without a
  word; each bridge finds out by its MQTT keep-alive (30 s, wall clock), so only meaningful at
  ``--scale 1`` and with an outage of minutes.

Meanwhile raids are raised, confirmed and cleared on several blocks: on block 1 (its alerts
wait in its ``bridge_out``), and on blocks 2 and 3 (theirs wait in the broker's session for
block 1, or in their own ``bridge_out`` when the broker is down); one of each is cleared
during the outage, one stays confirmed. Then the link returns and we wait for every NEARBY.

Reported: **lost** (a (node, alert, state) of a neighbor block that never got its NEARBY row),
**duplicated** (the same (block, alert, state) twice anywhere: ``nearby`` rows on a node, NEARBY
frames a bridge node signed, frames a bridge node queued for the broker, i.e. ``bridge_out``
rows per frame), the copies the broker delivered twice and the daemon dropped as replays
(``neighborhood_drops`` ``replay``; allowed: QoS 1 is at least once), the TROUBLE
``neighborhood`` on the block(s) cut off (shown after how long, cleared how long after the
return), and the **catch-up**: from the return to each NEARBY row that had waited (p50/p95/max), on every node and on the bridge
nodes alone (the block has the news; its mesh then spreads it as any NEARBY).

Time bases: the outage and the catch-up are in wall seconds converted from the blocks' clocks
(``neighborhood.Clocks``); at ``--scale 1`` (the default, the honest run) simulated and wall
seconds are the same. ``--scale 3`` lets CI see a 60-simulated-second outage (past the 30 s after
which the TROUBLE shows) in 20 wall seconds; the broker path is still real time then, so its
share of the catch-up is measured as wall time, the LoRa share as simulated time divided by the scale.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.errors import FrameError  # noqa: E402
from node.protocol import wire  # noqa: E402
from node.protocol.alerts import State  # noqa: E402
from node.protocol.neighborhood import code as block_code  # noqa: E402
from node.sim import Neighborhood  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_neighborhood", Path(__file__).parent / "neighborhood.py")
hoodbench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(hoodbench)
percentile, until, query = hoodbench.percentile, hoodbench.until, hoodbench.query

CROSSING = (State.CONFIRMED, State.ALL_CLEAR)


def troubled(hood: Neighborhood, blocks: list[int]) -> bool:
    return all(s["trouble"].startswith("neighborhood link down") for b in blocks for s in hood.link_state(b))


def clear(hood: Neighborhood, blocks: list[int]) -> bool:
    return all(s["link"] == "up" and not s["trouble"] for b in blocks for s in hood.link_state(b))


def scenario(hood: Neighborhood, kind: str, outage: float, *, seed: int, catch_up: float = 120.0,
             settle: float = 100.0) -> dict:
    """Take the link (or the broker) down for ``outage`` seconds of the blocks' clocks, with raids
    meanwhile; bring it back; count what arrived. ``hood`` is started, its bridges up."""
    rng = random.Random(seed)
    clocks = hoodbench.Clocks(hood)
    scale = hood.blocks[1].scheduler.scale
    n = len(hood.blocks[1].nodes)
    cut = [1] if kind == "link" else list(hood.blocks)
    wall_outage = outage / scale
    # Raids during the outage: (fraction of the outage, block, action). Blocks 2 and 3 when there are.
    others = [b for b in hood.blocks if b != 1][:2]
    plan = [(0.15, 1, "raise"), (0.3, others[0], "raise"), (0.5, others[0], "clear"), (0.65, 1, "clear")]
    if len(others) > 1:
        plan.append((0.8, others[1], "raise"))
    raids: dict[int, dict] = {}
    wanted: list[tuple[dict, State]] = []
    down_at = time.monotonic()
    if kind == "link":
        hood.link_down(1)
    elif kind == "broker":
        hood.broker.stop()
    else:
        os.kill(hood.broker.pid, signal.SIGSTOP)
    trouble_after = None
    for fraction, b, action in plan:
        while time.monotonic() < down_at + fraction * wall_outage:
            if trouble_after is None and troubled(hood, cut):
                trouble_after = time.monotonic() - down_at
            time.sleep(0.2)
        if action == "raise":
            reporter, confirmer = rng.sample(range(1, n + 1), 2)
            raids[b] = hoodbench.raise_raid(hood, b, reporter, confirmer)
            wanted.append((raids[b], State.CONFIRMED))
        else:
            hoodbench.clear_raid(hood, raids[b], raids[b]["reporter"])
            wanted.append((raids[b], State.ALL_CLEAR))
    while time.monotonic() < down_at + wall_outage:
        if trouble_after is None and troubled(hood, cut):
            trouble_after = time.monotonic() - down_at
        time.sleep(0.2)
    if trouble_after is None and troubled(hood, cut):
        trouble_after = time.monotonic() - down_at
    up_at = time.monotonic()
    if kind == "link":
        hood.link_up(1)
    elif kind == "broker":
        hood.broker.start()
    else:
        os.kill(hood.broker.pid, signal.SIGCONT)
    cleared = until(lambda: clear(hood, cut), catch_up, step=0.2)
    trouble_cleared_after = time.monotonic() - up_at if cleared else None

    # Every (neighbor node, raid, state) must get its NEARBY row: wait for them.
    got: dict[tuple, float] = {}

    def look() -> bool:
        for raid, state in wanted:
            code = block_code(hood.blocks[raid["block"]].name)
            for b, block in hood.blocks.items():
                if b == raid["block"]:
                    continue
                for i, node in block.nodes.items():
                    key = (b, i, raid["alert"], raid["block"], int(state))
                    if key not in got and (t := hoodbench.nearby_at(node, code, raid["reporter"], raid["counter"],
                                                                    state)) is not None:
                        got[key] = clocks.wall(b, t)
        return len(got) == len(wanted) * (len(hood.blocks) - 1) * n

    until(look, catch_up, step=0.5)
    all_in = time.monotonic() - up_at
    # Let the repeats (NEARBY again 15-25 s and 60-90 s after) and any redelivery happen before counting.
    time.sleep(settle / scale)
    look()
    waited = [t - up_at for t in got.values() if t >= up_at]
    # the bridge nodes' own NEARBY: the block has the news (its mesh then spreads it, as any NEARBY)
    at_bridges = [t - up_at for (b, i, *_), t in got.items() if t >= up_at and i in hood.bridge_nodes]
    return {"kind": kind, "blocks": len(hood.blocks), "nodes": n, "outage_s": outage, "scale": scale,
            "outage_wall_s": round(up_at - down_at, 1),
            "alerts_meanwhile": len(wanted),
            "expected": len(wanted) * (len(hood.blocks) - 1) * n, "delivered": len(got),
            "lost": len(wanted) * (len(hood.blocks) - 1) * n - len(got),
            "during_outage": sum(1 for t in got.values() if t < up_at), "waited": len(waited),
            "catch_up_p50_s": round(percentile(waited, 0.5), 2), "catch_up_p95_s": round(percentile(waited, 0.95), 2),
            "catch_up_max_s": round(max(waited), 2) if waited else float("nan"),
            "catch_up_bridge_p50_s": round(percentile(at_bridges, 0.5), 2),
            "catch_up_bridge_max_s": round(max(at_bridges), 2) if at_bridges else float("nan"),
            "all_in_after_s": round(all_in, 1),
            **duplicates(hood),
            "trouble_shown_after_s": round(trouble_after, 1) if trouble_after is not None else None,
            "trouble_cleared_after_s": round(trouble_cleared_after, 1) if trouble_cleared_after is not None else None}


def duplicates(hood: Neighborhood) -> dict:
    """The same (block, alert, state) more than once, at each place it could be: see the module's docstring."""
    nearby_rows = signed = queued = replays = 0
    for block in hood.blocks.values():
        for i, node in block.nodes.items():
            nearby_rows += sum(c - 1 for (c,) in query(
                node, "SELECT count(*) FROM nearby GROUP BY block_code, reporter, counter, state", []))
        for i in hood.bridge_nodes:
            node = block.nodes[i]
            kinds = collections.Counter()
            for (frame,) in query(node, "SELECT frame FROM outbox", []):
                try:
                    decoded = wire.decode(bytes(frame), node.roster)
                except FrameError:
                    continue
                if isinstance(decoded, wire.NearbyFrame):
                    kinds[(decoded.block_code, decoded.alert_reporter, decoded.alert_counter, decoded.state)] += 1
            signed += sum(c - 1 for c in kinds.values())
            queued += sum(c - 1 for (c,) in query(
                node, "SELECT count(*) FROM bridge_out WHERE topic LIKE '%/frames' GROUP BY payload", []))
            replays += sum(c for (c,) in query(node, "SELECT count FROM neighborhood_drops WHERE reason = 'replay'", []))
    return {"duplicated": nearby_rows + signed + queued, "duplicated_nearby_rows": nearby_rows,
            "duplicated_nearby_signed": signed, "duplicated_bridge_out": queued, "redelivered_dropped_as_replay": replays}


def run(kind: str, blocks: int, nodes: int, outage: float, *, seed: int, scale: float, root: Path,
        settle: float = 100.0) -> dict:
    hood = Neighborhood(root, blocks, nodes, topology="random", preset="MEDIUM_FAST", seed=seed, scale=scale)
    try:
        hood.start()
        if not hoodbench.bridges_up(hood):
            raise hoodbench.RaidError(f"bridges not up: {[hood.link_state(b) for b in hood.blocks]}")
        return scenario(hood, kind, outage, seed=seed, settle=settle)
    finally:
        hood.stop()


def table(rows: list[dict]) -> str:
    lines = [f"{'outage':<28} {'alerts':>6} {'lost':>5} {'dup':>4} {'replays':>7} {'catch-up p50/p95/max':>22} "
             f"{'bridges p50/max':>16} {'TROUBLE shown / cleared':>24}"]
    for r in rows:
        what = f"{r['kind']} {r['outage_s']:g} s ({r['blocks']}x{r['nodes']}, x{r['scale']:g})"
        lines.append(f"{what:<28} {r['alerts_meanwhile']:>6} {r['lost']:>5} {r['duplicated']:>4} "
                     f"{r['redelivered_dropped_as_replay']:>7} "
                     f"{r['catch_up_p50_s']:>6.1f}/{r['catch_up_p95_s']:.1f}/{r['catch_up_max_s']:.1f} s "
                     f"{r['catch_up_bridge_p50_s']:>9.1f}/{r['catch_up_bridge_max_s']:.1f} s "
                     f"{str(r['trouble_shown_after_s']) + ' s':>11} / {str(r['trouble_cleared_after_s']) + ' s':>9}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="link,broker", help="comma-separated: link, broker, freeze")
    parser.add_argument("--outage", type=float, default=600.0, help="seconds of the blocks' clocks")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--nodes", type=int, default=5, help="nodes per block")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=float, default=1.0, help="simulated seconds per wall second (1: honest)")
    parser.add_argument("--settle", type=float, default=100.0,
                        help="simulated seconds to wait after the last NEARBY before counting (repeats, redelivery)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if any(k not in ("link", "broker", "freeze") for k in kinds):
        parser.error(f"--kinds: link, broker or freeze, not {args.kinds!r}")
    if args.blocks < 2 or args.nodes < 2:
        parser.error("at least 2 blocks of 2 nodes")
    rows = []
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="bench-hood-outage-") as tmp:
            rows.append(run(kind, args.blocks, args.nodes, args.outage, seed=args.seed, scale=args.scale,
                            root=Path(tmp), settle=args.settle))
        print(table(rows[-1:]), flush=True)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
