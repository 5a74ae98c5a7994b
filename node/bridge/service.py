"""The bridge's loop: one MQTT connection, the store's two queues, and the link's state.

Everything happens on one thread (``run``): paho-mqtt's ``loop`` is called from it, so its
callbacks run there too and the store is never touched from two threads.

- **In**: subscribed to ``silbato/<neighborhood>/#`` at QoS 1 with a persistent session (MQTT 5,
  ``clean_start`` false, ``SESSION_EXPIRY`` seconds), so the broker keeps what arrives while the
  bridge is away. Each message is written to ``bridge_in`` inside the callback, before paho
  acknowledges it: a message the broker saw acknowledged is in the store. A payload over
  ``MAX_PAYLOAD`` bytes is dropped and counted (``bridge_state`` ``dropped_oversized``).
  ``no_local``: the bridge is not handed back what it published itself.
- **Out**: the unsent rows of ``bridge_out``, in id order, each published at QoS 1 (retained when
  the row says so) and marked sent only when the broker acknowledged it (``on_publish`` with its
  message id). Rows in flight stay in paho's session across reconnects, which sends them again
  itself; after a restart of the bridge the unacknowledged ones are published again: at most
  those are sent twice (the daemon drops a replay), and nothing is lost.
- **The link**: ``bridge_state`` ``link`` (``up``/``down``), ``link_since`` (seconds) and
  ``trouble``: "neighborhood link down since HH:MM (reason)" once down for more than
  ``TROUBLE_AFTER`` seconds (from the start, when it never connected); cleared when it returns.
  Reconnects back off from ``BACKOFF_MIN`` to ``BACKOFF_MAX`` seconds, so a broker that returns
  is reached within ``BACKOFF_MAX`` seconds and what waited is delivered soon after.
- **Purge**: sent rows older than ``retention`` seconds, once an hour.

Times are seconds on ``clock`` (injectable: tests drive it).
"""

from __future__ import annotations

import collections
import logging
import ssl
import threading
import time
from typing import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from node.bridge.settings import LinkSettings
from node.bridgequeue import FRAME_MAX_AGE, MAX_FRAME_PAYLOAD, MAX_PAYLOAD, MAX_PENDING_PER_BLOCK, PREFIX, BridgeQueue
from node.store import Store

log = logging.getLogger(__name__)

TROUBLE_AFTER = 30.0      # seconds down before the block shows TROUBLE (a broker restart is shorter)
BACKOFF_MIN = 0.5         # seconds before the first reconnect
BACKOFF_MAX = 8.0         # seconds: the longest wait between reconnects
KEEPALIVE = 30            # seconds: MQTT keep-alive (a silent dead link is noticed within 1.5 times this)
SESSION_EXPIRY = 7 * 86400  # seconds the broker keeps this bridge's session (and its messages) while away
IN_FLIGHT = 100           # rows published and not yet acknowledged, at most
POLL = 0.1                # seconds: how often bridge_out is looked at (and the longest wait in run)
PURGE_EVERY = 3600.0      # seconds between purges of sent rows


class Bridge:
    """The bridge on ``store`` (opened with ``writes=BRIDGE_TABLES``) and the broker ``link`` names."""

    def __init__(self, store: Store, link: LinkSettings, *, clock: Callable[[], float] = time.time,
                 retention: float = 72 * 3600.0):
        self.store, self.link, self.clock = store, link, clock
        self.queue = BridgeQueue(store)
        self.retention = retention  # seconds a sent row is kept (alerts.retention)
        self.filter = f"{PREFIX}/{link.neighborhood}/#"
        self.client = self._client()
        self.connected = False
        self.subscribed = False   # the broker confirmed the subscription (SUBACK) on this connection
        self.held = threading.Event()  # set: the link is held down (the sim's control endpoint)
        self._started = clock()
        self._down_since = self._started
        self._reason = "not connected yet"
        self._next_try = self._started
        self._refused = ""                          # why the broker refused the last CONNECT
        self._up_since = self._started
        self._backoff = BACKOFF_MIN
        self._in_flight: dict[int, int] = {}        # row id -> paho message id
        self._by_mid: dict[int, int] = {}           # paho message id -> row id
        self._acked: collections.deque = collections.deque()  # message ids the broker acknowledged
        self._purged_at = float("-inf")
        self._shown: tuple | None = None
        self.dropped = int(self.queue.state("dropped_oversized") or 0)  # messages over MAX_PAYLOAD
        self.refused = int(self.queue.state("refused") or 0)            # rows the broker refused (ACL)
        self.expired = int(self.queue.state("expired") or 0)            # frame rows too old to publish
        self.backlogged = int(self.queue.state("dropped_backlog") or 0)  # one block's backlog was full

    def _client(self) -> mqtt.Client:
        link = self.link
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=link.client_id, protocol=mqtt.MQTTv5)
        client.max_inflight_messages_set(IN_FLIGHT)
        client.max_queued_messages_set(0)  # no limit: the rows are bounded by IN_FLIGHT already
        client.connect_timeout = 5.0
        if link.username:
            client.username_pw_set(link.username, link.password or None)
        if link.tls:
            client.tls_set(ca_certs=link.ca_file or None, cert_reqs=ssl.CERT_REQUIRED)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    # -- the loop --------------------------------------------------------------------------------

    def run(self, stopping: threading.Event) -> None:
        """Step until ``stopping``; between steps, paho reads and writes the socket."""
        try:
            while not stopping.is_set():
                self.step()
                if self.connected:
                    self._loop(POLL)
                else:
                    stopping.wait(POLL)
        finally:
            self.close()

    def step(self) -> None:
        """One pass: connect if due, let paho work, publish, record acknowledgements and the link's state."""
        now = self.clock()
        for name, part in (("connect", self.connect), ("network", self.network), ("publish", self.publish),
                           ("acknowledge", self.acknowledge), ("purge", self.purge)):
            try:
                part(now)
            except Exception:
                log.exception("bridge: %s failed; the bridge goes on", name)
        try:
            self.show_state(self.clock())
        except Exception:
            log.exception("bridge: could not record the link's state")

    def connect(self, now: float) -> None:
        """Connect when down and the backoff has passed; disconnect while the link is held down."""
        if self.held.is_set():
            if self.connected:
                self.client.disconnect()
                self.client.loop(timeout=0)
                self._went_down(now, "held down")
            self._reason = "held down"
            return
        if self.connected or now < self._next_try:
            return
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY
        self._refused = ""
        try:
            self.client.connect(self.link.host, self.link.port, keepalive=KEEPALIVE, clean_start=False,
                                properties=props)
        except (OSError, ValueError, ssl.SSLError) as exc:
            self._failed(now, _reason(exc))
            return
        # CONNACK arrives in loop(): wait for it here, briefly, so a refused login is seen at once.
        deadline = time.monotonic() + 5.0
        while not self.connected and not self._refused and time.monotonic() < deadline:
            if self.client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        if not self.connected:
            self._failed(now, self._refused or "no answer from the broker")

    def _failed(self, now: float, reason: str) -> None:
        if reason != self._reason:
            log.warning("bridge: cannot reach the broker %s:%d: %s; trying again in %.1f s", self.link.host,
                        self.link.port, reason, self._backoff)
        self._reason = reason
        self._next_try = now + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)
        try:
            self.client.disconnect()
        except Exception:  # not connected: nothing to close
            pass

    def network(self, now: float) -> None:
        """Let paho read and write without waiting (keep-alive, acknowledgements, messages)."""
        if self.connected:
            self._loop(0)

    def _loop(self, timeout: float) -> None:
        """paho's loop; a failure inside a callback (the store full or locked while a message is
        written) drops the link: the message was not acknowledged, so the broker hands it again
        after the reconnect, and nothing is lost."""
        try:
            self.client.loop(timeout=timeout)
        except Exception as exc:
            log.exception("bridge: a message could not be stored; reconnecting so the broker sends it again")
            try:
                self.client.disconnect()
            except Exception:
                pass
            self._went_down(self.clock(), f"storage failed: {exc}")

    def publish(self, now: float) -> None:
        """Hand paho the unsent rows not yet in flight, in id order, at QoS 1."""
        if not self.connected or len(self._in_flight) >= IN_FLIGHT:
            return
        for row in self.queue.unsent(IN_FLIGHT):
            if row["id"] in self._in_flight:
                continue
            if len(self._in_flight) >= IN_FLIGHT:
                break
            props = None
            if row["topic"].endswith("/frames"):
                age = max(0.0, now - row["created_at"])
                if age >= FRAME_MAX_AGE:
                    # Old news after a long outage: never published (a neighbor would show it as new).
                    self.queue.mark_sent([row["id"]], now)
                    self.expired += 1
                    self.queue.set_state("expired", str(self.expired))
                    log.info("bridge: row %d (%s) not published: %.0f s old, no longer news", row["id"],
                             row["topic"], age)
                    continue
                props = Properties(PacketTypes.PUBLISH)
                props.MessageExpiryInterval = max(1, int(FRAME_MAX_AGE - age))   # nor kept for later by the broker
            info = self.client.publish(row["topic"], bytes(row["payload"]), qos=1, retain=bool(row["retain"]),
                                       properties=props)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("bridge: row %d (%s) not published: %s", row["id"], row["topic"], mqtt.error_string(info.rc))
                break
            # Kept by paho even when the connection just dropped: its session sends it on reconnect.
            self._in_flight[row["id"]] = info.mid
            self._by_mid[info.mid] = row["id"]

    def acknowledge(self, now: float) -> None:
        """Mark sent the rows the broker acknowledged."""
        ids = []
        while self._acked:
            mid, reason = self._acked.popleft()
            row_id = self._by_mid.pop(mid, None)
            if row_id is not None and self._in_flight.pop(row_id, None) is not None:
                ids.append(row_id)
                if reason is not None and reason.is_failure:
                    # Sending it again would be refused again: marked sent, logged and counted.
                    self.refused += 1
                    self.queue.set_state("refused", str(self.refused))
                    log.warning("bridge: the broker refused row %d (%s); %d refused so far (its ACL: this "
                                "block may publish only under its own topic)", row_id, reason, self.refused)
        if ids:
            self.queue.mark_sent(ids, now)
            log.debug("bridge: %d rows acknowledged by the broker", len(ids))

    def purge(self, now: float) -> None:
        if now - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = now
        gone = self.queue.purge_sent(now - self.retention)
        if gone:
            log.info("bridge: %d sent rows older than %.0f h purged", gone, self.retention / 3600)

    # -- holding the link down (the sim) -----------------------------------------------------------

    def hold_down(self) -> None:
        """Disconnect and stay down until ``release`` (the sim's ``POST /blocks/<b>/link/down``)."""
        self.held.set()

    def release(self) -> None:
        self.held.clear()
        self._next_try = self.clock()
        self._backoff = BACKOFF_MIN

    def close(self) -> None:
        """Disconnect, and record the link down (nobody keeps it up now)."""
        self.connected = self.subscribed = False
        try:
            self.client.disconnect()
            self.client.loop(timeout=0)
        except Exception:  # already down
            pass
        try:
            self.queue.set_state("link", "down")
            self.queue.set_state("link_since", repr(self.clock()))
        except Exception:
            log.exception("bridge: could not record the link down")

    # -- paho's callbacks (on this thread, inside loop()) -----------------------------------------

    def _on_connect(self, client, _userdata, flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            self._refused = f"refused: {reason_code}"
            return
        self.connected, self.subscribed = True, False
        self._backoff = BACKOFF_MIN
        self._up_since = self.clock()
        # retain_handling 1: the retained rosters come again only when the broker lost the session.
        options = SubscribeOptions(qos=1, noLocal=True, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        client.subscribe(self.filter, options=options)
        log.info("bridge: connected to %s:%d as %s (session %s); subscribed to %s", self.link.host, self.link.port,
                 self.link.client_id, "resumed" if flags.session_present else "new", self.filter)

    def _on_subscribe(self, _client, _userdata, _mid, reason_codes, _properties) -> None:
        failed = [code for code in reason_codes if code.is_failure]
        if failed:
            log.error("bridge: the broker refused the subscription to %s: %s", self.filter, failed[0])
            return
        self.subscribed = True

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self.connected:
            self._went_down(self.clock(), "connection lost" if reason_code.value in (0, 128)
                            else f"disconnected: {reason_code}")

    def _went_down(self, now: float, reason: str) -> None:
        self.connected = self.subscribed = False
        self._reason = reason
        self._down_since = now
        self._next_try = now + self._backoff
        log.warning("bridge: link to the broker down (%s)", reason)

    def _on_message(self, _client, _userdata, message: mqtt.MQTTMessage) -> None:
        # Written before paho acknowledges it (after this returns): acknowledged means stored.
        limit = MAX_FRAME_PAYLOAD if message.topic.endswith("/frames") else MAX_PAYLOAD
        if len(message.payload) > limit:
            self.dropped += 1
            self.queue.set_state("dropped_oversized", str(self.dropped))
            if self.dropped & (self.dropped - 1) == 0:   # 1, 2, 4, 8...: a flood cannot fill the log
                log.warning("bridge: a message of %d bytes on %s dropped (over %d bytes); %d dropped so far",
                            len(message.payload), message.topic[:120], limit, self.dropped)
            return
        parts = message.topic.split("/")
        if len(parts) >= 4:   # silbato/<hood>/<block>/...: one block's backlog is bounded
            prefix = "/".join(parts[:3]) + "/"
            if self.queue.pending_from(prefix) >= MAX_PENDING_PER_BLOCK:
                self.backlogged += 1
                self.queue.set_state("dropped_backlog", str(self.backlogged))
                if self.backlogged & (self.backlogged - 1) == 0:
                    log.warning("bridge: %s has %d messages waiting for the daemon; more are dropped (%d so far)",
                                prefix[:120], MAX_PENDING_PER_BLOCK, self.backlogged)
                return
        self.queue.received(message.topic, message.payload, self.clock())

    def _on_publish(self, _client, _userdata, mid: int, reason_code, _properties) -> None:
        self._acked.append((mid, reason_code))

    # -- the link's state ----------------------------------------------------------------------------

    def show_state(self, now: float) -> None:
        """``link``, ``link_since`` and ``trouble`` in ``bridge_state``, written when they change."""
        if self.connected and self.subscribed:
            state = ("up", self._up_since, "")
        elif self.connected:
            return   # connected, its subscription not yet confirmed: "up" would promise what it may miss
        else:
            trouble = ""
            if now - self._down_since > TROUBLE_AFTER:
                trouble = (f"neighborhood link down since {time.strftime('%H:%M', time.localtime(self._down_since))}"
                           f" ({self._reason})")
            state = ("down", self._down_since, trouble)
        if state != self._shown:
            link, since, trouble = state
            if self._shown is not None and self._shown[2] != trouble:
                log.log(logging.WARNING if trouble else logging.INFO, "bridge: %s",
                        trouble or "neighborhood link back; trouble cleared")
            self.queue.set_state("link", link)
            self.queue.set_state("link_since", repr(since))
            self.queue.set_state("trouble", trouble)
            self._shown = state


def _reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
