"""Web fan-out benchmark: many live pages on one node, as during a raid when every neighbor opens it.

    .venv/bin/python tests/bench/web_fanout.py                      # 200 live clients, 200 GET/s
    .venv/bin/python tests/bench/web_fanout.py --clients 20 --alerts 3 --seconds 2

Runs ``silbato web`` (waitress, ``web.live_clients`` = clients) as its own process on
127.0.0.1 over a node's real database, opens the live clients (server-sent events,
one connection each), then:

1. commits alert changes on the node and times each until every client has it
   (from just before the commit to the event's arrival);
2. sends page GETs at a fixed rate while the live clients stay connected, timing each
   from when it was due (so a queue shows up in the figures);
3. reads the web process's resident memory (now and peak).

Every live client and every page reader comes from its own loopback address
(127.1.x.y, 127.2.x.y), as phones on the building's Wi-Fi do: the page allows 32
connections and 120 requests a minute per address.

Prints the figures; ``--json`` keeps them. Only loopback traffic, bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

from node.protocol.alerts import Kind
from node.sim import Block


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_READERS = itertools.count()


def phone(net: int, i: int) -> str:
    """The ``i``-th loopback address of ``127.<net>.x.y``: one per simulated phone."""
    return f"127.{net}.{i // 250}.{i % 250 + 1}"


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


class LiveClient:
    """One page's event stream over a raw HTTP/1.0 connection (no chunking to undo)."""

    def __init__(self, port: int, address: str = "127.0.0.1"):
        self.port = port
        self.address = address
        self.version = ""
        self.arrivals: dict[str, float] = {}  # version -> monotonic time it arrived
        self.connected = asyncio.Event()

    async def run(self) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.address, 0))
        writer.write(b"GET /api/events HTTP/1.0\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        await writer.drain()
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"live client refused: {status!r}")
        try:
            event_id = ""
            while line := await reader.readline():
                if line.startswith(b"id: "):
                    event_id = line[4:].strip().decode()
                elif line == b"\n" and event_id:
                    self.arrivals[event_id] = time.monotonic()
                    self.version, event_id = event_id, ""
                    self.connected.set()
        finally:
            writer.close()


def get_load(port: int, rate: float, seconds: float, workers: int = 16) -> tuple[list[float], int]:
    """Open-loop GET / at ``rate`` per second; latency from when each request was due, and errors."""
    total = int(rate * seconds)
    start = time.monotonic() + 0.2
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    slots = iter(range(total))

    addresses = _READERS  # never one address twice in a run: the page counts a minute per address
    per_address = 100  # requests from one address, under the page's 120 a minute

    def connect() -> http.client.HTTPConnection:
        with lock:
            address = phone(2, next(addresses))
        return http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(address, 0))

    def worker() -> None:
        nonlocal errors
        conn, used = connect(), 0
        while True:
            with lock:
                i = next(slots, None)
            if i is None:
                break
            if used == per_address:
                conn.close()
                conn, used = connect(), 0
            used += 1
            due = start + i / rate
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                conn.request("GET", "/", headers={"Accept-Language": "es"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn, used = connect(), 0
            with lock:
                latencies.append(time.monotonic() - due)
                errors += not ok
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def start_web(block: Block, clients: int, port: int, root: Path) -> subprocess.Popen:
    cfg = block.files.configs[0]
    toml = root / "web.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                    f'[web]\nhost = "127.0.0.1"\nport = {port}\nlive_clients = {clients}\nstate_dir = "{root / "web"}"\n[log]\nlevel = "WARNING"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "web"], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("silbato web did not start")


async def fan_out(block: Block, port: int, clients: int, alerts: int) -> list[float]:
    """Commit ``alerts`` changes; per change, the latency to every client. Returns every client's latencies."""
    live = [LiveClient(port, phone(1, i)) for i in range(clients)]
    tasks = [asyncio.create_task(c.run()) for c in live]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in live)), timeout=60)
        node = block.nodes[1]
        latencies: list[float] = []
        alert_id = ""
        for k in range(alerts):
            before = {c.version for c in live}
            start = time.monotonic()
            if k % 2 == 0:
                alert_id = (await asyncio.to_thread(node.report, Kind.RAID)).id
            else:
                await asyncio.to_thread(node.act, "cancel", alert_id)
            deadline = time.monotonic() + 10
            while any(c.version in before for c in live) and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            missing = sum(c.version in before for c in live)
            if missing:
                raise RuntimeError(f"change {k}: {missing} of {clients} clients never got it")
            latencies += [c.arrivals[c.version] - start for c in live]
            await asyncio.sleep(0.3)
        return latencies
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="live pages (server-sent event streams)")
    parser.add_argument("--alerts", type=int, default=10, help="alert changes to time")
    parser.add_argument("--rate", type=float, default=200.0, help="page GETs per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the GET load runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        block = Block(Path(tmp) / "block", 2, "line", scale=1.0).start()
        port = free_port()
        web = start_web(block, args.clients, port, Path(tmp))
        try:
            rss_idle, _ = rss_kib(web.pid)
            fan = asyncio.run(fan_out(block, port, args.clients, args.alerts))
            gets, errors = get_load(port, args.rate, args.seconds)
            # the GET load again, with the live clients connected, is the figure the issue asks for
            async def with_clients():
                live = [LiveClient(port, phone(1, i)) for i in range(args.clients)]
                tasks = [asyncio.create_task(c.run()) for c in live]
                await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in live)), timeout=60)
                result = await asyncio.to_thread(get_load, port, args.rate, args.seconds)
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                return result
            gets_live, errors_live = asyncio.run(with_clients())
            rss_now, rss_peak = rss_kib(web.pid)
        finally:
            web.terminate()
            web.wait(timeout=10)
            block.stop()
    figures = {
        "clients": args.clients, "alert_changes": args.alerts,
        "fanout_p50_ms": percentile(fan, 0.50) * 1000, "fanout_p99_ms": percentile(fan, 0.99) * 1000,
        "fanout_max_ms": max(fan) * 1000,
        "get_rate": args.rate, "get_requests": len(gets_live), "get_errors": errors_live + errors,
        "get_p50_ms": percentile(gets_live, 0.50) * 1000, "get_p99_ms": percentile(gets_live, 0.99) * 1000,
        "get_p99_ms_without_live_clients": percentile(gets, 0.99) * 1000,
        "rss_idle_mb": rss_idle / 1024, "rss_mb": rss_now / 1024, "rss_peak_mb": rss_peak / 1024,
    }
    print(f"web fan-out: {args.clients} live clients, {args.alerts} alert changes, "
          f"GET / at {args.rate:.0f}/s for {args.seconds:.0f} s")
    print(f"  commit -> every client   p50 {figures['fanout_p50_ms']:7.1f} ms   p99 {figures['fanout_p99_ms']:7.1f} ms"
          f"   max {figures['fanout_max_ms']:7.1f} ms")
    print(f"  GET / (clients open)     p50 {figures['get_p50_ms']:7.1f} ms   p99 {figures['get_p99_ms']:7.1f} ms"
          f"   errors {figures['get_errors']}   (p99 {figures['get_p99_ms_without_live_clients']:.1f} ms without)")
    print(f"  web process RSS          idle {figures['rss_idle_mb']:.1f} MB   now {figures['rss_mb']:.1f} MB"
          f"   peak {figures['rss_peak_mb']:.1f} MB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    main()
