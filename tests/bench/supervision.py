"""Supervision benchmark (P4): heartbeat airtime, time to TROUBLE, and false TROUBLE, over a simulated week.

    .venv/bin/python tests/bench/supervision.py                  # 30 nodes, a simulated week
    .venv/bin/python tests/bench/supervision.py --days 1         # quicker

Runs the real ``node.supervision.Supervisor`` of every node on the simulated air
(collisions, path loss, 10% frame loss), with heartbeat frames of their real size,
but without signatures or databases, so a week takes minutes. Counts a false
TROUBLE each time a node would have shown a live building as silent, and times
how long every node takes to show a building silent after it stops.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from node.protocol import supervision, wire
from node.daemon.liveness import VERDICT_JITTER
from node.radio.sim_air import Scheduler, SimAir, hops


CHECK = 5.0  # seconds between supervision checks in this benchmark (the daemon checks every second)


class Episodes:
    """False TROUBLE counted per building: the SILENT verdicts about it while it was alive,
    several within ``merge`` seconds counting once."""

    def __init__(self, merge: float):
        self.merge = merge
        self.last: dict[int, float] = {}
        self.count = 0
        self.active = True

    def saw(self, subject: int, at: float) -> None:
        if not self.active:
            return
        if at - self.last.get(subject, -1e18) > self.merge:
            self.count += 1
        self.last[subject] = at


class Peer:
    """One node's supervision, heartbeats and all, without the rest of the daemon."""

    def __init__(self, air: SimAir, me: int, members: list[int], interval: float, period: float,
                 episodes: Episodes):
        self.episodes = episodes
        self.air, self.me, self.interval = air, me, interval
        self.sup = supervision.Supervisor(me, members, period=period, now=0.0, unit=supervision.age_unit(air.preset))
        self.radio = air.radios[me]
        self.radio.on_packet = self.heard
        self.alive = True
        self.airtime = supervision.heartbeat_airtime(air.preset, len(members))
        self.phase = air.rng.uniform(0.0, 1.0)   # the daemon ticks once a second, at its own phase
        self.generation = 0
        self.next_beat = 0.0
        self.schedule_beat(air.rng.uniform(0, interval))
        self.last_early = -1e9
        self.last_poll = -1e9
        self.verdicts_due: dict[int, float] = {}
        self.polls = 0
        self.heartbeats = 0
        self.verdicts_sent = 0
        self.relays: dict = {}
        air.scheduler.at(air.rng.uniform(0, CHECK), self.tick)

    def tick(self) -> None:
        """Like the daemon's tick (every CHECK seconds here): verdicts when due."""
        if not self.alive:
            return
        now = self.air.scheduler.now()
        if self.sup.wants_poll(now) and now - self.last_poll >= self.sup.period / supervision.POLLS:
            self.last_poll = now
            self.polls += 1
            self.beat_early(now)
        due_now = self.sup.due_verdicts(now)
        self.verdicts_due = {n: d for n, d in self.verdicts_due.items() if n in {node for node, _ in due_now}}
        for node, last in due_now:
            # The daemon's random wait before a verdict (on top of this benchmark's CHECK-second ticks).
            due = self.verdicts_due.setdefault(node, now + self.air.rng.uniform(0.0, VERDICT_JITTER))
            if now < due:
                continue
            del self.verdicts_due[node]
            self.sup.verdict(node, last)   # once per outage, and heard back by flooding neighbours
            self.verdicts_sent += 1
            size = wire.frame_size(wire.FrameType.SILENT)
            # subject, seconds silent, then the sender and its count: a frame's (origin, counter)
            verdict = (bytes([0xFF, node]) + int(min(now - last, 0xFFFF)).to_bytes(2, "big")
                       + bytes([self.me]) + self.verdicts_sent.to_bytes(2, "big") + bytes(size - 7))
            self.radio.emit(verdict)
            # and once more, flooded again, a few seconds later, as the daemon does
            self.air.scheduler.after(self.air.rng.uniform(2.0, 6.0),
                                     lambda verdict=verdict: self.alive and self.radio.emit(verdict))
            if self.episodes is not None:
                self.episodes.saw(node, now) if self.air.radios[node].plugged else None
        self.air.scheduler.after(CHECK, self.tick)

    def schedule_beat(self, when: float) -> None:
        """The next heartbeat goes out at the first of this node's once-a-second ticks from ``when``."""
        self.next_beat = when
        self.generation += 1
        generation = self.generation
        tick = math.ceil(when - self.phase - 1e-9) + self.phase
        self.air.scheduler.at(max(tick, self.air.scheduler.now()), lambda: self.beat(generation))

    def beat_early(self, now: float) -> None:
        """Bring the next heartbeat forward by the daemon's random early wait, if that is sooner."""
        early = now + supervision.early_delay(self.airtime, self.air.rng)
        if early < self.next_beat:
            self.schedule_beat(early)

    def beat(self, generation: int) -> None:
        if generation != self.generation or not self.alive:
            return
        now = self.air.scheduler.now()
        self.heartbeats += 1
        self.schedule_beat(now + self.interval * self.air.rng.uniform(0.75, 1.25))
        vector = self.sup.vector(now, 0)
        size = wire.frame_size(wire.FrameType.HEARTBEAT, len(vector))
        self.radio.emit(bytes([self.me]) + vector + bytes(size - 1 - len(vector)), hop_limit=0)

    def relay(self, key, payload: bytes) -> None:
        if self.alive:  # every node relays a verdict once: they are rare, and a hole is costly
            self.radio.emit(payload, hop_limit=0)

    def heard(self, packet) -> None:
        if not self.alive:
            return
        now = self.air.scheduler.now()
        if packet.payload[0] == 0xFF:   # a SILENT verdict
            subject = packet.payload[1]
            key = packet.payload[4:7]   # the verdict's sender and count
            if key in self.relays:
                self.relays[key] += 1    # a copy from another neighbour
                return
            self.sup.verdict(subject, now - int.from_bytes(packet.payload[2:4], "big"))
            # Relay it to neighbours too, as the daemon does, unless two of them do first.
            self.relays[key] = 0
            self.air.scheduler.after(self.air.rng.uniform(0.3, 2.5), lambda: self.relay(key, packet.payload))
            return
        sender = packet.payload[0]
        vector = packet.payload[1:1 + len(self.sup.members)]
        self.sup.heard(sender, now, 0)
        self.sup.merge(vector, now)
        if self.sup.stale_about_me(vector, self.interval) and now - self.last_early > min(self.interval / 2, self.sup.period / supervision.POLLS):
            self.last_early = now
            self.beat_early(now)



def run(n: int, days: float, loss: float, preset: str, seed: int, period: float, budget: float) -> dict:
    air = SimAir(n, "random", loss=loss, preset=preset, seed=seed, scheduler=Scheduler())
    members = sorted(air.radios)
    airtime = supervision.heartbeat_airtime(preset, n)
    period = supervision.effective_period(period, preset, budget)   # as the daemon does: longer on slow presets
    episodes = Episodes(merge=2 * period)
    # Each node sizes its heartbeat interval to the neighbours it hears, as the daemon does.
    peers = {i: Peer(air, i, members, supervision.heartbeat_interval(airtime, neighbours=len(air.links[i]),
                                                                     budget=budget, period=period),
                     period, episodes) for i in members}
    horizon = days * 86400.0
    warmup = 2 * period
    air.scheduler.run_until(warmup)
    episodes.count = 0
    t0 = time.monotonic()
    air.scheduler.run_until(horizon)
    wall = time.monotonic() - t0
    util = [air.utilisation(i, 3600.0) for i in members]
    episodes.active = False
    # Time to TROUBLE: stop the node furthest from node 1 and see when each other node shows it silent.
    victim = max(hops(air.links, 1).items(), key=lambda kv: kv[1])[0]
    peers[victim].alive = False
    air.radios[victim].plugged = False
    stopped = air.scheduler.now()
    detect: dict[int, float] = {}
    step = 1.0
    while len(detect) < n - 1 and air.scheduler.now() - stopped < 4 * period:
        air.scheduler.run_for(step)
        now = air.scheduler.now()
        for i, p in peers.items():
            if i != victim and i not in detect and p.sup.status(victim, now) == "silent":
                detect[i] = now - stopped
    node_weeks = n * (horizon - warmup) / (7 * 86400.0)
    return {"nodes": n, "preset": preset, "period_s": period, "loss": loss, "simulated_days": days, "wall_s": round(wall, 1),
            "heartbeat_interval_s": round(statistics.mean(p.interval for p in peers.values()), 1), "heartbeat_airtime_s": round(airtime, 3),
            "utilisation_mean": statistics.mean(util), "utilisation_max": max(util),
            "false_trouble_per_node_week": episodes.count / node_weeks, "false_trouble_episodes": episodes.count,
            "verdicts_sent": sum(p.verdicts_sent for p in peers.values()),
            "polls_per_node_day": sum(p.polls for p in peers.values()) / n / days,
            "time_to_trouble_max_s": max(detect.values()) if detect else math.inf,
            "time_to_trouble_median_s": statistics.median(detect.values()) if detect else math.inf,
            "detected_by": len(detect), "diameter_hops": max(hops(air.links, 1).values())}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=30)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--preset", default="MEDIUM_FAST")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--period", type=float, default=180.0)
    parser.add_argument("--budget", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    row = run(args.nodes, args.days, args.loss, args.preset, args.seed, args.period, args.budget)
    for key, value in row.items():
        print(f"{key:30} {value:.4g}" if isinstance(value, float) else f"{key:30} {value}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main()
