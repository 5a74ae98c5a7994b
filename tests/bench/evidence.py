"""Evidence benchmark: a large video through the real page against a plain HTTP copy, and alerts during uploads.

    .venv/bin/python tests/bench/evidence.py                          # 500 MB x 3 pairs; 5 x 300 MB during holds
    .venv/bin/python tests/bench/evidence.py --size 50 --uploads 2 --upload-size 20 --holds 20

One complete node (real SQLite, keys, roster, gpiozero mock pins, its evidence checker
thread) in this process, and ``silbato web`` (waitress) for it as its own process on
127.0.0.1, with the organizers' age key set and the environment its systemd unit gives it.
Then:

1. **one large upload** through the page as the page's JavaScript sends it (``POST
   /alerts/<id>/uploads``, then 1 MiB ``PUT`` pieces), sealed as it streams, against the
   same bytes in the same pieces ``PUT`` to a plain HTTP server (Python's ``http.server``,
   its own process, at the page's nice value) that appends them to a file and syncs it at the end.
   ``--repeat`` pairs, the order alternating within each (page first, then plain first), since
   either copy leaves the disk busy writing back for the one after it. The median of the pairs'
   ratios of the two throughputs is the figure (target >= 0.5), with the web process's resident memory
   sampled every 20 ms: its peak above idle (target <= 16 MB: streamed, never buffered);
2. **end of a panic-button hold -> siren on and the alert stored and queued** (as
   ``local_latency.py`` measures it), first with no upload, then while ``--uploads``
   uploads of ``--upload-size`` MB each run at once from different addresses (each phone a
   process of its own at the idle scheduling policy: phones are not on the node, so they should
   take only the CPU it leaves; ``--phones-nice 19`` runs them as before round 4); p99 beside p99; and then, as a control, as many holds again while one CPU
   burner per core runs at the idle scheduling policy (``SCHED_IDLE``: it gets only the CPU
   no other task wants). On a machine whose cores share hardware (a VM's virtual cores, SMT
   siblings) even that slows the hold, and no scheduling can do better for the uploads;
3. throughout both, ``--clients`` **live page clients** hold the page's server-sent events
   open (``GET /api/events``, as ``web/static/silbato.js`` does), in a process of their own at
   nice 0 (they stand for phones, which have CPUs of their own). For every alert state change
   the holds make (raised, cancelled): the time from its commit until every client had a
   document showing it or a later state, p50/p95/max, without and with uploads (target 1 s).

The node (this process) and the page run at the ``Nice=`` of their systemd units
(``--node-nice``, ``--web-nice`` to try others; a negative one needs CAP_SYS_NICE). The
units' ``CPUWeight=`` needs systemd's cgroups and is not applied here.

Prints the figures; ``--json`` keeps them. Only loopback traffic; files in a temporary folder.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pyrage
from gpiozero.pins.mock import MockFactory

from node.daemon.node import Node
from node.protocol.alerts import Alert, Kind, State
from node.sim import provision

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from local_latency import TimedPin, percentile  # noqa: E402

MB = 1_000_000
PIECE = 1024 * 1024  # web.uploads.CHUNK: what the page's JavaScript sends

# One core's worth of work that takes only the CPU nothing else wants (nice 19 where SCHED_IDLE is not there).
BURNER = r'''
import hashlib, os
try:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
except (AttributeError, OSError):
    os.setpriority(os.PRIO_PROCESS, 0, 19)
block, digest = bytes(1 << 20), hashlib.sha256()
while True:
    digest.update(block)
'''

PLAIN_SERVER = r'''
import http.server, os, sys
target = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as waitress: no 40 ms wait on a small answer
    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        with open(target, "ab") as fh:
            fh.write(body)
            if self.headers.get("X-Last") == "1":
                fh.flush(); os.fsync(fh.fileno())
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


def unit_lines(unit: str, key: str) -> list[str]:
    """The values of ``key=`` in ``systemd/<unit>``."""
    text = (HERE.parent.parent / "systemd" / unit).read_text()
    return [line.split("=", 1)[1] for line in text.splitlines() if line.startswith(f"{key}=")]


def unit_environment() -> dict[str, str]:
    """The ``Environment=`` settings of ``systemd/silbato-web.service``."""
    return dict(value.split("=", 1) for value in unit_lines("silbato-web.service", "Environment"))


def unit_nice(unit: str) -> int:
    """The unit's ``Nice=``; 0 without one."""
    values = unit_lines(unit, "Nice")
    return int(values[-1]) if values else 0


def at_nice(value: int):
    """For ``Popen(preexec_fn=...)``: the child at this nice value (not relative to ours)."""
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, value)


def at_idle() -> None:
    """For ``Popen(preexec_fn=...)``: the child at the idle scheduling policy (nice 19 where there is none)."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, 0, 19)


def free_port() -> int:
    with closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pieces(size: int, seed: int):
    """``size`` bytes in 1 MiB pieces: random, and no two pieces alike (nothing to compress or deduplicate)."""
    block = bytearray(os.urandom(PIECE))
    for i, offset in enumerate(range(0, size, PIECE)):
        block[:16] = seed.to_bytes(8, "big") + i.to_bytes(8, "big")
        yield offset, bytes(block[:min(PIECE, size - offset)])


def wait_http(port: int, path: str = "/", proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            if proc is not None and proc.poll() is not None:
                break
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


class Phone:
    """A phone on the building's Wi-Fi sending one file the way ``web/static/evidence.js`` does."""

    def __init__(self, port: int, address: str = "127.0.0.1"):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300, source_address=(address, 0))
        self.cookies = SimpleCookie()

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        cookie = "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())
        headers = {**(headers or {}), **({"Cookie": cookie} if cookie else {})}
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        for header in response.headers.get_all("Set-Cookie") or []:
            self.cookies.load(header)
        return response.status, data

    def send(self, alert_id: str, size: int, seed: int) -> None:
        status, html = self.request("GET", f"/alerts/{alert_id}")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', html)
        if status != 200 or token is None:
            raise RuntimeError(f"the incident page answered {status} with no form")
        token = token[1].decode()
        status, body = self.request("POST", f"/alerts/{alert_id}/uploads",
                                    urlencode({"csrf_token": token, "size": size, "type": "video/mp4"}).encode(),
                                    {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 201:
            raise RuntimeError(f"the upload was not started: {status} {body[:200]!r}")
        url = json.loads(body)["url"]
        for offset, piece in pieces(size, seed):
            status, body = self.request("PUT", f"{url}?offset={offset}", piece,
                                        {"X-CSRFToken": token, "Content-Type": "application/octet-stream"})
            if status != 200:
                raise RuntimeError(f"piece at {offset}: {status} {body[:200]!r}")
        if not json.loads(body).get("done"):
            raise RuntimeError("the last piece did not finish the upload")
        self.conn.close()


def plain_copy(port: int, size: int, seed: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    for offset, piece in pieces(size, seed):
        last = offset + len(piece) >= size
        conn.request("PUT", "/copy", body=piece, headers={"X-Last": "1" if last else "0"})
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"plain copy: {response.status}")
    conn.close()


class RssSampler:
    """The web process's resident memory every 20 ms, on a thread: its peak."""

    def __init__(self, pid: int):
        self.pid, self.peak = pid, rss_kib(pid)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=5)


def holds(node: Node, factory: MockFactory, clock_offset: list, hold_time: float, count: int,
          until: threading.Event | None = None, changes: list | None = None,
          started: list | None = None) -> list[float]:
    """End of hold -> siren on + alert stored and queued, in ms, for ``count`` holds (or until ``until``).

    Each hold's start (``time.monotonic()``) is appended to ``started``.
    Each alert state change (raised, cancelled) is appended to ``changes`` as
    ``(alert id, 0 raised / 1 cancelled, time.monotonic() once committed)``.
    """
    button, siren = factory.pin(node.config["hardware.button_pin"]), factory.pin(node.config["hardware.siren_pin"])
    out = []
    while len(out) < count or (until is not None and not until.is_set()):
        clock_offset[0] += 1000.0  # every hold a new report, past the merge and cancel windows
        node.hardware.siren.silence()
        siren.changes = []
        pressed = time.monotonic()
        if started is not None:
            started.append(pressed)
        button.drive_low()
        if not node.wait_for(lambda: any(a.location == 101 for a in node.store.active_alerts()), timeout=30):
            raise RuntimeError("a hold raised nothing")
        stored = time.monotonic()
        button.drive_high()
        on = next((t for t, state in siren.changes if state), None)
        if on is None:
            raise RuntimeError("the siren never came on")
        out.append((max(on, stored) - (pressed + hold_time)) * 1000)
        with node.lock:  # the ticker thread shares the node's store: read it under the node's lock
            alert = next(a for a in node.store.active_alerts() if a.location == 101)
        node.act("cancel", alert.id)
        if changes is not None:
            changes += [(alert.id, 0, stored), (alert.id, 1, time.monotonic())]
        with node.lock, node.store.transaction():
            for seq, _ in node.store.pending():
                node.store.mark_sent(seq, node.clock())
    return out


ALERT_ROW = re.compile(r'data-id="(\d+)-(\d+)" data-state="([a-z_]+)"')


def newest_alerts(html: str) -> dict[str, list]:
    """The newest alert of each origin the live document shows: ``{"1": [seq, state]}``."""
    newest: dict[str, list] = {}
    for origin, seq, state in ALERT_ROW.findall(html):
        if int(seq) > newest.get(origin, [0])[0]:
            newest[origin] = [int(seq), state]
    return newest


def listen_main(argv: list[str]) -> None:
    """``--listen PORT CLIENTS``: live page clients, as ``web/static/silbato.js`` with EventSource.

    Each holds ``GET /api/events`` open from an address of its own (and reconnects when the
    server ends the stream) and prints, for every ``state`` event, one JSON line
    ``[client, time.monotonic(), newest_alerts]`` once the whole event is in.
    """
    port, clients = int(argv[0]), int(argv[1])
    out = threading.Lock()

    def client(i: int) -> None:
        last = ""
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600,
                                              source_address=(f"127.4.{i // 250}.{i % 250 + 1}", 0))
            conn.request("GET", "/api/events?lang=en", headers={"Accept": "text/event-stream",
                                                               **({"Last-Event-ID": last} if last else {})})
            response = conn.getresponse()
            if response.status != 200:
                raise SystemExit(f"live client {i}: {response.status}")
            event, data = None, []
            for line in response:
                line = line.decode().rstrip("\n")
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("id:"):
                    last = line[3:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip())
                elif not line:
                    if event == "state":
                        got = time.monotonic()
                        doc = json.loads("\n".join(data))
                        with out:
                            print(json.dumps([i, got, newest_alerts(doc["html"])]), flush=True)
                    event, data = None, []
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class Clients:
    """``--clients`` live page clients in a process of their own; what each got and when."""

    def __init__(self, port: int, count: int, env: dict):
        self.count = count
        self.got: list[list] = [[] for _ in range(count)]  # per client: (monotonic time, {origin: [seq, state]})
        self.changed = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, __file__, "--listen", str(port), str(count)],
                                     stdout=subprocess.PIPE, text=True, env=env, preexec_fn=at_nice(0))
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        for line in self.proc.stdout:
            i, got, newest = json.loads(line)
            with self.changed:
                self.got[i].append((got, newest))
                self.changed.notify_all()

    def wait(self, predicate, timeout: float) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.got), timeout)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def pct(values: list[float], q: float) -> float:
    return percentile(values, q) if values else float("nan")


def position(alert_id: str, cancelled: bool) -> tuple[int, int]:
    """Where a change of one origin's alerts stands: a later alert, or the same one cancelled, is after."""
    return int(alert_id.split("-")[1]), int(cancelled)


def seen(got: list, origin: str) -> list[tuple[float, tuple[int, int]]]:
    return [(t, position(f"{origin}-{newest[origin][0]}", newest[origin][1] == "cancelled"))
            for t, newest in got if origin in newest]


def live_delays(changes: list, got: list[list]) -> tuple[list[float], int]:
    """For each alert state change, ms until every live client had a document showing it (or later
    ones); and how many changes some client never got."""
    origin = changes[0][0].split("-")[0] if changes else ""
    per_client = [seen(g, origin) for g in got]
    delays, missed = [], 0
    for alert_id, cancelled, at in changes:
        wanted, worst = position(alert_id, cancelled), 0.0
        for events in per_client:
            t = next((t for t, pos in events if pos >= wanted), None)
            if t is None:
                worst = None
                break
            worst = max(worst, t - at)
        if worst is None:
            missed += 1
        else:
            delays.append(max(0.0, worst) * 1000)
    return delays, missed


def phone_main(argv: list[str]) -> None:
    """``--phone PORT ALERT SIZE ADDRESS SEED``: one phone's upload, in a process of its own."""
    port, alert_id, size, address, seed = argv
    Phone(int(port), address).send(alert_id, int(size), int(seed))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=500, help="MB of the large upload")
    parser.add_argument("--repeat", type=int, default=3,
                        help="pairs of the large upload: through the page and plain, the order alternating")
    parser.add_argument("--uploads", type=int, default=5, help="uploads at once during the second run of holds")
    parser.add_argument("--upload-size", type=int, default=300,
                        help="MB of each of those (300: some 170 holds during them, so p99 is not the worst one)")
    parser.add_argument("--holds", type=int, default=200, help="holds without uploads (and at least as many with)")
    parser.add_argument("--hold-time", type=float, default=0.05, help="seconds")
    parser.add_argument("--web-nice", type=int, default=None,
                        help="run silbato web at this nice value; default its unit's Nice=")
    parser.add_argument("--node-nice", type=int, default=None,
                        help="run the node (this process) at this nice value; default its unit's Nice=")
    parser.add_argument("--phones-nice", type=int, default=None,
                        help="run the uploading phones at this nice value; default the idle scheduling policy")
    parser.add_argument("--clients", type=int, default=20, help="live page clients (server-sent events) throughout")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    web_nice = unit_nice("silbato-web.service") if args.web_nice is None else args.web_nice
    node_nice = unit_nice("silbato-node.service") if args.node_nice is None else args.node_nice
    own_nice = os.getpriority(os.PRIO_PROCESS, 0)
    try:  # this thread, and so every thread the node starts after it (Linux: nice is per thread)
        os.setpriority(os.PRIO_PROCESS, 0, node_nice)
    except PermissionError:  # a negative value needs CAP_SYS_NICE, which systemd has and we may not
        print(f"evidence: cannot run the node at nice {node_nice} (not permitted); it runs at {own_nice}")
        node_nice = own_nice
    try:
        return run(args, web_nice, node_nice)
    finally:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, own_nice)
        except PermissionError:
            pass


def run(args, web_nice: int, node_nice: int) -> dict:
    size, each = args.size * MB, args.upload_size * MB
    identity = pyrage.x25519.Identity.generate()
    settings = {"evidence.recipients": str(identity.to_public()), "evidence.max_item": max(size, each) + MB,
                "evidence.max_total": (size * args.repeat + args.uploads * each) * 2 + 100 * MB}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = provision(root / "block", 2, hold_time=args.hold_time, overrides=settings)
        cfg = files.configs[0]
        offset = [0.0]
        factory = MockFactory(pin_class=TimedPin)
        node = Node(cfg, pin_factory=factory, clock=lambda: time.time() + offset[0]).start()
        stopping = threading.Event()
        ticker = threading.Thread(target=lambda: [node.tick() for _ in iter(lambda: stopping.wait(1.0), True)],
                                  daemon=True)  # once a second, as silbato run does
        ticker.start()
        web = plain = clients = None
        burners: list[subprocess.Popen] = []
        try:
            now = time.time()
            with node.lock:  # the incident neighbors send their videos to: building 2's, still open
                node.store.save_alert(Alert("2-1", Kind.RAID, 102, 2, State.CONFIRMED, 2, now, now, now))
            port, plain_port = free_port(), free_port()
            toml = root / "web.toml"
            toml.write_text(
                f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                f'[web]\nhost = "127.0.0.1"\nport = {port}\nstate_dir = "{root / "web"}"\n'
                f'[evidence]\nrecipients = "{settings["evidence.recipients"]}"\n'
                f'max_item = {settings["evidence.max_item"]}\nmax_total = {settings["evidence.max_total"]}\n'
                '[log]\nlevel = "WARNING"\n')
            env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
            env.update(unit_environment())  # the page runs as its unit runs it (MALLOC_ARENA_MAX)
            web = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "web"], env=env,
                                   preexec_fn=at_nice(web_nice))  # as the unit's Nice= would
            plain = subprocess.Popen([sys.executable, "-c", PLAIN_SERVER, str(plain_port), str(root / "plain.bin")],
                                     preexec_fn=at_nice(web_nice))  # like for like: at the page's priority
            wait_http(port, "/api/health", web)
            wait_http(plain_port, "/", plain)
            Phone(port).send("2-1", PIECE, seed=0)  # warm up: first requests, first seal
            time.sleep(0.5)
            idle = rss_kib(web.pid)
            page_runs, plain_runs = [], []
            with RssSampler(web.pid) as rss:
                for i in range(args.repeat):
                    for way in (("page", "plain") if i % 2 == 0 else ("plain", "page")):
                        (root / "plain.bin").unlink(missing_ok=True)
                        start = time.monotonic()
                        if way == "page":
                            Phone(port).send("2-1", size, seed=1 + i)
                            page_runs.append(time.monotonic() - start)
                        else:
                            plain_copy(plain_port, size, seed=1 + i)
                            plain_runs.append(time.monotonic() - start)
            (root / "plain.bin").unlink(missing_ok=True)
            ratios = [plain / page for page, plain in zip(page_runs, plain_runs)]
            chained = node.wait_for(lambda: not node.store.pending_evidence(), timeout=300)

            # live page clients (at nice 0: they stand for phones, which have CPUs of their own)
            clients = Clients(port, args.clients, env)
            if not clients.wait(lambda got: all(got), timeout=60):
                raise RuntimeError("the live page clients did not all get the page's state")
            quiet_changes, busy_changes = [], []
            quiet = holds(node, factory, offset, args.hold_time, args.holds, changes=quiet_changes)
            now = time.time()
            with node.lock:  # a new incident: the page lists 200 alerts, and the holds made as many
                node.store.save_alert(Alert("2-2", Kind.RAID, 102, 2, State.CONFIRMED, 3, now, now, now))
            done, errors = threading.Event(), []

            def send(i: int) -> None:  # each phone its own process: the node's process only runs the node
                # idle policy: the phones are not on the node, so they take only the CPU it leaves
                done_ = subprocess.run([sys.executable, __file__, "--phone", str(port), "2-2",
                                        str(each), f"127.3.0.{i + 1}", str(10 + i)],
                                       capture_output=True, text=True, env=env,
                                       preexec_fn=at_idle if args.phones_nice is None else at_nice(args.phones_nice))
                if done_.returncode != 0:
                    errors.append((done_.stderr.strip().splitlines() or ["failed"])[-1])

            senders = [threading.Thread(target=send, args=(i,)) for i in range(args.uploads)]
            for t in senders:
                t.start()
            ended = []  # when the last upload ended: only what happened before it counts as "during"
            watcher = threading.Thread(target=lambda: ([t.join() for t in senders], ended.append(time.monotonic()),
                                                       done.set()))
            watcher.start()
            started = []
            after = holds(node, factory, offset, args.hold_time, args.holds, until=done, changes=busy_changes,
                          started=started)
            watcher.join()
            busy = [ms for ms, t in zip(after, started) if t < ended[0]]
            last = busy_changes[-1]
            origin = last[0].split("-")[0]
            clients.wait(lambda got: all(any(pos >= position(last[0], last[1]) for _, pos in seen(g, origin))
                                         for g in got), timeout=30)
            # the control: as many holds as during the uploads, while idle-priority burners fill every core
            burners = [subprocess.Popen([sys.executable, "-c", BURNER]) for _ in range(os.cpu_count() or 1)]
            time.sleep(0.5)
            control = holds(node, factory, offset, args.hold_time, max(len(busy), 1))
        finally:
            for burner in burners:
                burner.kill()
                burner.wait(timeout=10)
            if clients is not None:
                clients.stop()
            for proc in (web, plain):
                if proc is not None:
                    proc.terminate()
                    proc.wait(timeout=10)
            stopping.set()
            ticker.join(timeout=10)
            node.stop()
    figures = {
        "size_mb": args.size, "repeat": args.repeat, "page_runs_s": page_runs, "plain_runs_s": plain_runs,
        "ratios": ratios, "page_s": percentile(page_runs, 0.5), "plain_s": percentile(plain_runs, 0.5),
        "page_mb_s": args.size / percentile(page_runs, 0.5), "plain_mb_s": args.size / percentile(plain_runs, 0.5),
        "ratio": percentile(ratios, 0.5),
        "rss_idle_mb": idle / 1024, "rss_peak_mb": rss.peak / 1024, "rss_growth_mb": (rss.peak - idle) / 1024,
        "chained": chained, "web_nice": web_nice, "node_nice": node_nice, "clients": args.clients, "phones_nice": args.phones_nice, "uploads": args.uploads, "upload_size_mb": args.upload_size,
        "upload_errors": errors,
        "holds_quiet": len(quiet), "holds_busy": len(busy),
        "hold_p50_ms": percentile(quiet, 0.5), "hold_p99_ms": percentile(quiet, 0.99),
        "hold_p50_ms_uploading": pct(busy, 0.5), "hold_p99_ms_uploading": pct(busy, 0.99),
        "holds_control": len(control), "burners": len(burners),
        "hold_p50_ms_control": pct(control, 0.5), "hold_p99_ms_control": pct(control, 0.99),
    }
    for name, changes in (("quiet", quiet_changes), ("uploading", busy_changes)):
        if name == "uploading":
            changes = [c for c in changes if c[2] < ended[0]]
        delays, missed = live_delays(changes, clients.got)
        figures.update({f"live_changes_{name}": len(changes), f"live_missed_{name}": missed,
                        f"live_p50_ms_{name}": pct(delays, 0.5), f"live_p95_ms_{name}": pct(delays, 0.95),
                        f"live_max_ms_{name}": max(delays, default=float("nan"))})
    print(f"evidence: one {args.size} MB upload through the page (waitress, sealed as it streams) "
          f"against a plain HTTP copy of the same bytes")
    print(f"  page {figures['page_mb_s']:6.1f} MB/s   plain {figures['plain_mb_s']:6.1f} MB/s (medians)   "
          f"ratio {figures['ratio']:.2f}, the median of {len(ratios)} pairs "
          f"({', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.5)")
    print(f"  web process RSS  idle {figures['rss_idle_mb']:.1f} MB   peak {figures['rss_peak_mb']:.1f} MB   "
          f"growth {figures['rss_growth_mb']:.1f} MB (target <= 16 MB)")
    print(f"  end of hold -> siren   p50 {figures['hold_p50_ms']:.1f} ms  p99 {figures['hold_p99_ms']:.1f} ms "
          f"({len(quiet)} holds, no upload)")
    print(f"                         p50 {figures['hold_p50_ms_uploading']:.1f} ms  "
          f"p99 {figures['hold_p99_ms_uploading']:.1f} ms ({len(busy)} holds, {args.uploads} uploads of "
          f"{args.upload_size} MB at once: the holds begun before the last ended){'; upload errors: ' + '; '.join(errors) if errors else ''}")
    print(f"                         p50 {figures['hold_p50_ms_control']:.1f} ms  "
          f"p99 {figures['hold_p99_ms_control']:.1f} ms ({len(control)} holds, no upload, {len(burners)} CPU burners "
          f"at the idle scheduling policy: the control)")
    phones = "the idle policy" if args.phones_nice is None else f"nice {args.phones_nice}"
    print(f"  node at nice {node_nice}, page at nice {web_nice}, uploading phones at {phones}; "
          f"{args.clients} live page clients (server-sent events)")
    for name, label in (("quiet", "no upload"), ("uploading", f"{args.uploads} uploads")):
        print(f"  alert change -> every live client  p50 {figures[f'live_p50_ms_{name}']:.0f} ms  "
              f"p95 {figures[f'live_p95_ms_{name}']:.0f} ms  max {figures[f'live_max_ms_{name}']:.0f} ms "
              f"({figures[f'live_changes_{name}']} changes, {label}; target <= 1000 ms)"
              f"{'; never got: ' + str(figures[f'live_missed_{name}']) if figures[f'live_missed_{name}'] else ''}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["--phone"]:
        phone_main(sys.argv[2:])
    elif sys.argv[1:2] == ["--listen"]:
        listen_main(sys.argv[2:])
    else:
        main()
