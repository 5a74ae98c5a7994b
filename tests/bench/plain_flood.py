"""The baseline for P3 and P5: what a Meshtastic user does today, and the physical floor.

A plain Meshtastic user types the alert as one broadcast text and sends it once: the
radios flood it (managed flooding: each radio rebroadcasts a packet it has not seen,
after its contention delay, unless it hears another radio's rebroadcast first, while
the hop limit lasts), and nothing else happens: no relays, no receipts, no re-sends.

``flood`` sends such texts on a bare ``SimAir`` built with the same arguments as the
block's (same seed, so the same topology and link SNRs; same loss; same preset) and
no daemons, so the channel carries nothing but the texts: the baseline gets a quiet
channel, which only flatters it. The simulated air already floods any packet this way
whatever its port, so it needs no change to model a text.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from node.protocol import wire
from node.protocol.airtime import MESH_OVERHEAD, time_on_air
from node.radio.sim_air import Scheduler, SimAir, hops

TEXT_MESSAGE_APP = 1                                            # Meshtastic's port for text messages
TRANSITION_BYTES = wire.frame_size(wire.FrameType.TRANSITION)   # the same size as our alert frame
MESHTASTIC_HOP_LIMITS = (3, 7)                                  # the app's default, and the most it allows
FLOOD_SPAN = 240.0   # simulated seconds a text's flood is given to die out (a LONG_FAST 7-hop flood takes < 90 s)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile; a lost delivery counts as ``math.inf``, so a p95 with more than
    5% lost is inf (shown as 'never'). NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else math.nan


def floor_seconds(hop_count: int, preset: str, payload: int = TRANSITION_BYTES) -> float:
    """The physical floor: one airtime per hop along the shortest path, no waiting at all."""
    return hop_count * time_on_air(payload + MESH_OVERHEAD, preset)


def ratio(a: float, b: float) -> float:
    """a / b for the side-by-side tables; NaN when either is lost (inf) or undefined."""
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b


def flood(n: int, kind: str, *, loss: float, preset: str, seed: int, hop_limit: int, texts: int,
          origin: int = 1, far: int | None = None, size: int = TRANSITION_BYTES) -> dict:
    """Send ``texts`` broadcast texts of ``size`` bytes from ``origin``, one at a time, each flood
    left to die out before the next. Seconds from the send to the farthest radio (in hops from
    ``origin``, unless ``far`` is given) and to the last radio; ``inf`` where never heard."""
    air = SimAir(n, kind, loss=loss, preset=preset, seed=seed, hop_limit=hop_limit, scheduler=Scheduler())
    distance = hops(air.links, origin)
    far = far if far is not None else max(distance.items(), key=lambda kv: kv[1])[0]
    heard: dict[int, float] = {}
    for number, radio in air.radios.items():
        # No daemon listens on this bare air: the hook just notes when each radio first hears a text.
        radio.on_packet = lambda packet, number=number: heard.setdefault(number, air.scheduler.now())
    to_far, to_all = [], []
    for _ in range(texts):
        heard.clear()
        start = air.scheduler.now()
        heard[origin] = start
        air.radios[origin].emit(bytes(size), port=TEXT_MESSAGE_APP, hop_limit=hop_limit)
        air.scheduler.run_for(FLOOD_SPAN)
        to_far.append(heard[far] - start if far in heard else math.inf)
        to_all.append(max(heard.values()) - start if len(heard) == n else math.inf)
    return {"hop_limit": hop_limit, "texts": texts, "links": air.links, "hops_to_farthest": distance[far],
            "to_far": to_far, "to_all": to_all, "airtime_per_text_s": sum(air.airtime.values()) / max(texts, 1)}


def summary(to_far: list[float], to_all: list[float]) -> dict:
    """Delivered-to-all share, farthest p50/p95 and every-node p95 (inf where more than 5% never arrive)."""
    count = max(len(to_all), 1)
    return {"delivered_all": sum(math.isfinite(t) for t in to_all) / count,
            "delivered_far": sum(math.isfinite(t) for t in to_far) / max(len(to_far), 1),
            "farthest_p50_s": percentile(to_far, 0.5), "farthest_p95_s": percentile(to_far, 0.95),
            "all_nodes_p95_s": percentile(to_all, 0.95)}


def seconds(value: float, width: int = 6) -> str:
    """A table cell: seconds, or 'never' for a lost delivery, '-' for nothing measured."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return f"{'-':>{width}}"
    if math.isinf(value):
        return f"{'never':>{width}}"
    return f"{value:{width}.2f}"
