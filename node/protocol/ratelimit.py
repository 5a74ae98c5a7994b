"""The per-origin rate limit on verified frames from the air: pure, times passed in (seconds).

A legitimate node sends a few frames a minute: a heartbeat every 30 s or more, a receipt
per alert state at most every 30 s, re-sends from 30 s doubling, and its captains' actions.
In the simulator (three alerts at once, captains acting, 20% loss) no receiver ever got
more than 3 a minute from one origin, nor a burst above 8. The channel carries a transition
every 0.09 s on SHORT_FAST (650 a minute) and every 1.0 s on LONG_FAST (60 a minute): a
flood on any preset goes over.
"""

from __future__ import annotations

FLOOD_BURST = 30          # frames an origin may send at once (a radio's queue after a reconnect)
FLOOD_RATE = 20 / 60.0    # frames per second an origin may keep sending: 20 a minute


class OriginRateLimit:
    """A token bucket per origin node, for verified frames (a forger cannot spend another node's allowance).

    An origin may send ``burst`` frames at once and ``rate`` a second after that. One that
    goes over is *flooding*: all its frames are dropped, and still spend its allowance, until
    the bucket is full again (it kept below ``rate`` for a while). So a flood at the channel's
    rate gets ``burst`` frames through in all, not one every few seconds. Times are seconds on
    the node's clock; a clock set back refills nothing and locks no one out.
    """

    def __init__(self, burst: int = FLOOD_BURST, rate: float = FLOOD_RATE):
        self.burst, self.rate = float(burst), rate
        self._buckets: dict[int, tuple[float, float]] = {}  # origin -> (frames left, when counted)
        self.flooding: set[int] = set()

    def _left(self, origin: int, now: float) -> float:
        left, when = self._buckets.get(origin, (self.burst, now))
        return min(self.burst, left + max(0.0, now - when) * self.rate)

    def allow(self, origin: int, now: float) -> bool:
        """Count one frame from ``origin``: True to take it, False to drop it."""
        left = self._left(origin, now)
        if origin in self.flooding and left >= self.burst:
            self.flooding.discard(origin)  # it calmed down
        allowed = origin not in self.flooding and left >= 1
        if not allowed:
            self.flooding.add(origin)
        self._buckets[origin] = (max(0.0, left - 1), now)
        return allowed

    def calmed(self, now: float) -> list[int]:
        """Flooding origins whose allowance is full again: they are no longer flooding."""
        calm = [origin for origin in self.flooding if self._left(origin, now) >= self.burst]
        self.flooding.difference_update(calm)
        return calm
