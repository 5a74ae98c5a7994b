"""The gateway's tables: its subscribers, its queue of texts, tips and its own state (node/store.py m007_sms,
m012_sms_handled, m013_sms_nearby: ``nearby``, whether a subscriber texted ``NEARBY ON``).

Numbers go in sealed (``Vault.seal``) with their lookup code (``Vault.mac``); nothing here
reads one in the clear. Lists: ``responder`` (with a PIN), ``broad``, ``pending`` (a JOIN
waiting for its YES). Queue rows go queued -> handed -> sent or failed (or dropped: a STOP
before the hand-off); ``key`` makes each (alert state, subscriber) one row.
"""

from __future__ import annotations

import re
import secrets

from node.gateway.vault import Vault, VaultError, new_salt
from node.store import Store

RESPONDER, BROAD, PENDING = "responder", "broad", "pending"
PIN_TRIES = 5            # wrong PINs in a row after which a responder's PIN is locked
PIN_RULE = "a PIN is 6 to 8 digits"   # new PINs; older 4- and 5-digit ones still work until changed
_NEW_PIN = re.compile(r"^\d{6,8}$")
# What a wipe deletes: every table that holds a sealed number, the key's salt and check, or free text.
WIPED = ("sms_subscribers", "sms_queue", "sms_tips", "sms_replies", "sms_handled")


def check_pin(pin: str) -> None:
    """Raise ``ValueError`` naming the rule unless ``pin`` may be given to a responder now.

    Six digits: with the lockout after ``PIN_TRIES`` wrong ones, a guesser's odds are 5 in a
    million instead of 5 in ten thousand."""
    if not _NEW_PIN.match(pin):
        raise ValueError(PIN_RULE)


def masked(number: str) -> str:
    """``number`` as the console shows it: its last two digits only (``••• ••12``).

    Made when the number is added, since the page has no key to open it. Only the last two:
    without a numbering plan the country code cannot be told from the rest, and two digits
    of a number leak next to nothing while letting captains tell responders apart.
    """
    return "••• ••" + number[-2:]


class Book:
    def __init__(self, store: Store):
        self.store = store
        self.db = store.db

    # -- state --------------------------------------------------------------------------------

    def state(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM sms_state WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_state(self, key: str, value: str) -> None:
        with self.store.transaction():
            self.db.execute("INSERT OR REPLACE INTO sms_state (key, value) VALUES (?, ?)", [key, value])

    def unlock(self, passphrase: str, *, scrypt: dict | None = None) -> Vault:
        """The vault for ``passphrase``; the first one ever sets it. Raises ``VaultError`` if wrong."""
        salt = self.state("salt")
        if salt is None:
            salt_bytes = new_salt()
            vault = Vault(passphrase, salt_bytes, scrypt=scrypt)
            with self.store.transaction():
                self.db.execute("INSERT OR IGNORE INTO sms_state (key, value) VALUES ('salt', ?)", [salt_bytes.hex()])
                self.db.execute("INSERT OR IGNORE INTO sms_state (key, value) VALUES ('check', ?)", [vault.check])
            if self.state("salt") == salt_bytes.hex():
                return vault
            salt = self.state("salt")  # another process set it first: check against theirs
        vault = Vault(passphrase, bytes.fromhex(salt), scrypt=scrypt)
        if not secrets.compare_digest(vault.check, self.state("check") or ""):
            raise VaultError("wrong passphrase for the SMS lists")
        return vault

    def wipe(self) -> None:
        """Delete the lists, the key's salt and check, the queue, tips, replies and handled texts.

        Rows are overwritten as they are deleted (the store's ``secure_delete``); the caller
        empties the WAL (``Store.truncate_wal``). The next unlock sets a new passphrase."""
        with self.store.transaction():
            for table in WIPED:
                self.db.execute(f"DELETE FROM {table}")
            # The salt and check go (no passphrase opens anything again); the gateway's state stays, locked.
            self.db.execute("DELETE FROM sms_state WHERE key NOT IN ('state', 'trouble')")
            self.db.execute("UPDATE sms_state SET value = 'locked' WHERE key = 'state'")

    def wipes_asked(self) -> list[int]:
        """Captains' requests to wipe (the console, ``silbato sms wipe``) not yet done."""
        return [r[0] for r in self.db.execute("SELECT id FROM sms_wipes WHERE done_at IS NULL ORDER BY id")]

    def wipe_done(self, ids: list[int], now: float) -> None:
        with self.store.transaction():
            for wipe_id in ids:
                self.db.execute("UPDATE sms_wipes SET done_at = ? WHERE id = ?", [now, wipe_id])

    # -- subscribers ------------------------------------------------------------------------------

    def subscriber(self, vault: Vault, number: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sms_subscribers WHERE number_mac = ?", [vault.mac(number)]))
        return rows[0] if rows else None

    def add(self, vault: Vault, number: str, list_name: str, language: str, now: float, pin: str = "",
            nearby: bool | None = None) -> dict:
        """Put ``number`` on ``list_name`` (replacing its entry on any list); returns the row.

        A responder needs a PIN by ``check_pin``'s rule (``ValueError`` otherwise); a new entry
        starts with no wrong PINs. ``nearby`` (texts about nearby blocks' raids): None keeps the
        entry's choice (a new PIN does not undo a ``NEARBY ON``), off for a new number."""
        if list_name == RESPONDER:
            check_pin(pin)
        mac = vault.mac(number)
        handle = "r" + secrets.token_hex(4)
        with self.store.transaction():
            if nearby is None:
                row = self.db.execute("SELECT nearby FROM sms_subscribers WHERE number_mac = ?", [mac]).fetchone()
                nearby = bool(row and row[0])
            self.db.execute("DELETE FROM sms_subscribers WHERE number_mac = ?", [mac])
            self.db.execute(
                """INSERT INTO sms_subscribers (list, number_enc, number_mac, pin_mac, language, handle,
                   created_at, joined_at, masked, nearby) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                [list_name, vault.seal(number), mac, vault.mac(f"pin:{mac}:{pin}") if pin else "", language,
                 handle, now, None if list_name == PENDING else now, masked(number), int(nearby)])
        return self.subscriber(vault, number)

    def set_nearby(self, subscriber_id: int, nearby: bool) -> None:
        """``NEARBY ON`` or ``NEARBY OFF``: whether ``subscriber_id`` gets texts about nearby blocks' raids."""
        with self.store.transaction():
            self.db.execute("UPDATE sms_subscribers SET nearby = ? WHERE id = ?", [int(nearby), subscriber_id])

    def set_list(self, subscriber_id: int, list_name: str, now: float) -> None:
        with self.store.transaction():
            self.db.execute("UPDATE sms_subscribers SET list = ?, joined_at = ? WHERE id = ?",
                            [list_name, now, subscriber_id])

    def pin_ok(self, vault: Vault, subscriber: dict, pin: str) -> bool:
        return bool(subscriber["pin_mac"]) and secrets.compare_digest(
            subscriber["pin_mac"], vault.mac(f"pin:{subscriber['number_mac']}:{pin}"))

    def pin_locked(self, subscriber: dict) -> bool:
        return (subscriber.get("pin_failures") or 0) >= PIN_TRIES

    def pin_failed(self, subscriber_id: int) -> int:
        """Count one more wrong PIN for ``subscriber_id``; returns how many in a row now."""
        with self.store.transaction():
            self.db.execute("UPDATE sms_subscribers SET pin_failures = pin_failures + 1 WHERE id = ?",
                            [subscriber_id])
            row = self.db.execute("SELECT pin_failures FROM sms_subscribers WHERE id = ?", [subscriber_id]).fetchone()
        return row[0] if row else 0

    def pin_reset(self, subscriber_id: int) -> None:
        """A right PIN, or a captain's ``unlock-pin``: no wrong PINs counted."""
        with self.store.transaction():
            self.db.execute("UPDATE sms_subscribers SET pin_failures = 0 WHERE id = ? AND pin_failures != 0",
                            [subscriber_id])

    def pin_locked_handles(self) -> list[str]:
        """The handles of responders whose PIN is locked (``PIN_TRIES`` wrong in a row)."""
        return [r[0] for r in self.db.execute(
            "SELECT handle FROM sms_subscribers WHERE list = ? AND pin_failures >= ? ORDER BY id",
            [RESPONDER, PIN_TRIES])]

    def remove(self, vault: Vault, number: str) -> list[dict]:
        """Take ``number`` off every list at once, and its texts not yet handed to the modem.

        Returns the queue rows that were handed but not yet sent (the caller withdraws them)."""
        mac = vault.mac(number)
        with self.store.transaction():
            self.db.execute("DELETE FROM sms_subscribers WHERE number_mac = ?", [mac])
            self.db.execute("UPDATE sms_queue SET status = 'dropped' WHERE number_mac = ? AND status = 'queued'",
                            [mac])
            return list(self.db.query("SELECT * FROM sms_queue WHERE number_mac = ? AND status = 'handed'", [mac]))

    def subscribers(self, list_names: tuple[str, ...], *, nearby: bool = False) -> list[dict]:
        """Who is on ``list_names``; with ``nearby``, only those who texted ``NEARBY ON``."""
        marks = ",".join("?" * len(list_names))
        only = " AND nearby != 0" if nearby else ""
        return list(self.db.query(f"SELECT * FROM sms_subscribers WHERE list IN ({marks}){only} ORDER BY id",
                                  list(list_names)))

    def counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT list, count(*) FROM sms_subscribers GROUP BY list")}

    # -- the queue ---------------------------------------------------------------------------------

    def enqueue(self, key: str, *, number_enc: bytes, number_mac: str, priority: str, text: str, now: float,
                alert_id: str = "", state: int | None = None) -> bool:
        """Queue a text once per ``key``; False if that key was queued before."""
        with self.store.transaction():
            return self.db.execute(
                """INSERT OR IGNORE INTO sms_queue (key, number_enc, number_mac, priority, alert_id, state, text,
                   status, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)""",
                [key, number_enc, number_mac, priority, alert_id, state, text, now]).rowcount > 0

    def queued(self, limit: int = 50) -> list[dict]:
        return list(self.db.query("SELECT * FROM sms_queue WHERE status = 'queued' ORDER BY priority, id LIMIT ?",
                                  [limit]))

    def drop_oldest(self, keep: int, now: float) -> int:
        """Mark the oldest queued texts dropped so that at most ``keep`` stay queued; how many were dropped."""
        with self.store.transaction():
            return self.db.execute(
                """UPDATE sms_queue SET status = 'dropped', done_at = ? WHERE id IN (
                   SELECT id FROM sms_queue WHERE status = 'queued' ORDER BY id
                   LIMIT max(0, (SELECT count(*) FROM sms_queue WHERE status = 'queued') - ?))""",
                [now, keep]).rowcount

    def got_alert(self, alert_id: str) -> list[dict]:
        """Who was texted (or is queued) about ``alert_id``: one row per number."""
        return list(self.db.query(
            """SELECT number_mac, min(priority) AS priority FROM sms_queue WHERE alert_id = ?
               AND status IN ('queued', 'handed', 'sent') GROUP BY number_mac""", [alert_id]))

    def mark(self, queue_id: int, status: str, now: float) -> None:
        column = "handed_at" if status == "handed" else "done_at"
        with self.store.transaction():
            self.db.execute(f"UPDATE sms_queue SET status = ?, {column} = ? WHERE id = ?", [status, now, queue_id])

    def row(self, queue_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sms_queue WHERE id = ?", [queue_id]))
        return rows[0] if rows else None

    def queue_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.db.execute("SELECT status, count(*) FROM sms_queue GROUP BY status")}

    def handled(self, identity: str) -> bool:
        """Whether the received text ``identity`` (a keyed MAC of its files) was acted on already."""
        return self.db.execute("SELECT 1 FROM sms_handled WHERE identity = ?", [identity]).fetchone() is not None

    def record_handled(self, identity: str, now: float) -> None:
        """Record that the received text ``identity`` was acted on (call in the transaction that acts)."""
        with self.store.transaction():
            self.db.execute("INSERT OR IGNORE INTO sms_handled (identity, handled_at) VALUES (?, ?)", [identity, now])

    def add_tip(self, vault: Vault, text: str, number: str, now: float) -> int:
        with self.store.transaction():
            return self.db.execute("INSERT INTO sms_tips (text, number_enc, received_at) VALUES (?, ?, ?)",
                                   [text, vault.seal(number), now]).lastrowid

    def tip_number(self, tip_id: int) -> bytes | None:
        row = self.db.execute("SELECT number_enc FROM sms_tips WHERE id = ?", [tip_id]).fetchone()
        return row[0] if row else None

    def pending_replies(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM sms_replies WHERE status = 'pending' ORDER BY id"))

    def mark_reply(self, reply_id: int, status: str, now: float) -> None:
        with self.store.transaction():
            self.db.execute("UPDATE sms_replies SET status = ?, done_at = ? WHERE id = ?", [status, now, reply_id])

    def tips(self) -> list[dict]:
        return list(self.db.query("SELECT id, text, received_at FROM sms_tips ORDER BY id"))


__all__ = ["BROAD", "PENDING", "PIN_RULE", "PIN_TRIES", "RESPONDER", "Book", "VaultError", "check_pin"]
