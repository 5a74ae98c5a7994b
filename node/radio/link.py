"""The node's link to the mesh: the daemon's only way to the radio.

A ``Link`` carries opaque frames: ``send(frame)`` hands one to the radio, and
``start(on_receive)`` registers the callback that gets every frame heard.
``troubles`` names what is wrong, as plain sentences keyed by a short word.

``MeshtasticLink`` talks to a Meshtastic radio through the real ``meshtastic``
library: ``SerialInterface`` on ``radio.port`` or ``TCPInterface`` on
``radio.tcp``. Frames go out as ``PRIVATE_APP`` (256) broadcasts. A supervisor
thread owns the interface: it connects, checks the radio's settings, notices an
unplug, and builds a fresh interface with backoff when the device returns (a
``meshtastic`` interface never reopens once its device is gone).

Traps in the library that this module works around, each found in its source:

- pypubsub keeps weak references: listeners are bound methods of this long-lived
  object, never lambdas; and topics are global, so each listener checks that the
  packet came from *this* link's interface;
- protobuf fields equal to 0 are missing from the packet dict (``channel`` 0);
- ``meshtastic.connection.lost`` also fires on a normal ``close()``;
- ``close()`` can hang joining the reader thread, so it runs with a timeout;
- over TCP, the library reconnects silently when the connection drops, and a frame
  written meanwhile vanishes; its first heartbeat races a quick ``close()`` and
  prints a BrokenPipe traceback. ``node/radio/interface.py`` (``_HonestTcp``)
  makes a drop end the interface, as on serial, and writes nothing once closing;
- ``sendData`` waits up to 30 s on a dead interface, and forever while the
  radio's queue is full, so it runs in a worker thread with a timeout;
- an oversized payload raises ``MeshInterfaceError``; refusals from the radio
  arrive later as routing NAKs (``TOO_LARGE``, ``DUTY_CYCLE_LIMIT``).
"""

from __future__ import annotations

import abc
import collections
import logging
import os
import queue
import threading
import time
from typing import Callable

from node import catalog
from node.catalog import N_
from node.errors import RadioError
from node.radio.interface import CLOSE_TIMEOUT, CONNECT_TIMEOUT, close_interface, describe, open_interface

log = logging.getLogger(__name__)

Receive = Callable[[bytes], None]
Refused = Callable[[bytes, str], None]


class FrameRefused(RadioError):
    """The radio will never send this frame (too large): drop it rather than block the outbox."""


class _Dropped(RadioError):
    """The connection dropped before the radio confirmed a frame."""


class Link(abc.ABC):
    """A transport for frames."""

    #: True when ``send`` returns at once (the simulated air), so the daemon may send
    #: under its lock; False when ``send`` may take seconds (a real radio).
    instant = True

    @abc.abstractmethod
    def start(self, on_receive: Receive, on_refused: Refused | None = None) -> None:
        """Begin delivering received frames to ``on_receive`` (from any thread).

        ``on_refused(frame, reason)`` is called when the radio refuses a frame after taking it.
        """

    @abc.abstractmethod
    def send(self, frame: bytes, hop_limit: int | None = None) -> None:
        """Hand ``frame`` to the radio; raise ``RadioError`` if the link is down.

        ``hop_limit`` 0 keeps a frame to direct neighbours (heartbeats, receipts); None uses the link's.
        """

    @property
    @abc.abstractmethod
    def troubles(self) -> dict[str, str]:
        """What is wrong, as ``{"radio": "plain sentence", ...}``; empty when healthy."""

    def send_text(self, text: str) -> None:
        """Send a plain Meshtastic text message, for people on ordinary radios. Optional."""

    @property
    def alive(self) -> bool:
        """Whether the link's own threads are running (the daemon's watchdog asks; see node/service.py)."""
        return True

    def stop(self) -> None:
        """Release the radio."""


class NullLink(Link):
    """No radio configured: the node still sounds and stores locally; frames wait in the outbox."""

    SENTENCE = "no radio configured: set radio.port to the Meshtastic radio's serial device"

    def start(self, on_receive: Receive, on_refused: Refused | None = None) -> None:
        pass

    def send(self, frame: bytes, hop_limit: int | None = None) -> None:
        raise RadioError(self.SENTENCE)

    @property
    def troubles(self) -> dict[str, str]:
        return {"radio": self.SENTENCE}


# -- text messages for plain Meshtastic users -------------------------------------------------

# External Notification on a plain radio (and the phone apps) ring on a text message
# with the bell character; they ignore PRIVATE_APP. Like the frames, a text carries codes
# only: the state, the location code and the alert id. The place name goes on air only
# when the operator opts in (radio.text_alert_places; silbato doctor warns), because the
# roster's place is typed by people ("apt 4B, Reyes") and a text is kept, readable, in
# every phone app on the channel.
# The words for each state, in English; node/translations has the other languages.
TEXT_ALERTS: dict[str, str] = {
    "reported": N_("RAID REPORTED at location %(location)s, not yet confirmed."),
    "confirmed": N_("RAID CONFIRMED at location %(location)s. Do not open the door."),
    "all_clear": N_("ALL CLEAR at location %(location)s."),
}
# The same, naming the place: only with radio.text_alert_places.
TEXT_ALERTS_WITH_PLACES: dict[str, str] = {
    "reported": N_("RAID REPORTED at %(place)s, not yet confirmed."),
    "confirmed": N_("RAID CONFIRMED at %(place)s. Do not open the door."),
    "all_clear": N_("ALL CLEAR at %(place)s."),
}


def text_alert(state: str, location: int, alert_id: str, language: str, place: str | None = None) -> str | None:
    """The bell text for ``state`` (reported, confirmed, all_clear), or None for other states.

    It names ``location`` by its code; given ``place`` (radio.text_alert_places), by that
    name instead. A language Silbato does not speak gets English.
    """
    words = (TEXT_ALERTS if place is None else TEXT_ALERTS_WITH_PLACES).get(state)
    if words is None:
        return None
    translations = catalog.translations(language if language in catalog.LANGUAGES else catalog.SOURCE)
    return f"\a SILBATO {alert_id}: " + translations.gettext(words) % {"location": location, "place": place}


# -- the real radio ------------------------------------------------------------------------

SEND_TIMEOUT = 5.0              # seconds for the library to take one frame
BACKOFF = (0.2, 0.5, 1.0, 2.0)  # seconds between reconnect attempts; the last repeats
TEXT_INTERVAL = 2.0             # seconds: the firmware takes one text message per 2 s
TRANSIENT_NAKS = {"DUTY_CYCLE_LIMIT", "RATE_LIMIT_EXCEEDED", "NO_CHANNEL", "NO_INTERFACE", "TIMEOUT",
                  "MAX_RETRANSMIT"}



class MeshtasticLink(Link):
    """A Meshtastic radio on USB serial (``port``) or TCP (``tcp`` as ``host:port``)."""

    instant = False

    def __init__(self, *, port: str = "", tcp: str = "", channel: int = 0, hop_limit: int = 7,
                 connect_timeout: float = CONNECT_TIMEOUT, send_timeout: float = SEND_TIMEOUT):
        if bool(port) == bool(tcp):
            raise ValueError("set exactly one of port and tcp")
        self.port, self.tcp = port, tcp
        self.channel, self.hop_limit = channel, hop_limit
        self.connect_timeout, self.send_timeout = connect_timeout, send_timeout
        self.where = port or f"tcp {tcp}"
        self.info: dict[str, object] = {}
        self.connects = 0
        self.counts: collections.Counter[str] = collections.Counter()
        self._iface = None
        self._lost = threading.Event()
        self._stopping = threading.Event()
        self._troubles: dict[str, str] = {"radio": f"radio not connected yet at {self.where}"}
        self._rx: queue.Queue[bytes | None] = queue.Queue(maxsize=1000)
        self._pending: dict[int, tuple[float, bytes]] = {}  # packet id -> (time, frame), for NAKs
        # NAKs that came before their frame was entered in _pending (the radio answers at once, while
        # the sender still waits for its queueStatus): packet id -> reason. Bounded.
        self._early_naks: dict[int, str] = {}
        self._nak_lock = threading.Lock()
        self._on_receive: Receive | None = None
        self._on_refused: Refused | None = None
        self._send_lock = threading.Lock()
        self._taken: dict[int, int] = {}  # packet id -> queueStatus res (0: queued)
        self._taken_cond = threading.Condition()
        self._last_text = 0.0
        self._threads: list[threading.Thread] = []
        self.connected = threading.Event()

    # -- Link ----------------------------------------------------------------------------

    def start(self, on_receive: Receive, on_refused: Refused | None = None) -> None:
        from pubsub import pub

        self._on_receive, self._on_refused = on_receive, on_refused
        # Bound methods of self: pypubsub holds them weakly, and self lives as long as the link.
        pub.subscribe(self._on_packet, "meshtastic.receive.data.PRIVATE_APP")
        pub.subscribe(self._on_lost, "meshtastic.connection.lost")
        for target, name in ((self._supervise, "radio-supervisor"), (self._deliver, "radio-rx")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    @property
    def troubles(self) -> dict[str, str]:
        return dict(self._troubles)

    @property
    def channel_utilisation(self) -> float | None:
        """The radio's own channel utilisation (0 to 1) from its telemetry, or None if unknown."""
        iface = self._iface
        if iface is None or not self.connected.is_set() or iface.myInfo is None:
            return None
        node = iface.nodesByNum.get(iface.myInfo.my_node_num) or {}
        value = node.get("deviceMetrics", {}).get("channelUtilization")
        return None if value is None else float(value) / 100.0

    @property
    def alive(self) -> bool:
        """The supervisor and the reader threads run (a radio may still be unplugged)."""
        return self._stopping.is_set() or all(thread.is_alive() for thread in self._threads)

    def send(self, frame: bytes, hop_limit: int | None = None) -> None:
        try:
            self._send_frame(frame, hop_limit)
        except _Dropped:
            # The supervisor builds a fresh interface at once (a fraction of a second over TCP):
            # send the frame on it rather than leave it to the outbox's next round.
            if self._stopping.is_set() or not self.connected.wait(self.send_timeout):
                raise
            log.info("radio at %s is back after a drop; sending the frame again", self.where)
            self._send_frame(frame, hop_limit)

    def _send_frame(self, frame: bytes, hop_limit: int | None) -> None:
        iface = self._iface
        if iface is None or not self.connected.is_set():
            raise RadioError(self._troubles.get("radio") or f"radio at {self.where} is not connected")
        from meshtastic.mesh_interface import MeshInterface
        from meshtastic.protobuf import portnums_pb2

        with self._send_lock:
            packet = self._call(iface, lambda: iface.sendData(
                bytes(frame), portNum=portnums_pb2.PortNum.PRIVATE_APP, channelIndex=self.channel,
                hopLimit=self.hop_limit if hop_limit is None else hop_limit, wantAck=False,
                onResponse=self._on_response),
                refuse=MeshInterface.MeshInterfaceError)
            self._await_taken(iface, packet.id)
        self.counts["sent"] += 1
        now = time.monotonic()
        with self._nak_lock:
            early = self._early_naks.pop(packet.id, None)
            if early is None:
                self._pending[packet.id] = (now, bytes(frame))
            for pid, (at, _) in list(self._pending.items()):
                if now - at > 120:  # no NAK within two minutes: the radio took it
                    del self._pending[pid]
                    iface.responseHandlers.pop(pid, None)
        if early is not None:
            self._refused(bytes(frame), early)

    def send_text(self, text: str) -> None:
        """A text message with the bell character, for plain Meshtastic radios; one per 2 s at most."""
        iface = self._iface
        if iface is None or not self.connected.is_set():
            raise RadioError(f"radio at {self.where} is not connected")
        from meshtastic.mesh_interface import MeshInterface

        with self._send_lock:
            wait = self._last_text + TEXT_INTERVAL - time.monotonic()
            if wait > 0:
                self._stopping.wait(wait)
            packet = self._call(iface, lambda: iface.sendText(text, channelIndex=self.channel, hopLimit=self.hop_limit),
                                refuse=MeshInterface.MeshInterfaceError)
            self._await_taken(iface, packet.id)
            self._last_text = time.monotonic()
        self.counts["text"] += 1

    def _call(self, iface, fn: Callable[[], object], *, refuse: type[Exception]):
        """Run a library call in a worker thread so it can never block the caller past send_timeout,
        nor past the supervisor dropping ``iface`` (the library waits on a dead interface)."""
        result: dict[str, object] = {}

        def work() -> None:
            try:
                result["value"] = fn()
            except BaseException as exc:  # handed to the caller below
                result["error"] = exc
            finally:
                with self._taken_cond:
                    result["done"] = True
                    self._taken_cond.notify_all()

        worker = threading.Thread(target=work, name="radio-send", daemon=True)
        worker.start()
        with self._taken_cond:
            self._taken_cond.wait_for(lambda: "done" in result or self._iface is not iface, self.send_timeout)
        if "done" not in result and self._iface is not iface:
            raise _Dropped(f"radio at {self.where} dropped the connection while taking a frame")
        if "done" not in result:
            self._declare_lost(f"radio at {self.where} did not take a frame within {self.send_timeout:.0f} s", iface)
            raise RadioError(f"radio at {self.where} stopped taking frames")
        error = result.get("error")
        if isinstance(error, refuse):
            raise FrameRefused(f"radio refused the frame: {error}") from error
        if error is not None:
            self._declare_lost(f"radio at {self.where} failed: {error}", iface)
            raise RadioError(f"radio at {self.where} failed: {error}") from error
        return result["value"]

    def _await_taken(self, iface, packet_id: int) -> None:
        """Wait for the radio's queueStatus for ``packet_id``: only then is the frame in the radio.

        Bytes written just as the cable is pulled vanish without an error, so a frame
        counts as sent only when the radio says it queued it. When the supervisor drops
        ``iface`` meanwhile, no answer will come: ``_Dropped`` at once.
        """
        with self._taken_cond:
            if not self._taken_cond.wait_for(lambda: packet_id in self._taken or self._iface is not iface,
                                             self.send_timeout):
                self._taken_cond.release()
                try:
                    self._declare_lost(f"radio at {self.where} did not confirm a frame within "
                                       f"{self.send_timeout:.0f} s", iface)
                finally:
                    self._taken_cond.acquire()
                raise RadioError(f"radio at {self.where} did not confirm the frame")
            if packet_id not in self._taken:
                raise _Dropped(f"radio at {self.where} dropped the connection before confirming the frame")
            res = self._taken.pop(packet_id)
        if res:
            raise FrameRefused(f"radio refused the frame (queue status {res})")

    def _on_queue_status(self, status) -> None:
        """From the library's reader thread: the radio queued (or refused) one of our packets."""
        if not status.mesh_packet_id:
            return
        with self._taken_cond:
            self._taken[status.mesh_packet_id] = status.res
            while len(self._taken) > 256:  # statuses nobody waits for any more
                self._taken.pop(next(iter(self._taken)))
            self._taken_cond.notify_all()

    def stop(self) -> None:
        from pubsub import pub

        self._stopping.set()
        self._rx.put(None)
        for thread in self._threads:
            thread.join(timeout=CLOSE_TIMEOUT + 2)
        self._close_iface()
        for listener, topic in ((self._on_packet, "meshtastic.receive.data.PRIVATE_APP"),
                                (self._on_lost, "meshtastic.connection.lost")):
            try:
                pub.unsubscribe(listener, topic)
            except Exception:  # already gone
                pass

    # -- the library's callbacks (on its publishing thread) --------------------------------

    def _on_packet(self, packet, interface) -> None:
        if interface is not self._iface:
            return  # another link's interface: pubsub topics are process-wide
        if packet.get("channel", 0) != self.channel:  # channel 0 is absent from the dict
            return
        payload = packet.get("decoded", {}).get("payload")
        if not isinstance(payload, (bytes, bytearray)):
            self.counts["bad-packet"] += 1
            return
        try:
            self._rx.put_nowait(bytes(payload))
        except queue.Full:
            self.counts["rx-overflow"] += 1
            log.warning("radio receive queue full; a frame was dropped")

    def _on_lost(self, interface) -> None:
        if interface is self._iface and not self._stopping.is_set():
            self._lost.set()  # also fires on our own close(); the supervisor tells them apart

    def _on_response(self, packet) -> None:
        """A routing NAK for one of our packets: the radio took the frame but will not send it."""
        decoded = packet.get("decoded", {})
        reason = decoded.get("routing", {}).get("errorReason", "NONE")
        request = decoded.get("requestId")
        with self._nak_lock:
            entry = self._pending.pop(request, None)
            if entry is None and request is not None:
                # Its frame is not entered yet (the sender still waits for the queueStatus): it is
                # handled as the sender enters it. Before, such a frame was neither sent nor queued again.
                self._early_naks[request] = reason
                while len(self._early_naks) > 64:
                    self._early_naks.pop(next(iter(self._early_naks)))
        self.counts[f"nak-{reason}"] += 1
        log.warning("radio refused a frame: %s", reason)
        if entry is not None:
            self._refused(entry[1], reason)

    def _refused(self, frame: bytes, reason: str) -> None:
        if self._on_refused is not None:
            try:
                self._on_refused(frame, reason)
            except Exception:
                log.exception("handling a refused frame failed")

    def _deliver(self) -> None:
        """Hand received frames to the daemon, off the library's single callback thread."""
        while True:
            payload = self._rx.get()
            if payload is None or self._stopping.is_set():
                return
            try:
                if self._on_receive is not None:
                    self._on_receive(payload)
            except Exception:
                log.exception("the daemon failed on a received frame")

    # -- supervision ----------------------------------------------------------------------

    def _supervise(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            if self._iface is None:
                if self._connect():
                    attempt = 0
                else:
                    self._stopping.wait(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                    attempt += 1
                continue
            if self._lost.wait(0.5):
                reason = self._troubles.get("radio") or f"radio at {self.where} lost (unplugged?)"
                self._declare_lost(reason)

    def _declare_lost(self, reason: str, iface=None) -> None:
        """Drop the connection. ``iface``: the interface that failed; if the supervisor has
        already replaced it, the new one is fine and stays."""
        if iface is not None and iface is not self._iface:
            return
        if self._iface is None and not self.connected.is_set():
            return
        self.connected.clear()
        self._troubles = {"radio": reason}
        log.warning("RADIO TROUBLE: %s", reason)
        self._close_iface()
        self._lost.clear()

    def _connect(self) -> bool:
        if self.port:
            if not os.path.exists(self.port):
                self._set_down(f"no radio at {self.port}: check the USB cable")
                return False
        try:
            iface = self._open()
        except RadioError as exc:  # already a whole sentence ("radio at X did not answer: ..."): not again
            self._set_down(str(exc))
            return False
        except Exception as exc:
            self._set_down(f"radio at {self.where} did not answer: {exc}")
            return False
        self._iface = iface
        self._lost.clear()
        if not iface.isConnected.is_set():
            self._declare_lost(f"radio at {self.where} dropped during start-up")
            return False
        self.connects += 1
        troubles = self._check(iface)
        self._troubles = troubles
        self.connected.set()
        log.info("radio connected at %s: %s", self.where, ", ".join(f"{k}={v}" for k, v in self.info.items()))
        for sentence in troubles.values():
            log.warning("RADIO TROUBLE: %s", sentence)
        return True

    def _open(self):
        iface = open_interface(port=self.port, tcp=self.tcp, timeout=self.connect_timeout)
        iface.silbato_on_queue_status = self._on_queue_status
        return iface

    def _set_down(self, sentence: str) -> None:
        if self._troubles.get("radio") != sentence:
            log.warning("RADIO TROUBLE: %s", sentence)
        self._troubles = {"radio": sentence}

    def _check(self, iface) -> dict[str, str]:
        self.info, troubles = describe(iface, self.channel)
        return troubles

    def _close_iface(self) -> None:
        self.connected.clear()  # before the interface goes, so a sender woken below waits for the next one
        iface, self._iface = self._iface, None
        with self._taken_cond:
            self._taken_cond.notify_all()  # a frame awaiting confirmation from iface gets none
        if iface is not None:
            close_interface(iface)
