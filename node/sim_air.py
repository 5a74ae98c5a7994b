"""The simulated air: a discrete-event model of a Meshtastic LoRa mesh.

- ``Scheduler`` runs events in simulated seconds, either as fast as possible
  (``run_until``: tests) or against the wall clock times a scale factor
  (``start``: the block demo).
- ``time_on_air`` is Semtech's LoRa formula (AN1200.13) with Meshtastic's presets.
- ``SimAir`` floods packets the way Meshtastic does: each radio rebroadcasts a
  packet it has not seen (dedup on origin + packet id) after a random
  contention delay, while the hop limit lasts. A radio transmits one packet at a
  time. Each link drops a packet with its loss probability, from a seeded RNG.
- ``SimRadio`` is a ``node.radio.Link``, so a node cannot tell it from a radio.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from node.errors import RadioError
from node.radio import Link, Receive

log = logging.getLogger(__name__)

# Meshtastic modem presets: bandwidth (Hz), spreading factor, coding rate 4/(4+cr).
PRESETS: dict[str, tuple[float, int, int]] = {
    "SHORT_TURBO": (500e3, 7, 1),
    "SHORT_FAST": (250e3, 7, 1),
    "SHORT_SLOW": (250e3, 8, 1),
    "MEDIUM_FAST": (250e3, 9, 1),
    "MEDIUM_SLOW": (250e3, 10, 1),
    "LONG_FAST": (250e3, 11, 1),
    "LONG_MODERATE": (125e3, 11, 4),
    "LONG_SLOW": (125e3, 12, 4),
}
PREAMBLE_SYMBOLS = 16     # Meshtastic's preamble length
MESH_OVERHEAD = 21        # bytes: Meshtastic's 16-byte header plus the Data protobuf around our frame


def symbol_time(preset: str) -> float:
    bw, sf, _ = PRESETS[preset]
    return (2 ** sf) / bw


def time_on_air(payload_bytes: int, preset: str) -> float:
    """Seconds on air for a LoRa packet of ``payload_bytes`` (the whole PHY payload)."""
    bw, sf, cr = PRESETS[preset]
    t_sym = (2 ** sf) / bw
    de = 1 if t_sym > 0.016 else 0   # low data rate optimisation
    header, crc = 0, 1                # explicit header, CRC on
    n = math.ceil((8 * payload_bytes - 4 * sf + 28 + 16 * crc - 20 * header) / (4 * (sf - 2 * de)))
    payload_symbols = 8 + max(n * (cr + 4), 0)
    return (PREAMBLE_SYMBOLS + 4.25) * t_sym + payload_symbols * t_sym


def slot_time(preset: str) -> float:
    """Meshtastic's contention slot: a few symbols plus radio turnaround, in seconds."""
    return 2.5 * symbol_time(preset) + 0.0002 + 0.0004 + 0.007


class Scheduler:
    """Events in simulated seconds. ``scale=None``: virtual time, advanced only by ``run_until``."""

    def __init__(self, scale: float | None = None):
        self.scale = scale
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._now = 0.0
        self._wall0 = time.monotonic()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def now(self) -> float:
        if self.scale is None:
            return self._now
        return max(self._now, (time.monotonic() - self._wall0) * self.scale)

    def at(self, when: float, fn: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), fn))
            self._cond.notify()

    def after(self, delay: float, fn: Callable[[], None]) -> None:
        self.at(self.now() + delay, fn)

    def every(self, period: float, fn: Callable[[], None], *, offset: float = 0.0) -> None:
        """Call ``fn`` every ``period`` simulated seconds."""
        def tick() -> None:
            fn()
            self.after(period, tick)
        self.after(offset or period, tick)

    def _run(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception:
            log.exception("simulated event failed")

    def run_until(self, until: float) -> None:
        """Virtual time: run every event due up to ``until``, then set the clock there."""
        while True:
            with self._cond:
                if not self._heap or self._heap[0][0] > until:
                    self._now = max(self._now, until)
                    return
                when, _, fn = heapq.heappop(self._heap)
                self._now = max(self._now, when)
            self._run(fn)

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now() + seconds)

    def run_until_true(self, predicate: Callable[[], bool], *, limit: float, step: float = 1.0) -> float | None:
        """Advance virtual time in ``step``s until ``predicate()``; return the time, or None after ``limit``."""
        end = self.now() + limit
        while self.now() < end:
            if predicate():
                return self.now()
            self.run_until(min(self.now() + step, end))
        return self.now() if predicate() else None

    def start(self) -> None:
        """Real time (times ``scale``): run events in a background thread as they fall due."""
        if self.scale is None:
            raise ValueError("a virtual-time scheduler is driven with run_until(), not start()")
        self._wall0 = time.monotonic() - self._now / self.scale
        self._thread = threading.Thread(target=self._loop, name="sim-air", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stopping.is_set():
            with self._cond:
                if not self._heap:
                    self._cond.wait(0.5)
                    continue
                wait = (self._heap[0][0] - self.now()) / self.scale
                if wait > 0:
                    self._cond.wait(min(wait, 0.5))
                    continue
                when, _, fn = heapq.heappop(self._heap)
                self._now = max(self._now, when)
            self._run(fn)

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)


PRIVATE_APP = 256  # Meshtastic's port number for private applications such as ours


@dataclass(frozen=True)
class Packet:
    origin: int     # the radio that first sent it
    id: int         # Meshtastic packet id, unique per origin
    hop_limit: int
    payload: bytes
    port: int = PRIVATE_APP
    channel: int = 0


def topology(n: int, kind: str, rng: random.Random) -> dict[int, set[int]]:
    """Neighbour sets for radios 1..n: ``line``, ``grid`` (4-neighbour) or ``random`` (geometric, connected)."""
    nbrs: dict[int, set[int]] = {i: set() for i in range(1, n + 1)}

    def link(a: int, b: int) -> None:
        nbrs[a].add(b)
        nbrs[b].add(a)

    if kind == "line":
        for i in range(1, n):
            link(i, i + 1)
    elif kind == "grid":
        cols = math.ceil(math.sqrt(n))
        for i in range(1, n + 1):
            if i % cols and i + 1 <= n:
                link(i, i + 1)
            if i + cols <= n:
                link(i, i + cols)
    elif kind == "random":
        points = {i: (rng.random(), rng.random()) for i in nbrs}
        radius = math.sqrt(2.0 * math.log(max(n, 2)) / (math.pi * n)) if n > 1 else 1.0
        while True:
            for i in nbrs:
                nbrs[i].clear()
            for a, b in itertools.combinations(points, 2):
                if math.dist(points[a], points[b]) <= radius:
                    link(a, b)
            if _connected(nbrs):
                break
            radius *= 1.1
    else:
        raise ValueError(f"unknown topology {kind!r}: expected line, grid or random")
    return nbrs


def _connected(nbrs: dict[int, set[int]]) -> bool:
    if not nbrs:
        return True
    start = next(iter(nbrs))
    seen, todo = {start}, [start]
    while todo:
        for j in nbrs[todo.pop()]:
            if j not in seen:
                seen.add(j)
                todo.append(j)
    return len(seen) == len(nbrs)


class SimAir:
    """N simulated radios sharing one channel. Radios are numbered 1..n, like the nodes."""

    def __init__(self, n: int, kind: str = "line", *, loss: float = 0.0, preset: str = "MEDIUM_FAST",
                 hop_limit: int = 7, seed: int = 1, scheduler: Scheduler | None = None):
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: expected one of {', '.join(PRESETS)}")
        if not 0.0 <= loss < 1.0:
            raise ValueError("loss must be in [0, 1)")
        self.rng = random.Random(seed)
        self.scheduler = scheduler or Scheduler()
        self.preset = preset
        self.hop_limit = hop_limit
        self.neighbours = topology(n, kind, self.rng)
        self.loss = {(a, b): loss for a in self.neighbours for b in self.neighbours[a]}
        self.radios = {i: SimRadio(self, i) for i in self.neighbours}
        self.airtime: dict[int, float] = {i: 0.0 for i in self.radios}   # seconds transmitted, per radio
        self.transmissions = 0
        self._lock = threading.RLock()

    def set_loss(self, a: int, b: int, loss: float) -> None:
        """Loss probability of the link between radios a and b (both directions)."""
        self.loss[(a, b)] = self.loss[(b, a)] = loss

    def transmit(self, sender: int, packet: Packet) -> None:
        """Queue ``packet`` on ``sender``'s radio; it reaches the neighbours when its airtime ends."""
        with self._lock:
            radio = self.radios[sender]
            duration = time_on_air(len(packet.payload) + MESH_OVERHEAD, self.preset)
            start = max(self.scheduler.now(), radio.busy_until)
            radio.busy_until = start + duration
            self.airtime[sender] += duration
            self.transmissions += 1
        self.scheduler.at(start + duration, lambda: self._arrive(sender, packet))

    def _arrive(self, sender: int, packet: Packet) -> None:
        for j in sorted(self.neighbours[sender]):
            with self._lock:
                lost = self.rng.random() < self.loss[(sender, j)]
            if not lost:
                self.radios[j].hear(packet)

    def rebroadcast_delay(self) -> float:
        """Meshtastic-style contention: a random number of slots in a window of 2 * CW."""
        with self._lock:
            return self.rng.randint(0, 2 * 5) * slot_time(self.preset)


class SimRadio(Link):
    """One simulated radio; as a ``Link`` it is what its node sends and hears through."""

    def __init__(self, air: SimAir, number: int):
        self.air = air
        self.number = number
        self.busy_until = 0.0
        self.plugged = True
        self.heard = 0
        self._seen: set[tuple[int, int]] = set()
        self._ids = itertools.count(1)
        self._on_receive: Receive | None = None
        # A radio with its own firmware model (node.sim_radio) takes whole packets here instead.
        self.on_packet: Callable[[Packet], None] | None = None

    def start(self, on_receive: Receive, on_refused=None) -> None:
        self._on_receive = on_receive

    def stop(self) -> None:
        self._on_receive = None

    @property
    def troubles(self) -> dict[str, str]:
        return {} if self.plugged else {"radio": "radio unplugged"}

    def send(self, frame: bytes) -> None:
        if not self.plugged:
            raise RadioError("radio unplugged")
        self.emit(bytes(frame))

    def emit(self, payload: bytes, *, port: int = PRIVATE_APP, channel: int = 0, hop_limit: int | None = None,
             packet_id: int | None = None) -> Packet:
        """Put a packet on the air from this radio."""
        packet = Packet(self.number, next(self._ids) if packet_id is None else packet_id,
                        self.air.hop_limit if hop_limit is None else hop_limit, payload, port, channel)
        self._seen.add((packet.origin, packet.id))
        self.air.transmit(self.number, packet)
        return packet

    def hear(self, packet: Packet) -> None:
        """A packet arrived over the air: dedup, hand it to the node, and relay it."""
        key = (packet.origin, packet.id)
        if not self.plugged or key in self._seen:
            return
        self._seen.add(key)
        self.heard += 1
        if self.on_packet is not None:
            self.on_packet(packet)
        elif self._on_receive is not None and packet.port == PRIVATE_APP:
            self._on_receive(packet.payload)
        if packet.hop_limit > 0:
            relay = replace(packet, hop_limit=packet.hop_limit - 1)
            self.air.scheduler.after(self.air.rebroadcast_delay(), lambda: self.air.transmit(self.number, relay))
