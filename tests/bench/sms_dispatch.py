"""SMS dispatch benchmark: a confirmed alert to 20 responders and 500 on the broad list, through gammu-smsd.

    .venv/bin/python tests/bench/sms_dispatch.py                              # 20 + 500 texts
    .venv/bin/python tests/bench/sms_dispatch.py --responders 2 --broad 10    # quick look

Both runs use the real gammu-smsd on Gammu's dummy phone (node/gateway/dummy.py) with
``loopsleep = 0``, so that it sends as fast as the dummy phone lets it (about 30 texts a
second; a real modem sends one every few seconds) and the gateway's own overhead shows:

- **Silbato**: one node's gateway (``Gateway.run``, its real loop, polling every second)
  with the subscribers on its lists, unlocked; the alert's state is set to CONFIRMED in the
  store (as the daemon commits it) and the clock starts.
- **The floor**: the same texts to the same numbers, handed to a fresh gammu-smsd by a shell
  loop of ``gammu-smsd-inject`` (one process per text, as a script would), clock started
  with the loop.

Each text's time is when gammu-smsd's ``RunOnSent`` hook ran for it (``date +%s%N``). Reported:
time from the start to the last text sent, p50/p95 per text, the ratio floor/Silbato (1.0: no
overhead), and whether every responder was handed to the modem before any broad-list
subscriber. Then the arithmetic for a real modem: the last responder's and the last text's
time at a modem send rate, with one, two and four modems (each with its own gammu-smsd,
splitting the list). Wall-clock figures: they vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from node import catalog
from node.daemon.node import Node
from node.gateway.book import BROAD, RESPONDER
from node.gateway.dummy import GAMMU_SMSD, GammuSmsd
from node.gateway.segments import count
from node.gateway.service import Gateway
from node.hardware.devices import mock_factory
from node.protocol.alerts import State
from node.sim import provision
from node.store import GATEWAY_TABLES, Store

CHEAP_KDF = {"n": 2 ** 10, "r": 8, "p": 1}   # the KDF is not what is measured
MODEM_SECONDS = 3.0                           # seconds per text on a real GSM modem (roughly)


def fast_smsd(root: Path) -> GammuSmsd:
    smsd = GammuSmsd(root)
    smsd.rc.write_text(smsd.rc.read_text().replace("loopsleep = 1", "loopsleep = 0"))
    return smsd.start()


def sent_times(smsd: GammuSmsd) -> list[tuple[float, str]]:
    """(wall-clock seconds, file name) of each text sent, in order, from the RunOnSent hook's copies."""
    found = []
    for path in smsd.copies.iterdir():
        stamp, _, name = path.name.partition("-")
        found.append((int(stamp) / 1e9, name))
    return sorted(found)


def wait_for(smsd: GammuSmsd, total: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    pause = threading.Event()
    while len(smsd.sent()) < total:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(smsd.sent())} of {total} texts sent in {limit:.0f} s")
        pause.wait(0.02)


def figures(started: float, times: list[tuple[float, str]]) -> dict:
    latencies = sorted(t - started for t, _ in times)
    return {"texts": len(latencies), "to_last_s": round(latencies[-1], 3),
            "p50_s": round(statistics.median(latencies), 3),
            "p95_s": round(latencies[max(0, int(len(latencies) * 0.95) - 1)], 3)}


def run_silbato(root: Path, responders: int, broad: int) -> tuple[dict, list[tuple[str, str]]]:
    cfg = provision(root / "block", 2).configs[0]
    node = Node(cfg, pin_factory=mock_factory(), clock=time.time).start()
    smsd = fast_smsd(root / "gammu-silbato")
    store = Store(cfg.db_file, writes=GATEWAY_TABLES)
    stopping = threading.Event()
    try:
        gateway = Gateway(store, smsd.spool, scrypt=CHEAP_KDF)
        gateway.unlock("benchmark passphrase")
        languages = list(catalog.LANGUAGES)
        with store.transaction():
            for i in range(responders + broad):
                gateway.book.add(gateway.vault, f"+1555{2000000 + i:07d}", RESPONDER if i < responders else BROAD,
                                 languages[i % len(languages)], time.time(), pin="482915" if i < responders else "")
        alert = node.report()
        runner = threading.Thread(target=gateway.run, args=(stopping,), name="gateway")
        runner.start()
        wait_for(smsd, responders, 60)   # the REPORTED texts: not measured
        before = len(smsd.sent())
        started = time.time()
        with node.store.transaction():   # as the daemon commits a confirmation
            node.store.db.execute("UPDATE alerts SET state = ?, updated_at = ? WHERE id = ?",
                                  [int(State.CONFIRMED), started, alert.id])
        wait_for(smsd, before + responders + broad, 600)
        stopping.set()
        runner.join(timeout=10)
        times = sent_times(smsd)[before:]
        names = [name for _, name in times]
        first_broad = min((i for i, n in enumerate(names) if n.startswith("OUTB")), default=len(names))
        result = figures(started, times)
        result["responders_first"] = all(n.startswith("OUTA") for n in names[:first_broad]) and \
            not any(n.startswith("OUTA") for n in names[first_broad:])
        texts = [(r["number"], r["text"]) for r in _sent_texts(gateway, alert.id)]
        return result, texts
    finally:
        stopping.set()
        smsd.stop()
        store.close()
        node.stop()


def _sent_texts(gateway: Gateway, alert_id: str) -> list[dict]:
    rows = gateway.store.db.query("SELECT number_enc, text FROM sms_queue WHERE alert_id = ? AND state = ? "
                                  "ORDER BY priority, id", [alert_id, int(State.CONFIRMED)])
    return [{"number": gateway.vault.open(r["number_enc"]), "text": r["text"]} for r in rows]


def run_floor(root: Path, texts: list[tuple[str, str]]) -> dict:
    smsd = fast_smsd(root / "gammu-floor")
    try:
        lines = [f"gammu-smsd-inject -c {shlex.quote(str(smsd.rc))} TEXT {shlex.quote(number)}"
                 + (" -unicode" if count(text).encoding == "UCS-2" else "")
                 + f" -text {shlex.quote(text)} >/dev/null" for number, text in texts]
        script = root / "inject.sh"
        script.write_text("\n".join(lines) + "\n")
        started = time.time()
        subprocess.run(["sh", str(script)], check=True)
        wait_for(smsd, len(texts), 600)
        return figures(started, sent_times(smsd))
    finally:
        smsd.stop()


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responders", type=int, default=20)
    parser.add_argument("--broad", type=int, default=500)
    parser.add_argument("--modem-seconds", type=float, default=MODEM_SECONDS,
                        help="seconds a real modem takes per text, for the arithmetic")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if GAMMU_SMSD is None:
        print("gammu-smsd is not installed (Debian: apt-get install gammu-smsd): nothing measured")
        return []
    for language in catalog.LANGUAGES:
        if language != catalog.SOURCE and catalog.problem(language):
            catalog.compile_catalog(catalog.po_file(language), catalog.mo_file(language), record_source=True)
    catalog.translations.cache_clear()
    with tempfile.TemporaryDirectory(prefix="silbato-sms-bench-") as tmp:
        root = Path(tmp)
        silbato, texts = run_silbato(root, args.responders, args.broad)
        floor = run_floor(root, texts)
    total = args.responders + args.broad
    row = {"responders": args.responders, "broad": args.broad, "silbato": silbato, "floor": floor,
           "ratio": round(floor["to_last_s"] / silbato["to_last_s"], 3),
           "modem": [{"modems": m, "seconds_per_text": args.modem_seconds,
                      "last_responder_s": round(args.responders * args.modem_seconds / m, 1),
                      "last_text_s": round(total * args.modem_seconds / m, 1)} for m in (1, 2, 4)]}
    print(f"{total} texts ({args.responders} responders + {args.broad} broad list), gammu-smsd on the dummy phone")
    print(f"{'':<28}{'to last text':>14}{'p50 per text':>14}{'p95 per text':>14}")
    for label, f in (("Silbato (from CONFIRMED)", silbato), ("gammu-smsd-inject loop", floor)):
        print(f"{label:<28}{f['to_last_s']:>12.2f} s{f['p50_s']:>12.2f} s{f['p95_s']:>12.2f} s")
    print(f"ratio floor/Silbato: {row['ratio']:.2f}; every responder handed to the modem first: "
          f"{silbato['responders_first']}")
    for m in row["modem"]:
        print(f"  at {m['seconds_per_text']:g} s a text, {m['modems']} modem(s): last responder "
              f"{m['last_responder_s']:g} s, last text {m['last_text_s']:g} s")
    if args.json:
        args.json.write_text(json.dumps([row], indent=1))
    return [row]


if __name__ == "__main__":
    main(sys.argv[1:])
