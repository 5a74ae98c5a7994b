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
