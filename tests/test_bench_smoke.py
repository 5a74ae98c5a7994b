"""The benchmark suite in its smoke sizes, so every benchmark keeps working. No timing asserts."""

import importlib.util
import json
from pathlib import Path


def load(name):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parent / "bench" / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_the_whole_suite_runs_in_smoke_sizes_and_writes_its_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    results = load("suite").main(["--smoke", "--json", str(out)])
    printed = capsys.readouterr().out
    for bench_id in ("P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"):
        assert f"== {bench_id}" in printed
    assert json.loads(out.read_text())["P1"]["name"] == "frames"
    assert results["P3"]["result"][0]["delivered_ratio"] == 1.0
    assert results["P1"]["result"][0]["bytes"] == 82
