"""A reduced run of the propagation benchmark, so the benchmark keeps working. No timing asserts."""

import importlib.util
from pathlib import Path


def load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "bench" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_propagation_benchmark_smoke(tmp_path, capsys):
    bench = load("propagation")
    rows = bench.main(["--alerts", "2", "--nodes", "3", "--json", str(tmp_path / "out.json")])
    assert len(rows) == 6 and all(r["delivered"] == 1.0 for r in rows)
    assert "MEDIUM_FAST" in capsys.readouterr().out
    assert (tmp_path / "out.json").exists()


def test_radio_link_benchmark_smoke(tmp_path, capsys):
    rows = load("radio_link").main(["--cycles", "2", "--json", str(tmp_path / "radio.json")])
    assert rows["replug to connected"]["n"] == 2
    assert "unplug to TROUBLE" in capsys.readouterr().out
