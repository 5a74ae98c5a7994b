"""A reduced run of the web fan-out benchmark, so the benchmark keeps working. No timing asserts."""

import importlib.util
import json
from pathlib import Path


def test_web_fanout_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("web_fanout", Path(__file__).parent / "bench" / "web_fanout.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--clients", "5", "--alerts", "2", "--rate", "20", "--seconds", "1",
                          "--json", str(tmp_path / "out.json")])
    assert figures["clients"] == 5 and figures["get_errors"] == 0 and figures["get_requests"] == 20
    assert figures["rss_mb"] > 0
    assert "commit -> every client" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["alert_changes"] == 2


def test_slow_clients_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("slow_clients", Path(__file__).parent / "bench" / "slow_clients.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--slow", "60", "--cap", "8", "--header-timeout", "1", "--trickle", "1", "--loads", "5",
                          "--settle", "0.5", "--live-clients", "2", "--json", str(tmp_path / "out.json")])
    assert figures["new"]["failed"] == 0 and figures["new"]["alert_to_open_page_ms"] is not None
    assert figures["new"]["attacker"]["closed_by_server"] >= 60 - 8  # those past the cap, at least
    assert figures["new"]["turned_away_log_lines"] == 1 and not figures["new"]["address_logged"]
    assert figures["old"]["attacker"]["opened"] == 60
    assert "alert to open page" in capsys.readouterr().out
    assert json.loads((tmp_path / "out.json").read_text())["new"]["cap"] == 8


def test_evidence_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("evidence_bench", Path(__file__).parent / "bench" / "evidence.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    figures = bench.main(["--size", "3", "--uploads", "2", "--upload-size", "2", "--holds", "3", "--clients", "2",
                          "--json", str(tmp_path / "out.json")])
    assert figures["upload_errors"] == [] and figures["chained"], figures
    assert figures["holds_quiet"] == 3 and figures["holds_busy"] >= 1
    # the control: as many holds again, beside one idle-priority CPU burner a core
    assert figures["holds_control"] == figures["holds_busy"] and figures["burners"] >= 1, figures
    assert figures["hold_p99_ms_control"] >= figures["hold_p50_ms_control"] > 0
    # the large upload both ways, the order alternating, three times: the ratio is the median of the pairs
    assert len(figures["page_runs_s"]) == len(figures["plain_runs_s"]) == len(figures["ratios"]) == 3
    assert min(figures["ratios"]) <= figures["ratio"] <= max(figures["ratios"])
    assert figures["page_s"] > 0 and figures["plain_s"] > 0 and figures["rss_peak_mb"] >= figures["rss_idle_mb"]
    # every alert change (3 holds: raised and cancelled) reached both live page clients
    assert figures["live_changes_quiet"] == 6 and figures["live_missed_quiet"] == 0, figures
    assert figures["live_changes_uploading"] >= 2 and figures["live_missed_uploading"] == 0, figures
    assert figures["live_max_ms_uploading"] >= figures["live_p50_ms_uploading"] >= 0
    out = capsys.readouterr().out
    assert "the control" in out and "median of 3 pairs" in out
    assert "against a plain HTTP copy" in out and "alert change -> every live client" in out
    assert json.loads((tmp_path / "out.json").read_text())["uploads"] == 2
