"""Slow clients: one address holds N slow connections; another loads the page and an open page awaits an alert.

    .venv/bin/python tests/bench/slow_clients.py                      # 1,000 slow connections, old and new
    .venv/bin/python tests/bench/slow_clients.py --slow 300 --loads 20  # quicker

Runs each mode in turn, side by side in one run:

- ``old``: the page's server with the per-address cap and the header timeout off (as
  before issue 13): waitress alone, whose idle timeout a trickle keeps from firing;
- ``new``: as shipped (``web.server.PER_ADDRESS``, ``HEADER_TIMEOUT``), or ``--cap`` and
  ``--header-timeout``.

Three processes per mode, as on a node: the page (``web.server.Server`` over node 1's
real SQLite store of a simulated block, ``web.live_clients`` as on a node), the attacker
(``--slow`` connections from 127.0.0.2, each sending ``GET / HTTP/1.1``, ``Host: x`` and
then one more header line every ``--trickle`` seconds, and opening a new one at once for
each the server closes), and this one. From 127.0.0.1 this one keeps a page's live
stream (``/api/events``) open, loads ``/`` ``--loads`` times on new connections (5 at a
time, ``--timeout`` seconds each) once the attack is under way, then commits an alert on
the node and times its arrival on the open page. Prints both modes; ``--json`` keeps them.

The attacker raises its open-files limit (RLIMIT_NOFILE) to what it needs and says so if
the hard limit is lower. Only loopback traffic, bounded in count and time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import selectors
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

HERE = Path(__file__).resolve()
ATTACKER = "127.0.0.2"
READER = "127.0.0.1"


def percentile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else None


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind((READER, 0))
        return s.getsockname()[1]


# -- the page, in its own process -----------------------------------------------------------

def serve(argv: list[str]) -> None:
    """The page's server over a node's config: ``serve TOML PORT CAP HEADER_TIMEOUT`` (0: off)."""
    import logging

    from node import config
    from web import create_app, settings
    from web.server import Server

    toml, port, cap, header_timeout = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    cfg = config.load(Path(toml))
    server = Server(create_app(settings(cfg)), READER, port, live_clients=cfg["web.live_clients"],
                    per_address=cap or None, header_timeout=header_timeout or None)
    print("ready", flush=True)
    server.serve_forever()


# -- the attacker, in its own process -------------------------------------------------------

def attack(argv: list[str]) -> None:
    """``attack PORT N TRICKLE``: N slow connections from 127.0.0.2 until stdin closes; prints JSON figures."""
    port, want, trickle = int(argv[0]), int(argv[1]), float(argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = want + 64
    note = ""
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            want = max(1, hard - 64)
            note = f"open-files hard limit {hard}: only {want} slow connections"
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need,
                                                    hard))
    selector = selectors.DefaultSelector()
    selector.register(sys.stdin, selectors.EVENT_READ, "stop")
    connected: set[socket.socket] = set()
    figures = {"slow": want, "opened": 0, "closed_by_server": 0, "turned_away_503": 0, "connect_errors": 0,
               "note": note}
    started = False

    def open_one() -> None:
        sock = socket.socket()
        sock.setblocking(False)
        sock.bind((ATTACKER, 0))
        sock.connect_ex((READER, port))
        selector.register(sock, selectors.EVENT_WRITE, "connecting")

    began = time.monotonic()
    for _ in range(want):
        open_one()
    next_line = time.monotonic() + trickle
    line = 0
    while True:
        timeout = max(0.0, next_line - time.monotonic())
        for key, _ in selector.select(timeout):
            sock = key.fileobj
            if key.data == "stop":
                figures["seconds"] = round(time.monotonic() - began, 2)
                print(json.dumps(figures), flush=True)
                return
            if key.data == "connecting":
                selector.unregister(sock)
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    figures["connect_errors"] += 1
                    sock.close()
                    open_one()
                    continue
                try:
                    sock.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
                except OSError:
                    sock.close()
                    open_one()
                    continue
                figures["opened"] += 1
                connected.add(sock)
                selector.register(sock, selectors.EVENT_READ, "open")
                if not started and figures["opened"] >= want:
                    started = True
                    print("attacking", flush=True)
                continue
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if data:
                figures["turned_away_503"] += data.startswith(b"HTTP/1.1 503 ")
                continue
            selector.unregister(sock)  # the server closed it: open another at once
            connected.discard(sock)
            sock.close()
            figures["closed_by_server"] += 1
            open_one()
        if time.monotonic() >= next_line:
            next_line = time.monotonic() + trickle
            line += 1
            for sock in list(connected):
                try:
                    sock.send(b"X-Slow-%d: x\r\n" % line)
                except OSError:
                    pass  # its close shows up as a read


# -- the measurements ------------------------------------------------------------------------

class LiveReader:
    """An open page's event stream from 127.0.0.1: the time each new version arrived."""

    def __init__(self, port: int):
        self.sock = socket.create_connection((READER, port), timeout=30)
        self.sock.sendall(b"GET /api/events HTTP/1.0\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
        self.arrivals: list[tuple[str, float]] = []
        self.changed = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for line in self.sock.makefile("rb"):
                if line.startswith(b"id: "):
                    with self.changed:
                        self.arrivals.append((line[4:].strip().decode(), time.monotonic()))
                        self.changed.notify_all()
        except OSError:
            pass

    def wait_for_version(self, after: int, timeout: float) -> float | None:
        """Monotonic arrival of the first version after the ``after``-th; ``None`` on timeout."""
        with self.changed:
            if self.changed.wait_for(lambda: len(self.arrivals) > after, timeout):
                return self.arrivals[after][1]
        return None

    def close(self) -> None:
        self.sock.close()


def load_page(port: int, timeout: float) -> float | None:
    """One visitor's load of ``/`` on a new connection: seconds, or ``None`` if it failed."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(READER, port, timeout=timeout)
    try:
        conn.request("GET", "/", headers={"Accept-Language": "es"})
        response = conn.getresponse()
        response.read()
        return time.monotonic() - started if response.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def run_mode(name: str, block, toml: Path, root: Path, args, cap: int, header_timeout: float) -> dict:
    from node.protocol.alerts import Kind

    node = block.nodes[1]
    for alert in node.store.active_alerts():  # the alert below is a new one, not a merge
        node.act("cancel", alert.id)
    port = free_port()
    log_file = root / f"{name}.log"
    with open(log_file, "w") as log:
        web = subprocess.Popen([sys.executable, str(HERE), "serve", str(toml), str(port), str(cap), str(header_timeout)],
                               stdout=subprocess.PIPE, stderr=log, text=True)
    attacker = live = None
    try:
        if web.stdout.readline().strip() != "ready":
            raise SystemExit(f"the page did not start: {log_file.read_text()}")
        live = LiveReader(port)
        if live.wait_for_version(0, 30) is None:
            raise SystemExit("the live stream sent nothing")
        attacker = subprocess.Popen([sys.executable, str(HERE), "attack", str(port), str(args.slow), str(args.trickle)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if attacker.stdout.readline().strip() != "attacking":
            raise SystemExit("the attacker could not open its connections")
        time.sleep(args.settle)  # the server has taken what it takes
        start = time.monotonic()
        with ThreadPoolExecutor(5) as pool:
            def visitor(i: int) -> float | None:
                time.sleep(max(0.0, start + i // 5 * args.gap - time.monotonic()))  # 5 at a time, --gap apart
                return load_page(port, args.timeout)
            loads = list(pool.map(visitor, range(args.loads)))
        seen = len(live.arrivals)
        committed = time.monotonic()
        node.report(Kind.RAID)
        arrived = live.wait_for_version(seen, 10)
        attacker.stdin.close()
        figures = json.loads(attacker.stdout.readline())
        attacker.wait(timeout=30)
    finally:
        if attacker is not None and attacker.poll() is None:
            attacker.kill()
        if live is not None:
            live.close()
        web.terminate()
        web.wait(timeout=30)
    ok = [t for t in loads if t is not None]
    logged = log_file.read_text().splitlines()
    return {
        "mode": name, "cap": cap or None, "header_timeout": header_timeout or None, "loads": args.loads,
        "loads_ok": len(ok), "failed": args.loads - len(ok),
        "load_p50_ms": _ms(percentile(ok, 0.50)), "load_p95_ms": _ms(percentile(ok, 0.95)),
        "load_max_ms": _ms(max(ok) if ok else None),
        "alert_to_open_page_ms": _ms(arrived - committed if arrived is not None else None),
        "attacker": figures,
        # the page names an address by a pseudonym ("client 1a2b3c4d"), never the address itself
        "turned_away_log_lines": sum("turn" in line and "connections from client " in line for line in logged),
        "address_logged": any(ATTACKER in line for line in logged),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def main(argv: list[str] | None = None) -> dict:
    from node.sim import Block
    from web import server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=1000, help="slow connections from 127.0.0.2")
    parser.add_argument("--trickle", type=float, default=20.0, help="seconds between a slow connection's header lines")
    parser.add_argument("--loads", type=int, default=50, help="page loads from 127.0.0.1 during the attack")
    parser.add_argument("--gap", type=float, default=0.5, help="seconds between rounds of 5 page loads")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds before a page load counts as failed")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between the attack and the first load")
    parser.add_argument("--cap", type=int, default=server.PER_ADDRESS, help="connections per address (new mode)")
    parser.add_argument("--header-timeout", type=float, default=server.HEADER_TIMEOUT, help="seconds (new mode)")
    parser.add_argument("--live-clients", type=int, default=200, help="web.live_clients (threads - 8)")
    parser.add_argument("--modes", default="old,new", help="old, new or both")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        block = Block(root / "block", 2, "line", scale=1.0).start()
        try:
            cfg = block.files.configs[0]
            toml = root / "web.toml"
            toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                            f'[web]\nlive_clients = {args.live_clients}\nstate_dir = "{root / "web"}"\n')
            for name in [m.strip() for m in args.modes.split(",") if m.strip()]:
                cap, timeout = (0, 0.0) if name == "old" else (args.cap, args.header_timeout)
                results[name] = run_mode(name, block, toml, root, args, cap, timeout)
        finally:
            block.stop()

    threads = args.live_clients + server.SPARE_THREADS
    print(f"slow clients: {args.slow} connections from {ATTACKER} (a header line every {args.trickle:g} s), "
          f"{args.loads} loads of / from {READER}; waitress holds at most {threads + 128} connections")
    print(f"  {'mode':4}  {'cap':>4}  {'header t/o':>10}  {'loads ok':>8}  {'p50 ms':>7}  {'p95 ms':>7}  "
          f"{'max ms':>7}  {'alert to open page':>18}  {'closed by server':>16}  {'log lines':>9}")
    for row in results.values():
        def num(value) -> str:
            return "-" if value is None else f"{value:.1f}"
        alert = "never" if row["alert_to_open_page_ms"] is None else f"{row['alert_to_open_page_ms']:.0f} ms"
        header_timeout = f"{row['header_timeout']:g} s" if row["header_timeout"] else "off"
        print(f"  {row['mode']:4}  {row['cap'] or 'off':>4}  {header_timeout:>10}  "
              f"{row['loads_ok']:>3} / {row['loads']:<3}  {num(row['load_p50_ms']):>7}  {num(row['load_p95_ms']):>7}  "
              f"{num(row['load_max_ms']):>7}  {alert:>18}  {row['attacker']['closed_by_server']:>16}  "
              f"{row['turned_away_log_lines']:>9}")
        attacker = row["attacker"]
        print(f"  {'':4}  the server closed {attacker['closed_by_server'] / attacker['seconds']:.0f} of the attacker's "
              f"connections a second ({attacker['turned_away_503']} answered 503 first) over {attacker['seconds']:.1f} s")
        if row["attacker"]["note"]:
            print(f"  ({row['mode']}: {row['attacker']['note']})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve(sys.argv[2:])
    elif sys.argv[1:2] == ["attack"]:
        attack(sys.argv[2:])
    else:
        main(sys.argv[1:])
