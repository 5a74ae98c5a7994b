"""Web overload: the page sheds load with 429/503, never a 500, and the button still sounds.

The CI size is 2,000 requests at 200 per second; the issue's 10,000 run is
`.venv/bin/python tests/bench/web_overload.py`. No timing asserts: the hold-to-siren
latency under load is printed here and reported by the benchmark.
"""

import importlib.util
from pathlib import Path


def test_a_request_flood_gets_429_or_503_never_500_and_the_siren_still_sounds(capsys):
    spec = importlib.util.spec_from_file_location(
        "web_overload", Path(__file__).parent.parent / "bench" / "web_overload.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    row = bench.main(["--requests", "2000", "--rate", "200", "--holds", "5"])
    answers = row["answers"]
    assert set(answers) <= {"200", "304", "429", "503"}, answers
    assert row["server_errors"] == 0 and row["failed_requests"] == 0
    assert answers.get("429", 0) + answers.get("503", 0) > 0, "the flood was not shed"
    assert row["sounded"] == row["holds"] == 5
    print(capsys.readouterr().out)
