"""The adversarial suite prints what it tried (``adversary.TALLY``) at the end of the run."""

from __future__ import annotations

from adversary import TALLY


def pytest_terminal_summary(terminalreporter):
    if TALLY:
        terminalreporter.write_sep("-", "adversarial suite")
        for name, count in sorted(TALLY.items()):
            terminalreporter.write_line(f"{name}: {count:,}")
