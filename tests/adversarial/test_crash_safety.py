"""Crash safety: a node writing alerts is killed with SIGKILL at a random moment and restarted, 100 times
(1,000 with ``SILBATO_LONG=1``).

Each run starts the node (``crash_child.py``, the real ``Node`` on one database file)
where the last one died, lets it report and withdraw alerts, and kills it after a seeded
number of commits plus a seeded delay of up to 2 ms; one run in ten is killed
while it starts. After every kill:

- ``PRAGMA integrity_check`` says ok;
- every change the node said it had committed is in the database (0 lost);
- no counter was used twice: every signed frame in the outbox has its own counter, and
  the alert ids (the counters of their first reports) only ever grow.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from adversary import LONG, TALLY, install
from node.protocol import wire
from node.protocol.alerts import State

RUNS = 1_000 if LONG else 100
CHILD = Path(__file__).with_name("crash_child.py")


def kill_at_random(root: Path, rng: random.Random) -> list[str]:
    """One run: start the node, let it write, SIGKILL it. Returns the lines it printed (committed changes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    lines = []
    try:
        if rng.random() < 0.1:
            time.sleep(rng.uniform(0.0, 0.3))  # the moment of the kill, during start-up
        else:
            assert proc.stdout.readline() == b"started\n", proc.stderr.read().decode()
            for _ in range(rng.randint(0, 40)):
                lines.append(proc.stdout.readline().decode())
            time.sleep(rng.uniform(0.0, 0.002))  # the moment of the kill, somewhere in the next write
        proc.send_signal(signal.SIGKILL)
        rest, errors = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, errors.decode()
    lines += [line + "\n" for line in rest.decode().split("\n")[:-1]]  # a cut-off last line is not counted
    return [line.strip() for line in lines if line.strip() not in ("", "started")]


def test_no_committed_alert_is_lost_and_no_counter_reused_across_kills(tmp_path):
    install(tmp_path, (1,))
    db = tmp_path / "node1" / "db" / "silbato.db"
    rng = random.Random(9)
    committed: dict[str, State] = {}
    first_reports: list[int] = []
    changes = 0
    for run in range(RUNS):
        for line in kill_at_random(tmp_path, rng):
            changes += 1
            word, alert_id = line.split()
            if word == "reported":
                if alert_id not in committed:
                    first_reports.append(int(alert_id.split("-")[1]))
                committed[alert_id] = State.REPORTED
            else:
                assert word == "cancelled", line
                committed[alert_id] = State.CANCELLED
        conn = sqlite3.connect(db)  # opening it recovers the WAL, as the next start would
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)], f"run {run}"
            states = dict(conn.execute("SELECT id, state FROM alerts").fetchall())
            counters = [wire.peek_origin(bytes(f))[1] for (f,) in conn.execute("SELECT frame FROM outbox")]
            reserved = int((conn.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone() or [0])[0])
        finally:
            conn.close()
        lost = {a: s for a, s in committed.items() if states.get(a) not in (s, State.CANCELLED)}
        assert not lost, f"run {run}: committed but lost: {lost}"
        assert len(counters) == len(set(counters)), f"run {run}: a counter was used twice"
        assert max(counters, default=0) <= reserved
    assert first_reports == sorted(first_reports) and len(set(first_reports)) == len(first_reports)
    TALLY["kill -9 runs"] += RUNS
    TALLY["committed changes checked after kills"] += changes
    assert len(committed) > RUNS, "the node barely wrote anything before each kill"
