"""The neighborhood bridge's queues in the store (node/store.py m010_bridge): the contract
between the daemon, which alone verifies and signs, and ``silbato bridge``, which alone talks
to the MQTT broker.

Topics, under ``silbato/<neighborhood>/``:

- ``roster`` (retained): the neighborhood roster, signed by the neighborhood's organizers.
- ``<block>/roster`` (retained): a block's signed roster, as its roster file holds it (JSON).
- ``<block>/frames``: a block's signed wire frames (raw bytes, QoS 1, not retained).

The daemon ``publish``-es; the bridge takes ``unsent`` rows in order, publishes each at QoS 1
and ``mark_sent``-s it when the broker acknowledged it. The bridge ``received``-s every message
it takes; the daemon ``incoming``-s them in order and ``consume``-s each once handled (inside
the transaction of what it did with it). ``state``/``set_state``: the bridge's ``link``
(``up``/``down``), ``link_since`` and ``trouble`` (shown as TROUBLE "neighborhood" by
``Store.troubles``).
"""

from __future__ import annotations

from node.store import Store

PREFIX = "silbato"
MAX_PAYLOAD = 16 * 1024   # bytes: a larger message is no Silbato message (a roster of 136 nodes is ~14 KiB)
MAX_FRAME_PAYLOAD = 240   # bytes under <block>/frames: a signed frame fits one Meshtastic packet (233)
# Seconds a frame stays news: a sharing bridge publishes it with this MQTT expiry (less its age)
# and never publishes one older; the receiving daemon shows a nearby alert this long at most.
FRAME_MAX_AGE = 2 * 3600.0
MAX_PENDING_PER_BLOCK = 500   # received rows of one block not yet taken by the daemon, at most


def topic(neighborhood: str, block: str | None = None, leaf: str = "roster") -> str:
    """``silbato/<neighborhood>/roster`` or ``silbato/<neighborhood>/<block>/<leaf>``."""
    return f"{PREFIX}/{neighborhood}/{leaf}" if block is None else f"{PREFIX}/{neighborhood}/{block}/{leaf}"


class BridgeQueue:
    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    # -- daemon -> broker ----------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, now: float, *, retain: bool = False) -> int:
        """Queue ``payload`` for ``topic``; returns its id. A retained topic keeps only its newest unsent row."""
        with self.store.transaction():
            if retain:
                self.db.execute("DELETE FROM bridge_out WHERE topic = ? AND retain = 1 AND sent_at IS NULL", [topic])
            cur = self.db.execute("INSERT INTO bridge_out (topic, payload, retain, created_at) VALUES (?, ?, ?, ?)",
                                  [topic, bytes(payload), int(retain), now])
            return cur.lastrowid

    def unsent(self, limit: int = 100) -> list[dict]:
        return list(self.db.query("SELECT id, topic, payload, retain, created_at FROM bridge_out "
                                  "WHERE sent_at IS NULL ORDER BY id LIMIT ?", [limit]))

    def mark_sent(self, ids: list[int], now: float) -> None:
        with self.store.transaction():
            self.db.conn.executemany("UPDATE bridge_out SET sent_at = ? WHERE id = ? AND sent_at IS NULL",
                                     [(now, i) for i in ids])

    def purge_sent(self, before: float) -> int:
        with self.store.transaction():
            return self.db.execute("DELETE FROM bridge_out WHERE sent_at IS NOT NULL AND sent_at < ?",
                                   [before]).rowcount

    # -- broker -> daemon ----------------------------------------------------------------------

    def received(self, topic: str, payload: bytes, now: float) -> int:
        with self.store.transaction():
            return self.db.execute("INSERT INTO bridge_in (topic, payload, received_at) VALUES (?, ?, ?)",
                                   [topic, bytes(payload), now]).lastrowid

    def pending_from(self, prefix: str) -> int:
        """Received rows whose topic starts with ``prefix`` (one block's), not yet taken by the daemon."""
        return self.db.execute("SELECT COUNT(*) FROM bridge_in WHERE substr(topic, 1, ?) = ?",
                               [len(prefix), prefix]).fetchone()[0]

    def incoming(self, limit: int = 100) -> list[dict]:
        return list(self.db.query("SELECT id, topic, payload, received_at FROM bridge_in ORDER BY id LIMIT ?",
                                  [limit]))

    def consume(self, row_id: int) -> None:
        """Forget an incoming message; call it inside the transaction that acted on it."""
        self.db.execute("DELETE FROM bridge_in WHERE id = ?", [row_id])

    # -- the bridge's state --------------------------------------------------------------------

    def state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM bridge_state WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.store.transaction():
            self.db.execute("INSERT OR REPLACE INTO bridge_state (key, value) VALUES (?, ?)", [key, value])
