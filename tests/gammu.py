"""The real gammu-smsd on Gammu's dummy driver, for the gateway's tests (node/gateway/dummy.py)."""

from __future__ import annotations

import threading
import time

from node.gateway.dummy import GAMMU_SMSD, GammuSmsd

__all__ = ["GAMMU_SMSD", "GammuSmsd", "until"]


def until(condition, timeout: float = 20.0, what: str = "condition"):
    """Wait for ``condition()`` to be true (checked every 20 ms); its value, or AssertionError."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        pause.wait(0.02)
