"""The simulated air: a discrete-event model of a Meshtastic LoRa mesh.

- ``Scheduler`` runs events in simulated seconds, either as fast as possible
  (``run_until``: tests) or against the wall clock times a scale factor
  (``start``: the block demo).
- ``time_on_air`` is Semtech's LoRa formula (AN1200.13) with Meshtastic's presets.
- ``SimAir`` floods packets the way Meshtastic does: each radio rebroadcasts a
  packet it has not seen (dedup on origin + packet id) after a random
  contention delay, while the hop limit lasts. A radio transmits one packet at a
  time. Each link drops a packet with its loss probability, from a seeded RNG.
- ``SimRadio`` is a ``node.radio.link.Link``, so a node cannot tell it from a radio.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import math
import random
import threading
import time
from dataclasses import dataclass, replace
from typing import Callable

from node.protocol.airtime import MESH_OVERHEAD, PRESETS, slot_time, symbol_time, time_on_air  # noqa: F401
from node.errors import RadioError
from node.radio.link import Link, Receive

log = logging.getLogger(__name__)

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


# -- radio physics -------------------------------------------------------------------------

TX_POWER_DBM = 20.0        # a typical Meshtastic board's default
NOISE_FLOOR_DBM = -114.0   # thermal noise in 250 kHz plus a 6 dB noise figure
PATH_LOSS_1M_DB = 32.0     # free space at 1 m, 915 MHz
PATH_LOSS_EXPONENT = 3.5   # log-distance exponent for a built-up block (walls, floors)
SHADOWING_DB = 4.0         # standard deviation of a link's fixed shadowing
CAPTURE_DB = 6.0           # a reception survives an overlap if it is this much stronger
CAD_SYMBOLS = 2            # channel activity detection notices a packet this many symbols after it starts
SNR_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}  # demodulation limit per SF
# Meshtastic's contention window (RadioInterface): CW from 3 to 8, weighted by SNR from -20 to +10 dB.
CW_MIN, CW_MAX = 3, 8
SNR_MIN, SNR_MAX = -20.0, 10.0


def snr_floor(preset: str) -> float:
    return SNR_FLOOR_DB[PRESETS[preset][1]]


def path_loss_db(distance_m: float) -> float:
    """Log-distance path loss, without shadowing."""
    return PATH_LOSS_1M_DB + 10 * PATH_LOSS_EXPONENT * math.log10(max(distance_m, 1.0))


def link_range_m(preset: str) -> float:
    """Distance at which the median link reaches the demodulation limit."""
    budget = TX_POWER_DBM - NOISE_FLOOR_DBM - snr_floor(preset)
    return 10 ** ((budget - PATH_LOSS_1M_DB) / (10 * PATH_LOSS_EXPONENT))


def topology(n: int, kind: str, rng: random.Random, preset: str = "MEDIUM_FAST") -> dict[int, dict[int, float]]:
    """Links between radios 1..n, as ``{a: {b: snr_db}}`` (symmetric).

    ``line`` and ``grid`` (4-neighbour) place nodes at 70% of the link range with
    seeded shadowing on each link; ``random`` scatters them over a square sized
    for about six neighbours each and keeps the links whose SNR, from the
    log-distance model with shadowing, clears the preset's demodulation limit.
    """
    floor = snr_floor(preset)
    reach = link_range_m(preset)

    def snr(distance: float) -> float:
        return TX_POWER_DBM - path_loss_db(distance) + rng.gauss(0.0, SHADOWING_DB) - NOISE_FLOOR_DBM

    links: dict[int, dict[int, float]] = {i: {} for i in range(1, n + 1)}

    def link(a: int, b: int, value: float) -> None:
        links[a][b] = links[b][a] = value

    if kind in ("line", "grid"):
        spacing = 0.7 * reach
        pairs = []
        if kind == "line":
            pairs = [(i, i + 1) for i in range(1, n)]
        else:
            cols = math.ceil(math.sqrt(n))
            for i in range(1, n + 1):
                if i % cols and i + 1 <= n:
                    pairs.append((i, i + 1))
                if i + cols <= n:
                    pairs.append((i, i + cols))
        for a, b in pairs:
            link(a, b, max(snr(spacing), floor + 1.0))  # the drawn topology is the real one
    elif kind == "random":
        side = reach * math.sqrt(n * math.pi / 6.0) if n > 1 else 1.0
        for _ in range(200):
            points = {i: (rng.uniform(0, side), rng.uniform(0, side)) for i in links}
            for i in links:
                links[i].clear()
            for a, b in itertools.combinations(points, 2):
                value = snr(math.dist(points[a], points[b]))
                if value >= floor:
                    link(a, b, value)
            if _connected(links):
                break
            side *= 0.97
    else:
        raise ValueError(f"unknown topology {kind!r}: expected line, grid or random")
    return links


def _connected(nbrs) -> bool:
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


def hops(links, origin: int) -> dict[int, int]:
    """Fewest hops from ``origin`` to every radio (breadth-first)."""
    dist, todo = {origin: 0}, [origin]
    while todo:
        nxt = []
        for a in todo:
            for b in links[a]:
                if b not in dist:
                    dist[b] = dist[a] + 1
                    nxt.append(b)
        todo = nxt
    return dist


@dataclass
class _Reception:
    sender: int
    power: float   # dB above the noise floor, i.e. the SNR
    start: float
    end: float
    packet: Packet
    ok: bool = True


class SimAir:
    """N simulated radios sharing one channel. Radios are numbered 1..n, like the nodes.

    Per reception: half duplex (a radio that transmits hears nothing), collisions
    with 6 dB capture, then the link's loss probability. Per transmission:
    listen-before-talk with a random backoff while the channel is busy.
    """

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
        self.links = topology(n, kind, self.rng, preset)
        self.neighbours = {a: set(b) for a, b in self.links.items()}
        self.loss = {(a, b): loss for a in self.links for b in self.links[a]}
        self.radios = {i: SimRadio(self, i) for i in self.links}
        self.airtime: dict[int, float] = {i: 0.0 for i in self.radios}   # seconds transmitted, per radio
        self.transmissions = 0
        self.collisions = 0
        self._lock = threading.RLock()

    def set_loss(self, a: int, b: int, loss: float) -> None:
        """Loss probability of the link between radios a and b (both directions)."""
        self.loss[(a, b)] = self.loss[(b, a)] = loss

    def transmit(self, sender: int, packet: Packet) -> None:
        """Queue ``packet`` on ``sender``'s radio; it goes out when the radio and channel are free."""
        radio = self.radios[sender]
        with self._lock:
            radio.queue.append(packet)
        self.scheduler.after(0.0, radio._try_send)

    def _start(self, sender: int, packet: Packet, duration: float) -> None:
        """``sender`` starts transmitting now: every neighbour begins to receive."""
        now = self.scheduler.now()
        end = now + duration
        with self._lock:
            self.airtime[sender] += duration
            self.transmissions += 1
            me = self.radios[sender]
            for rx in me.active:        # half duplex: what it was receiving is lost
                rx.ok = False
            me.account(now, duration)
            for j, snr in self.links[sender].items():
                other = self.radios[j]
                if not other.plugged:
                    continue
                other.account(now, duration)
                reception = _Reception(sender, snr, now, end, packet, ok=other.tx_until <= now)
                for rx in other.active:
                    if rx.end <= now:
                        continue
                    if reception.power >= rx.power + CAPTURE_DB:
                        rx.ok = False
                    elif rx.power >= reception.power + CAPTURE_DB:
                        reception.ok = False
                    else:
                        rx.ok = reception.ok = False
                    self.collisions += 1
                other.active.append(reception)
                self.scheduler.at(end, lambda other=other, reception=reception: self._finish(other, reception))

    def _finish(self, radio: "SimRadio", reception: _Reception) -> None:
        with self._lock:
            if reception in radio.active:
                radio.active.remove(reception)
            delivered = reception.ok and self.rng.random() >= self.loss[(reception.sender, radio.number)]
        if delivered:
            radio.hear(reception.packet, reception.power)

    def backoff(self) -> float:
        """A random listen-before-talk wait, in seconds."""
        with self._lock:
            return self.rng.randint(1, 2 ** CW_MIN) * slot_time(self.preset)

    def rebroadcast_delay(self, snr: float) -> float:
        """Meshtastic's CLIENT delay: after 2*CWmax slots, a random 2^CW slots, CW growing with SNR.

        Far (weak) receivers wait least, so the rebroadcast that reaches furthest goes first.
        """
        fraction = (min(max(snr, SNR_MIN), SNR_MAX) - SNR_MIN) / (SNR_MAX - SNR_MIN)
        cw = round(CW_MIN + fraction * (CW_MAX - CW_MIN))
        with self._lock:
            return (2 * CW_MAX + self.rng.randint(0, 2 ** cw)) * slot_time(self.preset)

    def utilisation(self, radio: int, window: float) -> float:
        """Share of the last ``window`` seconds that ``radio`` heard the channel busy (its own sends too)."""
        return self.radios[radio].utilisation(self.scheduler.now(), window)


class SimRadio(Link):
    """One simulated radio; as a ``Link`` it is what its node sends and hears through."""

    def __init__(self, air: SimAir, number: int):
        self.air = air
        self.number = number
        self.plugged = True
        self.heard = 0
        self.cancelled = 0              # rebroadcasts dropped because another node's was heard first
        self.queue: collections.deque[Packet] = collections.deque()
        self.active: list[_Reception] = []
        self.tx_until = 0.0
        self.busy_log: collections.deque[tuple[float, float]] = collections.deque()  # (start, seconds)
        self._sending = False
        self._seen: set[tuple[int, int]] = set()
        self._pending: dict[tuple[int, int], Packet] = {}  # rebroadcasts waiting for their delay
        self._ids = itertools.count(1)
        self._on_receive: Receive | None = None
        # A radio with its own firmware model (node.radio.sim_radio) takes whole packets here instead.
        self.on_packet: Callable[[Packet], None] | None = None

    # -- Link ------------------------------------------------------------------------------

    def start(self, on_receive: Receive, on_refused=None) -> None:
        self._on_receive = on_receive

    def stop(self) -> None:
        self._on_receive = None

    @property
    def troubles(self) -> dict[str, str]:
        return {} if self.plugged else {"radio": "radio unplugged"}

    @property
    def channel_utilisation(self) -> float:
        """Share of the last minute this radio heard the channel busy, as Meshtastic reports it."""
        return self.utilisation(self.air.scheduler.now(), 60.0)

    def send(self, frame: bytes, hop_limit: int | None = None) -> None:
        if not self.plugged:
            raise RadioError("radio unplugged")
        self.emit(bytes(frame), hop_limit=hop_limit)

    # -- the air -----------------------------------------------------------------------------

    def emit(self, payload: bytes, *, port: int = PRIVATE_APP, channel: int = 0, hop_limit: int | None = None,
             packet_id: int | None = None) -> Packet:
        """Put a packet on the air from this radio."""
        packet = Packet(self.number, next(self._ids) if packet_id is None else packet_id,
                        self.air.hop_limit if hop_limit is None else hop_limit, payload, port, channel)
        self._seen.add((packet.origin, packet.id))
        self.air.transmit(self.number, packet)
        return packet

    def _try_send(self) -> None:
        """Send the head of the queue if the radio is idle and the channel is clear; else retry later."""
        air = self.air
        now = air.scheduler.now()
        with air._lock:
            if self._sending or not self.queue:
                return
            if not self.plugged:
                self.queue.clear()
                return
            # Listen before talk: channel activity detection needs a few symbols to notice a packet.
            heard = [rx for rx in self.active if rx.end > now and rx.start <= now - CAD_SYMBOLS * symbol_time(air.preset)]
            if heard:
                wait = max(rx.end for rx in heard) - now + air.backoff()
                air.scheduler.after(wait, self._try_send)
                return
            packet = self.queue.popleft()
            self._sending = True
            duration = time_on_air(len(packet.payload) + MESH_OVERHEAD, air.preset)
            self.tx_until = now + duration
        air._start(self.number, packet, duration)
        air.scheduler.at(now + duration, self._sent)

    def _sent(self) -> None:
        with self.air._lock:
            self._sending = False
        self._try_send()

    def hear(self, packet: Packet, snr: float = 0.0) -> None:
        """A packet arrived over the air: dedup, hand it to the node, and relay it."""
        key = (packet.origin, packet.id)
        if not self.plugged:
            return
        if key in self._seen:
            # Meshtastic CLIENT: someone else rebroadcast it first, so ours is not needed.
            with self.air._lock:
                pending = self._pending.pop(key, None)
                if pending is not None:
                    self.cancelled += 1
                    if pending in self.queue:
                        self.queue.remove(pending)
            return
        self._seen.add(key)
        self.heard += 1
        if self.on_packet is not None:
            self.on_packet(packet)
        elif self._on_receive is not None and packet.port == PRIVATE_APP:
            self._on_receive(packet.payload)
        if packet.hop_limit > 0:
            relay = replace(packet, hop_limit=packet.hop_limit - 1)
            with self.air._lock:
                self._pending[key] = relay
            self.air.scheduler.after(self.air.rebroadcast_delay(snr), lambda: self._relay(key, relay))

    def _relay(self, key: tuple[int, int], relay: Packet) -> None:
        with self.air._lock:
            if self._pending.get(key) is not relay:
                return  # cancelled
            self.queue.append(relay)
        self._try_send()
        # It stays cancellable until it goes on air; forget it once it has.
        self.air.scheduler.after(0.0, lambda: self._forget(key, relay))

    def _forget(self, key: tuple[int, int], relay: Packet) -> None:
        with self.air._lock:
            if relay not in self.queue and self._pending.get(key) is relay:
                del self._pending[key]

    # -- channel utilisation -----------------------------------------------------------------

    def account(self, start: float, seconds: float) -> None:
        self.busy_log.append((start, seconds))
        while self.busy_log and self.busy_log[0][0] < start - 3600:
            self.busy_log.popleft()

    def utilisation(self, now: float, window: float) -> float:
        since = now - window
        busy, until = 0.0, since  # overlapping receptions (a collision) keep the channel busy once, not twice
        for start, d in sorted(entry for entry in self.busy_log if entry[0] + entry[1] > since):
            end = min(start + d, now)
            if end > until:
                busy += end - max(start, until)
                until = end
        return min(1.0, busy / window) if window > 0 else 0.0
