"""A reduced run of the propagation benchmark, so the benchmark keeps working. No timing asserts."""

import importlib.util
from pathlib import Path


def test_propagation_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("propagation", Path(__file__).parent / "bench" / "propagation.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--alerts", "2", "--nodes", "3", "--json", str(tmp_path / "out.json")])
    assert len(rows) == 6 and all(r["delivered"] == 1.0 for r in rows)
    assert "MEDIUM_FAST" in capsys.readouterr().out
    assert (tmp_path / "out.json").exists()
