"""The benchmark suite in its smoke sizes, so every benchmark keeps working. No timing asserts."""

import importlib.util
import json
import math
from pathlib import Path

BENCH = Path(__file__).parent / "bench"


def load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_whole_suite_runs_in_smoke_sizes_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = load("suite").main(["--smoke", "--json", str(out)])
    printed = capsys.readouterr().out
    for bench_id in ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P10", "P11", "P12", "P15"):
        assert f"== {bench_id}" in printed
    assert json.loads(out.read_text())["P1"]["name"] == "frames"
    assert results["P3"]["result"][0]["delivered_ratio"] == 1.0
    assert results["P1"]["result"][0]["bytes"] == 82
    assert [b["hop_limit"] for b in results["P3"]["result"][0]["baseline"]] == [3, 7]
    assert results["P10"]["result"][0]["kind"] == "line"
    from node.gateway.dummy import GAMMU_SMSD
    if GAMMU_SMSD is not None:   # P15 measures nothing without it, and says so
        sms = results["P15"]["result"][0]
        assert sms["silbato"]["texts"] == sms["floor"]["texts"] == 12 and sms["silbato"]["responders_first"]
        assert sms["ratio"] > 0 and sms["modem"][0]["last_text_s"] == 12 * 3.0


def test_a_plain_text_is_flooded_as_far_as_its_hop_limit_and_no_further():
    flood = load("plain_flood").flood
    # A 5-node line without loss: 4 hops, so hop limit 3 (sender plus 3 relays) reaches the end...
    reach = flood(5, "line", loss=0.0, preset="MEDIUM_FAST", seed=1, hop_limit=3, texts=2)
    assert reach["hops_to_farthest"] == 4
    assert all(math.isfinite(t) for t in reach["to_all"])
    # ...and hop limit 2 does not: nothing relays, repairs or re-sends it.
    short = flood(5, "line", loss=0.0, preset="MEDIUM_FAST", seed=1, hop_limit=2, texts=2)
    assert short["to_all"] == [math.inf, math.inf]
    assert short["to_far"] == [math.inf, math.inf]


def test_block_and_line_report_the_baseline_the_floor_and_every_state_side_by_side(capsys):
    floor_of = load("plain_flood").floor_seconds
    rows = load("block").main(["--alerts", "2", "--nodes", "8", "--presets", "MEDIUM_FAST", "--rest", "20"])
    printed = capsys.readouterr().out
    assert "Meshtastic, hop 3" in printed and "Meshtastic, hop 7" in printed
    row = rows[0]
    assert row["floor_s"] == floor_of(row["hops_to_farthest"], "MEDIUM_FAST") > 0
    # No protocol beats the floor, the baseline included.
    assert row["farthest_p50_s"] >= row["floor_s"]
    for state in ("confirmed", "all_clear"):
        assert set(row[state]) >= {"delivered_all", "farthest_p95_s", "all_nodes_p95_s"}
    assert row["coverage_p95_s"] > 0
    # every state of every alert pooled: a share, and a mean no state can beat the floor to
    assert "pooled: on every node within 10 s" in printed
    assert 0.0 <= row["all_nodes_within_10s"] <= 1.0 and row["all_nodes_mean_s"] >= row["floor_s"]
    assert "false SILENT verdicts" in printed and row["false_silent_verdicts"] == 0, "every building is up"
    for b in row["baseline"]:
        assert 0.0 <= b["delivered_all"] <= 1.0
        assert not math.isfinite(b["farthest_p50_s"]) or b["farthest_p50_s"] >= row["floor_s"]
        assert {"ratio_farthest_p50_s", "ratio_farthest_p95_s", "ratio_all_nodes_p95_s"} <= set(b)
    lines = load("propagation").main(["--alerts", "1", "--nodes", "3"])
    assert len(lines) == 6 and all(len(r["baseline"]) == 2 and r["floor_s"] > 0 for r in lines)


def test_the_outage_scenario_reports_silent_buildings_and_the_catch_up():
    row = load("outage").main(["--kinds", "line", "--line-nodes", "3", "--outage", "200", "--after", "300"])[0]
    assert row["middle"] == 2 and row["alerts_meanwhile"] == 3
    assert row["outaged_shown_silent_by"] >= 1        # 200 s without its radio: its neighbours say so
    for key in ("healthy_silent_during", "silent_after_return_ever", "silent_2min_after_return", "silent_at_end"):
        assert isinstance(row[key], list)
    assert row["holds_all_after_return_s"] > 0


def test_the_broker_load_benchmark_delivers_every_message_to_every_block_in_its_smoke_size():
    from node.bridge.broker import mosquitto_path

    if mosquitto_path() is None:
        import pytest
        pytest.skip("mosquitto is not installed (.ci/apt-packages)")
    (row,) = load("broker_load").main(["--blocks", "10", "--seconds", "2", "--rate", "1", "--procs", "1"])
    assert row["published"] > 10 and row["delivered"] == row["expected"] == row["published"] * 10
    assert row["latency_p95_ms"] >= row["latency_p50_ms"] > 0 and row["broker_cpu_pct"] >= 0
