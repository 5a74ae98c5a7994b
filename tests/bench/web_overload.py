"""Web overload: N page requests at R per second from loopback against `silbato web`, while the
node's button is held on the same machine.

    .venv/bin/python tests/bench/web_overload.py                      # 10,000 requests at 200/s
    .venv/bin/python tests/bench/web_overload.py --requests 1000      # quicker

Three processes, as on a node: the node daemon (mock pins, real SQLite) in this one, the
web service (`silbato web`, waitress) in a second, the load in a third. Reports the
answers by status (never a 500) and the hold-to-siren latency under load, p50/p99.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

LOAD = textwrap.dedent("""
    import collections, http.client, json, sys, threading, time
    port, total, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    counts = collections.Counter(); lock = threading.Lock(); start = time.monotonic()
    def worker(k, workers):
        conn = None
        for i in range(k, total, workers):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("GET", "/", headers={"Accept-Language": "es"})
                response = conn.getresponse(); response.read(); status = response.status
                if response.getheader("Connection", "").lower() == "close":
                    conn.close(); conn = None
            except Exception as exc:
                status = type(exc).__name__; conn = None
            with lock:
                counts[str(status)] += 1
    threads = [threading.Thread(target=worker, args=(k, 16)) for k in range(16)]
    [t.start() for t in threads]; [t.join() for t in threads]
    print(json.dumps({"counts": counts, "seconds": time.monotonic() - start}))
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--holds", type=int, default=20, help="button holds during the load")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from node.daemon.node import Node
    from node.hardware import devices as hardware
    from node.sim import provision

    with tempfile.TemporaryDirectory() as tmp:
        files = provision(Path(tmp), 2, hold_time=0.05)
        cfg = files.configs[0]
        port = free_port()
        toml = Path(tmp) / "silbato.toml"
        toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                        f'[web]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "{Path(tmp) / "web"}"\n')
        factory = hardware.mock_factory()
        node = Node(cfg, pin_factory=factory).start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
        web = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "web"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or web.poll() is not None:
                        raise SystemExit("the web service did not start: " + (web.stderr.read() if web.poll() else ""))
                    time.sleep(0.1)
            load = subprocess.Popen([sys.executable, "-c", LOAD, str(port), str(args.requests), str(args.rate)],
                                    stdout=subprocess.PIPE, text=True)
            button = factory.pin(cfg["hardware.button_pin"])
            siren = factory.pin(cfg["hardware.siren_pin"])
            latencies, sounded = [], 0
            pause = max(0.2, args.requests / args.rate / max(args.holds, 1) / 2)
            for _ in range(args.holds):
                if load.poll() is not None:
                    break
                for alert in node.store.active_alerts():   # each hold a new report, not a merge
                    node.act("cancel", alert.id)
                node.hardware.siren.silence()
                siren.when_changed = None
                pressed = time.monotonic()
                button.drive_low()
                while not siren.state and time.monotonic() - pressed < 5:
                    time.sleep(0.0005)
                if siren.state:
                    sounded += 1
                    latencies.append((time.monotonic() - pressed - cfg["hardware.hold_time"]) * 1000)
                button.drive_high()
                time.sleep(pause)
            out, _ = load.communicate(timeout=args.requests / args.rate + 120)
            result = json.loads(out)
        finally:
            web.terminate()
            web.wait(timeout=30)
            node.stop()
    counts = result["counts"]
    row = {"requests": args.requests, "rate": args.rate, "answers": counts,
           "server_errors": sum(v for k, v in counts.items() if k.isdigit() and int(k) >= 500 and k != "503"),
           "failed_requests": sum(v for k, v in counts.items() if not k.isdigit()),
           "holds": args.holds, "sounded": sounded,
           "hold_to_siren_p50_ms": statistics.median(latencies) if latencies else None,
           "hold_to_siren_p99_ms": sorted(latencies)[min(len(latencies) - 1, int(0.99 * len(latencies)))]
           if latencies else None, "seconds": round(result["seconds"], 1)}
    print(f"{row['requests']} requests at {row['rate']:.0f}/s in {row['seconds']} s: answers {counts}")
    print(f"holds: {sounded} of {args.holds} sounded; hold to siren under load p50 "
          f"{row['hold_to_siren_p50_ms']:.1f} ms, p99 {row['hold_to_siren_p99_ms']:.1f} ms")
    if args.json:
        args.json.write_text(json.dumps(row, indent=1))
    return row


if __name__ == "__main__":
    main(sys.argv[1:])
