"""Broker load: one Mosquitto serving a simulated neighborhood of many blocks.

    .venv/bin/python tests/bench/broker_load.py                         # 100 and 1,000 blocks, 60 s each
    .venv/bin/python tests/bench/broker_load.py --blocks 10 --seconds 3  # the smoke size
    .venv/bin/python tests/bench/broker_load.py --blocks 100 --rate 1    # a surge: one message a second per block

Each block is one MQTT connection, as its bridge node's is: it subscribes to
``silbato/<hood>/#`` at QoS 1 and publishes at QoS 1 its state changes (``--rate`` frames of
100 bytes per block per second, at random moments, seeded) and its roster (2 KiB, retained,
every ``--roster-every`` seconds). Everything a block publishes goes to every block: the
fan-out is blocks squared, which is what makes one broker run out.

The clients are a minimal MQTT 3.1.1 implementation on asyncio (paho's thread per client
would not fit a thousand on two cores), spread over ``--procs`` processes. Measured:
messages delivered per second, the broker's CPU (utime + stime of the mosquitto process,
from /proc/<pid>/stat, over the run), and the delivery latency (publish to arrival, on the
monotonic clock every process shares) p50/p95. Also the broker's CPU seconds per delivered
message, from which the delivery rate at which one core is full follows.

Only loopback traffic, bounded in count and time. ``--json`` keeps the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import resource
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from node.bridge.broker import LocalBroker  # noqa: E402

HOOD = "bench"
FRAME = 100      # bytes: a signed transition frame and its topic, about
ROSTER = 2048    # bytes: a block's signed roster of ~20 nodes


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class Client:
    """One block's connection: CONNECT, SUBSCRIBE silbato/<hood>/# (QoS 1), PUBLISH QoS 1, PUBACK what comes."""

    def __init__(self, block: int, port: int, stats: dict):
        self.block, self.port, self.stats = block, port, stats
        self.mid = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        body = _string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 120) + _string(f"bench-{self.block}")
        self.writer.write(b"\x10" + _length(len(body)) + body)
        body = struct.pack("!H", 1) + _string(f"silbato/{HOOD}/#") + b"\x01"
        self.writer.write(b"\x82" + _length(len(body)) + body)
        await self.writer.drain()
        self.subscribed = asyncio.Event()
        self.reading = asyncio.create_task(self.read())
        await self.subscribed.wait()

    async def read(self) -> None:
        reader, stats = self.reader, self.stats
        try:
            while True:
                head = await reader.readexactly(1)
                n, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    n |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(n) if n else b""
                kind = head[0] >> 4
                if kind == 3:  # PUBLISH
                    length = struct.unpack_from("!H", body)[0]
                    at = 2 + length
                    if head[0] & 0x06:  # QoS 1: acknowledge
                        self.writer.write(b"\x40\x02" + body[at:at + 2])
                        at += 2
                    sent = struct.unpack_from("!q", body, at)[0]
                    stats["received"] += 1
                    if not head[0] & 0x01:  # a retained copy's time is when it was first published
                        stats["latency"].append((time.monotonic_ns() - sent) / 1e9)
                elif kind == 9:
                    self.subscribed.set()
                elif kind == 4:
                    stats["acked"] += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass

    def publish(self, topic: str, size: int, retain: bool = False) -> None:
        self.mid = self.mid % 65535 + 1
        payload = struct.pack("!q", time.monotonic_ns()) + bytes(size - 8)
        body = _string(topic) + struct.pack("!H", self.mid) + payload
        self.writer.write(bytes([0x32 | (1 if retain else 0)]) + _length(len(body)) + body)
        self.stats["published"] += 1

    async def run(self, seconds: float, rate: float, roster_every: float, rng: random.Random, start: float) -> None:
        frames = f"silbato/{HOOD}/b{self.block}/frames"
        roster = f"silbato/{HOOD}/b{self.block}/roster"
        next_frame = start + (rng.expovariate(rate) if rate > 0 else float("inf"))
        next_roster = start + rng.uniform(0, roster_every)
        end = start + seconds
        while True:
            due = min(next_frame, next_roster)
            if due >= end:
                break
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if due == next_frame:
                self.publish(frames, FRAME)
                next_frame += rng.expovariate(rate)
            else:
                self.publish(roster, ROSTER, retain=True)
                next_roster += roster_every
            await self.writer.drain()


async def _clients(blocks: list[int], port: int, seconds: float, rate: float, roster_every: float, seed: int,
                   start_at: float, ready, go) -> dict:
    stats = {"received": 0, "published": 0, "acked": 0, "latency": []}
    clients = [Client(b, port, stats) for b in blocks]
    for i in range(0, len(clients), 50):  # connect in batches: a thousand at once fills the listen queue
        await asyncio.gather(*(c.connect() for c in clients[i:i + 50]))
    ready.set()
    await asyncio.get_running_loop().run_in_executor(None, go.wait)
    start = time.monotonic()
    await asyncio.gather(*(c.run(seconds, rate, roster_every, random.Random(seed * 100_003 + c.block), start)
                           for c in clients))
    await asyncio.sleep(min(5.0, max(1.0, seconds / 4)))  # the tail: deliveries still on their way
    for c in clients:
        c.writer.close()
        c.reading.cancel()
    stats["latency"] = stats["latency"][:: max(1, len(stats["latency"]) // 20000)]  # a sample is enough
    return stats


def _worker(blocks, port, seconds, rate, roster_every, seed, ready, go, out) -> None:
    _raise_files()
    out.put(asyncio.run(_clients(blocks, port, seconds, rate, roster_every, seed, 0.0, ready, go)))


def _raise_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def run(blocks: int, *, seconds: float, rate: float, roster_every: float, procs: int, seed: int = 1) -> dict:
    """One neighborhood of ``blocks`` blocks for ``seconds``; the figures."""
    _raise_files()  # mosquitto inherits it: a connection per block
    ctx = multiprocessing.get_context("fork")  # the module may be loaded from its path (the suite): not importable by name
    with tempfile.TemporaryDirectory(prefix="silbato-broker-load-") as root:
        broker = LocalBroker(Path(root), extra="allow_anonymous true\nmax_queued_messages 100000\n")
        broker.conf.parent.mkdir(parents=True, exist_ok=True)
        with broker:
            shares = [list(range(p, blocks, procs)) for p in range(procs) if p < blocks]
            out, go = ctx.Queue(), ctx.Event()
            readies = [ctx.Event() for _ in shares]
            workers = [ctx.Process(target=_worker, args=(share, broker.port, seconds, rate, roster_every, seed,
                                                         ready, go, out)) for share, ready in zip(shares, readies)]
            for w in workers:
                w.start()
            for ready in readies:
                if not ready.wait(300):
                    raise RuntimeError("the clients did not connect")
            cpu0, t0 = cpu_seconds(broker.pid), time.monotonic()
            go.set()
            results = [out.get(timeout=seconds + 600) for _ in workers]
            cpu1, t1 = cpu_seconds(broker.pid), time.monotonic()
            for w in workers:
                w.join(timeout=30)
    received = sum(r["received"] for r in results)
    published = sum(r["published"] for r in results)
    latency = [x for r in results for x in r["latency"]]
    busy = cpu1 - cpu0
    per_delivery = busy / received if received else float("nan")
    return {"blocks": blocks, "seconds": seconds, "rate_per_block": rate, "roster_every_s": roster_every,
            "published": published, "acked": sum(r["acked"] for r in results), "delivered": received,
            "expected": published * blocks, "delivered_per_s": received / seconds,
            "broker_cpu_pct": 100.0 * busy / (t1 - t0), "broker_cpu_us_per_delivery": per_delivery * 1e6,
            "one_core_full_at_per_s": 1.0 / per_delivery if received and per_delivery > 0 else float("inf"),
            "latency_p50_ms": percentile(latency, 0.5) * 1000, "latency_p95_ms": percentile(latency, 0.95) * 1000}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=1 / 60,
                        help="state-change frames per block per second (default: one a minute, a busy night)")
    parser.add_argument("--roster-every", type=float, default=600.0, help="seconds between a block's roster refreshes")
    parser.add_argument("--procs", type=int, default=2, help="client processes")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rows = []
    for blocks in args.blocks:
        row = run(blocks, seconds=args.seconds, rate=args.rate, roster_every=args.roster_every, procs=args.procs)
        rows.append(row)
        print(f"{blocks:5d} blocks: {row['published']} published, {row['delivered']} delivered "
              f"({row['delivered_per_s']:.0f}/s; {row['expected']} expected), broker CPU {row['broker_cpu_pct']:.1f}% "
              f"({row['broker_cpu_us_per_delivery']:.1f} us a delivery: one core full at "
              f"{row['one_core_full_at_per_s']:.0f} deliveries/s), latency p50 {row['latency_p50_ms']:.1f} ms "
              f"p95 {row['latency_p95_ms']:.1f} ms", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
