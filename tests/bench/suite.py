"""The benchmark suite: every benchmark in one command, a table each, and one JSON file.

    .venv/bin/python tests/bench/suite.py                       # the full run (about an hour on 2 cores)
    .venv/bin/python tests/bench/suite.py --smoke               # tiny sizes, to check it all still runs
    .venv/bin/python tests/bench/suite.py --only P1,P4          # some of them

  P1 frames        frame sizes and airtime against JSON with a base64 signature
  P2 latency       end of the hold to siren on, alert stored and frame queued (mock pins)
  P3 block         30 nodes, 4+ hops, 10% loss: delivery, p50/p95 to the farthest siren, each state, coverage;
                   beside plain Meshtastic (one broadcast text, hop limit 3 and 7) and the physical floor
  P4 supervision   heartbeat airtime, time to TROUBLE, false TROUBLE over a simulated week
  P5 line          a 5-node line with 0% and 20% loss, every preset; beside plain Meshtastic and the floor
  P6 radio         start-up, unplug to TROUBLE, replug to connected (real meshtastic library)
  P7 web           live page fan-out under load
  P8 overload      10,000 page requests at 200/s: 429/503, never 500; hold to siren meanwhile
  P9 slow clients  1,000 slowly trickled requests from one address: page loads from another, old vs new
  P10 outage       a middle node's radio gone 5 minutes during alerts: healthy buildings shown silent, catch-up
  P11 evidence     a 500 MB upload through the page against a plain HTTP copy, its memory; holds and live
                   page clients during 5 uploads
  P12 broker       one Mosquitto for a neighborhood of 100 and 1,000 blocks: deliveries/s, broker CPU, latency
  P13 neighborhood 10 blocks x 30 nodes on a real Mosquitto: CONFIRMED at the origin to NEARBY on every node
                   of the neighbor blocks, p50/p95, beside the in-block time
  P14 hood outage  a block's link, then the broker, down 10 minutes during alerts: lost, duplicated, catch-up,
                   the TROUBLE shown and cleared
  P15 sms          a confirmed alert to 20 responders + 500 broad-list texts through gammu-smsd's dummy phone,
                   beside a gammu-smsd-inject loop of the same texts (needs gammu-smsd)

Simulated figures (P1, P3, P4, P5, P10) are the same on every machine; wall-clock ones
(P2, P6, P7, P8, P9, P11, P12, P13, P14, P15) vary with it, so compare them side by side in one run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

BENCHES = {
    "P1": ("frames", [], []),
    "P2": ("local_latency", [], ["--holds", "50"]),
    "P3": ("block", [], ["--alerts", "3", "--nodes", "10", "--presets", "MEDIUM_FAST"]),
    "P4": ("supervision", [], ["--days", "0.05", "--nodes", "10"]),
    "P5": ("propagation", [], ["--alerts", "2", "--nodes", "3"]),
    "P6": ("radio_link", [], ["--cycles", "2"]),
    "P7": ("web_fanout", [], ["--clients", "5", "--alerts", "2", "--seconds", "2", "--rate", "20"]),
    "P8": ("web_overload", [], ["--requests", "200", "--rate", "100", "--holds", "2"]),
    "P9": ("slow_clients", [], ["--slow", "60", "--cap", "8", "--header-timeout", "1", "--trickle", "1",
                                "--loads", "5", "--settle", "0.5", "--live-clients", "2"]),
    "P10": ("outage", [], ["--kinds", "line", "--line-nodes", "3", "--outage", "200", "--after", "300"]),
    "P12": ("broker_load", [], ["--blocks", "10", "--seconds", "2", "--rate", "1", "--procs", "1"]),
    "P11": ("evidence", [], ["--size", "3", "--uploads", "2", "--upload-size", "2", "--holds", "3",
                             "--clients", "2"]),
    "P15": ("sms_dispatch", [], ["--responders", "2", "--broad", "10"]),
    "P13": ("neighborhood", [], ["--blocks", "3", "--nodes", "3", "--raids", "1"]),
    # 60 simulated seconds (past the TROUBLE's 30) in 20 wall seconds
    "P14": ("neighborhood_outage", [], ["--kinds", "link", "--outage", "60", "--scale", "3", "--blocks", "3",
                                        "--nodes", "3"]),
}


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks that each benchmark runs")
    parser.add_argument("--only", default="", help="comma-separated ids, such as P1,P4")
    parser.add_argument("--json", type=Path, default=Path("bench-results.json"), help="where the results go")
    args = parser.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()] or list(BENCHES)
    results: dict[str, object] = {"smoke": args.smoke, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    for bench_id in chosen:
        name, full, smoke = BENCHES[bench_id]
        print(f"\n== {bench_id} {name} ==", flush=True)
        started = time.monotonic()
        results[bench_id] = {"name": name, "result": load(name).main(smoke if args.smoke else full),
                             "seconds": round(time.monotonic() - started, 1)}
    args.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"\nwritten to {args.json}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
