"""The node's SQLite store: alerts, the append-only event log, peers, the outbox and counters.

One database file under the state directory, shared by ``silbato-node`` (the writer
of every fact) and ``silbato-web``, which reads it and may write only its own four
tables: captain accounts, captains' requests for the daemon, local notes and captains'
login sessions (``WEB_TABLES``, enforced by an SQLite authorizer). WAL journal, ``synchronous=FULL`` so a
commit survives power loss, ``secure_delete=ON`` so purged rows are overwritten.
Times are seconds on the node's clock (``time.time()`` unless a clock is injected).
"""

from __future__ import annotations

import sqlite3
import urllib.parse
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Collection, Iterator

import sqlite_utils
from sqlite_utils.migrations import Migrations

from node.protocol.alerts import ENDED, Alert, Kind, State
from node.errors import StoreError
from node.protocol.keys import Roster

migrations = Migrations("silbato")

# Replay window: besides the highest counter seen from an origin, remember which of
# the 63 counters below it were seen, so frames that arrive out of order over
# different mesh paths are still accepted once, and never twice.
REPLAY_WINDOW = 63

# The only tables the web process may write (see ``Store(writes=...)``).
WEB_TABLES = frozenset({"captains", "requests", "notes", "sessions", "evidence", "sms_replies", "sms_wipes"})
# The only tables the SMS gateway (``silbato gateway``) may write: its lists, queue, tips and
# state, and captains' requests (a responder's texted REPORT or CONFIRM). Never alerts or troubles.
GATEWAY_TABLES = frozenset({"requests", "sms_subscribers", "sms_queue", "sms_tips", "sms_state", "sms_replies",
                            "sms_handled", "sms_wipes"})
# The only tables the neighborhood bridge (``silbato bridge``) may write: what it took from the
# broker, its own state, and the ``sent_at`` mark of what it published (node/bridgequeue.py).
BRIDGE_TABLES = frozenset({"bridge_in", "bridge_out", "bridge_state"})
# Seconds: a captain's request older than this is refused, not acted on, so that a click
# made while the daemon was down does not raise a siren minutes later.
REQUEST_TTL = 60.0
# Seconds: the longest a captain's login lasts, however busy (the page ends idle ones sooner).
SESSION_LIFETIME = 12 * 3600.0
# Seconds: a session last used this far in the node's future means the clock went back: it ends.
SESSION_CLOCK_SLACK = 60.0


@migrations()
def m001_initial(db: sqlite_utils.Database) -> None:
    db["alerts"].create({
        "id": str, "kind": int, "location": int, "reporter": int, "state": int, "signer": int,
        "opened_at": float, "updated_at": float, "last_report_at": float,
        "repeat_at": float, "repeats": int,
    }, pk="id")
    db["aliases"].create({"alias": str, "alert_id": str}, pk="alias")
    db["events"].create({
        "id": int, "alert_id": str, "state": int, "outcome": str, "reason": str,
        "signer": int, "source": str, "counter": int, "received_at": float,
    }, pk="id")
    db["events"].create_index(["alert_id"])
    db["peers"].create({
        "node_id": int, "name": str, "location": int, "place": str,
        "last_heard": float, "troubles": int,
    }, pk="node_id")
    db["outbox"].create({"seq": int, "frame": bytes, "created_at": float, "sent_at": float}, pk="seq")
    db["counters"].create({"origin": int, "highest": int, "bitmap": int}, pk="origin")
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["troubles"].create({"subsystem": str, "message": str, "since": float}, pk="subsystem")
    # Append-only: the event log is evidence; only the retention purge removes rows.
    db.execute("""CREATE TRIGGER events_no_update BEFORE UPDATE ON events
                  BEGIN SELECT RAISE(ABORT, 'events are append-only'); END""")


@migrations()
def m002_captains_requests_notes(db: sqlite_utils.Database) -> None:
    """The web's tables: captain accounts, captains' requests for the daemon, local incident notes."""
    db["captains"].create({"name": str, "password_hash": str, "created_at": float}, pk="name")
    # A request is not a fact: the daemon signs and applies it, then records the outcome here.
    db["requests"].create({
        "id": int, "action": str, "alert_id": str, "location": int, "captain": str, "created_at": float,
        "status": str, "reason": str, "result_alert_id": str, "frame_seq": int, "done_at": float,
    }, pk="id")
    db["requests"].create_index(["status"])
    db["notes"].create({"id": int, "alert_id": str, "captain": str, "text": str, "created_at": float}, pk="id")
    db["notes"].create_index(["alert_id"])


@migrations()
def m003_coverage_supervision(db: sqlite_utils.Database) -> None:
    """Receipts (who has each alert state), the latest signed frame of each alert, peers' liveness."""
    db["coverage"].create({"alert_id": str, "state": int, "node_id": int, "sounded": int}, pk=("alert_id", "state",
                                                                                                "node_id"))
    db["alerts"].add_column("frame", bytes)           # the latest signed transition, to pass on to a neighbour
    db["peers"].add_column("status", str)             # ok, trouble, silent or unknown
    db["peers"].add_column("remote_troubles", int)    # its trouble bits, as the block's heartbeats tell


@migrations()
def m004_sessions(db: sqlite_utils.Database) -> None:
    """Captains' logins, kept on the node so that logging out (or ``captain remove``) ends them.

    Only a SHA-256 of each login's random token is stored: the token itself lives in the
    captain's cookie, so the database never holds anything a browser could present.
    """
    db["sessions"].create({"token_hash": str, "captain": str, "created_at": float, "last_seen": float},
                          pk="token_hash")
    db["sessions"].create_index(["captain"])


@migrations()
def m005_out_of_reach(db: sqlite_utils.Database) -> None:
    """A peer out of reach: the building through which its news stopped (``peers.status`` 'unreachable')."""
    db["peers"].add_column("through", int)


@migrations()
def m006_evidence(db: sqlite_utils.Database) -> None:
    """Neighbors' sealed evidence, its signed manifest, and the signed frame of each transition.

    ``evidence`` (the page writes it): one row per sealed item, pending until the daemon chains
    it. It holds no plaintext, no file name from the phone, no address and no content type (that
    is sealed inside ``<item>.meta.age``): only sizes, hashes, the incident and when it came.
    ``manifest`` (the daemon's): each incident's hash-chained, signed entries. ``manifest_heads``:
    the latest signed head of each incident (its transition frames and the chain's tip).
    """
    db["evidence"].create({
        "item_id": str, "alert_id": str, "received_at": float, "size": int, "sha256": str,
        "sealed_size": int, "sealed_sha256": str, "meta_sha256": str, "status": str, "reason": str,
    }, pk="item_id")
    db["evidence"].create_index(["status"])
    db["manifest"].create({"alert_id": str, "seq": int, "item_id": str, "entry": str, "hash": str,
                           "signature": str}, pk=("alert_id", "seq"))
    db["manifest_heads"].create({"alert_id": str, "head": str, "signature": str}, pk="alert_id")
    db["events"].add_column("frame", bytes)   # the signed transition as received (or sent), for the bundle
    db.execute("""CREATE TRIGGER manifest_no_update BEFORE UPDATE ON manifest
                  BEGIN SELECT RAISE(ABORT, 'the evidence manifest is append-only'); END""")


@migrations()
def m007_sms(db: sqlite_utils.Database) -> None:
    """The SMS gateway's tables (node/gateway): its subscriber lists, its outgoing queue, tips, its state.

    No phone number is stored in the clear: ``number_enc`` is AES-GCM under a key that only the
    unlocked gateway holds, ``number_mac`` a keyed HMAC to find a sender. ``sms_queue.key`` makes
    each (subscriber, alert state) one row, so a text is queued once however often it is planned.
    """
    db["sms_subscribers"].create({
        "id": int, "list": str, "number_enc": bytes, "number_mac": str, "pin_mac": str, "language": str,
        "handle": str, "created_at": float, "joined_at": float,
    }, pk="id")
    db["sms_subscribers"].create_index(["number_mac"], unique=True)
    db["sms_queue"].create({
        "id": int, "key": str, "number_enc": bytes, "number_mac": str, "priority": str, "alert_id": str,
        "state": int, "text": str, "status": str, "created_at": float, "handed_at": float, "done_at": float,
    }, pk="id")
    db["sms_queue"].create_index(["key"], unique=True)
    db["sms_queue"].create_index(["status"])
    db["sms_tips"].create({"id": int, "text": str, "number_enc": bytes, "received_at": float}, pk="id")
    db["sms_state"].create({"key": str, "value": str}, pk="key")


@migrations()
def m008_sms_replies(db: sqlite_utils.Database) -> None:
    """Captains' replies to tips, and a masked form of each subscriber's number for the console.

    ``sms_replies`` is a request as ``requests`` is: the page writes it (it cannot read a
    number), the gateway (which alone can) texts the tip's sender and marks it ``queued``, or
    ``refused`` when the tip is gone. ``sms_subscribers.masked`` (``••• ••12``) is made when a
    number is added, so the console can tell responders apart without the key.
    """
    db["sms_replies"].create({"id": int, "tip_id": int, "text": str, "captain": str, "created_at": float,
                              "status": str, "done_at": float}, pk="id")
    db["sms_subscribers"].add_column("masked", str)


@migrations()
def m009_sms_pin_failures(db: sqlite_utils.Database) -> None:
    """Wrong PINs texted in a row for each responder: at ``PIN_TRIES`` the PIN is locked.

    Kept in the store, not in the gateway's memory, so a restart does not give a guesser fresh
    tries; reset by a right PIN and by ``silbato sms responders unlock-pin``.
    """
    db["sms_subscribers"].add_column("pin_failures", int, not_null_default=0)


@migrations()
def m010_bridge(db: sqlite_utils.Database) -> None:
    """The neighborhood bridge's queues (node/bridgequeue.py): the store is its only link to the daemon.

    ``bridge_out``: what the daemon wants published (its block's signed roster, retained, and
    the signed frames of its alerts' state changes), in ``id`` order; the bridge sets ``sent_at``
    once the broker acknowledged it (QoS 1), so a message survives a broker outage and a restart.
    ``bridge_in``: every message the bridge took from the broker, as received, for the daemon
    to check and consume (it deletes the row). ``bridge_state``: the link's state and counters.
    """
    # AUTOINCREMENT: an id is never reused, so a late acknowledgement cannot mark a newer row sent.
    db.execute("CREATE TABLE bridge_out (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
               "payload BLOB NOT NULL, retain INTEGER NOT NULL, created_at REAL NOT NULL, sent_at REAL)")
    db["bridge_out"].create_index(["sent_at"])
    db.execute("CREATE TABLE bridge_in (id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, "
               "payload BLOB NOT NULL, received_at REAL NOT NULL)")
    db["bridge_state"].create({"key": str, "value": str}, pk="key")


@migrations()
def m011_neighborhood(db: sqlite_utils.Database) -> None:
    """The neighborhood (node/daemon/neighborhood.py): what a bridge node shared and took, and NEARBY alerts.

    ``neighborhood_shared``: each (incident, state) of this block a bridge node queued for the
    broker, so it goes once, across restarts. ``neighborhood_blocks``: the other blocks' signed
    rosters, as a bridge node took them (version only rises). ``neighborhood_counters``: the
    replay window of each (foreign block, origin), as ``counters`` is for this block.
    ``neighborhood_drops``: foreign messages refused, counted by reason. ``nearby``: alert states
    on other blocks, one row per (foreign block, foreign alert, state), however many NEARBY
    frames told it (two bridge nodes, re-sends): what the page shows.
    """
    db["neighborhood_shared"].create({"alert_id": str, "state": int, "queued_at": float}, pk=("alert_id", "state"))
    db["neighborhood_blocks"].create({"block": str, "version": int, "document": str, "updated_at": float},
                                     pk="block")
    db["neighborhood_counters"].create({"block": str, "origin": int, "highest": int, "bitmap": int},
                                       pk=("block", "origin"))
    db["neighborhood_drops"].create({"reason": str, "count": int, "last_at": float}, pk="reason")
    db["nearby"].create({
        "block_code": int, "reporter": int, "counter": int, "state": int, "block": str, "area": str,
        "place": str, "location": int, "signer": int, "received_at": float,
    }, pk=("block_code", "reporter", "counter", "state"))
    db["nearby"].create_index(["received_at"])


@migrations()
def m012_sms_handled(db: sqlite_utils.Database) -> None:
    """Received texts the SMS gateway has acted on, so a crash before their files are deleted
    does not act on them again (node/gateway/service.py ``answer``); and requests to wipe the lists.

    ``identity`` is a keyed HMAC of each inbox file's name and content (the name holds the
    sender's number): recorded in the transaction that does what the text asks, purged with
    the retention period.
    """
    db["sms_handled"].create({"identity": str, "handled_at": float}, pk="identity")
    # Captains' requests to wipe the SMS lists (the console's two-button confirm, ``silbato sms wipe``):
    # a request as ``sms_replies`` is, since the page cannot reach the spool; the gateway wipes and
    # sets ``done_at``.
    db["sms_wipes"].create({"id": int, "captain": str, "created_at": float, "done_at": float}, pk="id")


@migrations()
def m013_sms_nearby(db: sqlite_utils.Database) -> None:
    """Whether each SMS subscriber asked for texts about raids on nearby blocks (``NEARBY ON``).

    Off by default: a subscriber joined for this block's alerts; neighboring blocks' raids
    (the ``nearby`` table, m011) are texted only to those who opted in (node/gateway/service.py).
    """
    db["sms_subscribers"].add_column("nearby", int, not_null_default=0)


def _connect(path: Path, readonly: bool, existing: bool = False) -> sqlite3.Connection:
    try:
        if readonly or existing:
            # Quote the path: a '#' or '?' in it would otherwise end the file name in the URI.
            # mode=rw opens an existing database and never creates one.
            uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={'ro' if readonly else 'rw'}"
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None, timeout=5)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5)
        conn.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            if not existing:
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA secure_delete = ON")
        return conn
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"{path}: cannot open database: {exc}") from exc


_READS = frozenset({sqlite3.SQLITE_READ, sqlite3.SQLITE_SELECT, sqlite3.SQLITE_FUNCTION,
                    sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT, sqlite3.SQLITE_RECURSIVE})
_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_READ_PRAGMAS = frozenset({"data_version", "table_info", "table_xinfo", "index_list", "index_info",
                           "foreign_key_list", "user_version"})


def _writes_only_to(tables: Collection[str]):
    """An SQLite authorizer: reads anywhere, row writes to ``tables`` only, no schema changes."""
    def authorize(action, arg1, arg2, _db, _trigger):
        if action in _READS:
            return sqlite3.SQLITE_OK
        if action in _WRITES:
            return sqlite3.SQLITE_OK if arg1 in tables else sqlite3.SQLITE_DENY
        if action == sqlite3.SQLITE_PRAGMA:
            # wal_checkpoint changes no row: the gateway's wipe truncates the WAL with it.
            return sqlite3.SQLITE_OK if arg2 is None or arg1 in _READ_PRAGMAS or arg1 == "wal_checkpoint" \
                else sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_DENY  # CREATE, DROP, ALTER, ATTACH, ...
    return authorize


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a transaction; an error here must not hide the one that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _alert(row: dict) -> Alert:
    return Alert(id=row["id"], kind=Kind(row["kind"]), location=row["location"], reporter=row["reporter"],
                 state=State(row["state"]), signer=row["signer"], opened_at=row["opened_at"],
                 updated_at=row["updated_at"], last_report_at=row["last_report_at"])


class Store:
    """The database of one node. Not thread-safe by itself: the daemon serialises writers."""

    def __init__(self, path: Path, *, readonly: bool = False, writes: Collection[str] | None = None):
        """Open (and migrate) the database; ``readonly`` opens it for reading only.

        ``writes`` (the web process: ``WEB_TABLES``) opens an existing database without
        migrating it and refuses, inside SQLite, any write to another table.
        """
        self.path = Path(path)
        self.readonly = readonly
        self.db = sqlite_utils.Database(_connect(self.path, readonly, existing=writes is not None))
        if writes is not None:
            self.db.conn.set_authorizer(_writes_only_to(frozenset(writes)))
        elif not readonly:
            try:
                migrations.apply(self.db)
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: cannot apply migrations: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator["Store"]:
        """All writes inside commit together or not at all; sqlite errors become ``StoreError``.

        The outermost one takes the write lock as it begins (``BEGIN IMMEDIATE``), waiting for it
        up to the busy timeout. A deferred ``BEGIN`` reads first and asks for the lock at its first
        write: had another process (the page, the gateway, the bridge, the daemon) committed in
        between, SQLite refuses at once ("database is locked", no waiting; its snapshot is stale),
        and a hold during an upload lost its alert. Nested ones are savepoints.
        """
        conn = self.db.conn
        if conn.in_transaction or self.readonly:
            try:
                with self.db.atomic():
                    yield self
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: write failed: {exc}") from exc
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: write failed: {exc}") from exc
        try:
            yield self
        except BaseException as exc:
            _rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{self.path}: write failed: {exc}") from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreError(f"{self.path}: write failed: {exc}") from exc

    def pragma(self, name: str):
        return self.db.execute(f"PRAGMA {name}").fetchone()[0]

    # -- counters -----------------------------------------------------------------

    def next_counter(self, at_least: int = 1) -> int:
        """Reserve this node's next frame counter (``at_least``: the signer's floor). Call inside a
        transaction, before sending."""
        row = self.db.execute("SELECT value FROM meta WHERE key = 'counter'").fetchone()
        value = max(int(row[0]) + 1 if row else 1, at_least)
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('counter', ?)", [str(value)])
        return value

    def seen(self, origin: int, counter: int, *, block: str | None = None) -> bool:
        """Whether ``counter`` from ``origin`` was accepted before, or is too old to tell.
        ``block``: an origin of that other block of the neighborhood (its frames over the broker)."""
        row = self.db.execute(*self._counter_row(origin, block)).fetchone()
        if row is None or counter > row[0]:
            return False
        back = row[0] - counter
        return back >= REPLAY_WINDOW or bool(row[1] >> back & 1)

    def mark_seen(self, origin: int, counter: int, *, block: str | None = None) -> None:
        row = self.db.execute(*self._counter_row(origin, block)).fetchone()
        mask = (1 << REPLAY_WINDOW) - 1
        if row is None:
            highest, bitmap = counter, 1
        elif counter > row[0]:
            shift = counter - row[0]
            highest, bitmap = counter, ((row[1] << shift) | 1) & mask if shift < REPLAY_WINDOW else 1
        else:
            highest, bitmap = row[0], (row[1] | 1 << (row[0] - counter)) & mask
        if block is None:
            self.db.execute("INSERT OR REPLACE INTO counters (origin, highest, bitmap) VALUES (?, ?, ?)",
                            [origin, highest, bitmap])
        else:
            self.db.execute("INSERT OR REPLACE INTO neighborhood_counters (block, origin, highest, bitmap) "
                            "VALUES (?, ?, ?, ?)", [block, origin, highest, bitmap])

    @staticmethod
    def _counter_row(origin: int, block: str | None) -> tuple[str, list]:
        if block is None:
            return "SELECT highest, bitmap FROM counters WHERE origin = ?", [origin]
        return "SELECT highest, bitmap FROM neighborhood_counters WHERE block = ? AND origin = ?", [block, origin]

    # -- the neighborhood (node/daemon/neighborhood.py) ------------------------------------------

    def crossing_events(self, after: int, since: float) -> list[dict]:
        """This block's accepted transitions (new or changed) after event ``after`` and not older than
        ``since``, with their signed frames, in order: what a bridge node may share."""
        return list(self.db.query(
            "SELECT id, alert_id, state, frame FROM events WHERE id > ? AND received_at >= ? AND frame IS NOT NULL "
            "AND outcome IN ('new', 'changed') ORDER BY id", [after, since]))

    def mark_shared(self, alert_id: str, state: State, now: float) -> bool:
        """Record that (``alert_id``, ``state``) went to the broker; False if it had already."""
        return self.db.execute("INSERT OR IGNORE INTO neighborhood_shared (alert_id, state, queued_at) "
                               "VALUES (?, ?, ?)", [alert_id, int(state), now]).rowcount == 1

    def foreign_roster(self, block: str) -> dict | None:
        row = self.db.execute("SELECT version, document FROM neighborhood_blocks WHERE block = ?", [block]).fetchone()
        return {"version": row[0], "document": row[1]} if row else None

    def foreign_rosters(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.db.execute("SELECT block, document FROM neighborhood_blocks")}

    def set_foreign_roster(self, block: str, version: int, document: str, now: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO neighborhood_blocks (block, version, document, updated_at) "
                        "VALUES (?, ?, ?, ?)", [block, version, document, now])

    def forget_foreign(self, block: str) -> None:
        """Forget another block's kept roster and its replay window (its organizers' key changed)."""
        self.db.execute("DELETE FROM neighborhood_blocks WHERE block = ?", [block])
        self.db.execute("DELETE FROM neighborhood_counters WHERE block = ?", [block])

    def has_nearby_from_other(self, block_code: int, reporter: int, counter: int, state: State, me: int) -> bool:
        """Whether another node's NEARBY told this (block, alert) at ``state`` or later."""
        return self.db.execute("SELECT 1 FROM nearby WHERE block_code = ? AND reporter = ? AND counter = ? "
                               "AND state >= ? AND signer != ?",
                               [block_code, reporter, counter, int(state), me]).fetchone() is not None

    def count_drop(self, reason: str, now: float) -> None:
        self.db.execute("INSERT INTO neighborhood_drops (reason, count, last_at) VALUES (?, 1, ?) "
                        "ON CONFLICT(reason) DO UPDATE SET count = count + 1, last_at = excluded.last_at",
                        [reason, now])

    def drops(self) -> dict[str, int]:
        """Foreign messages refused, by reason."""
        return {r[0]: r[1] for r in self.db.execute("SELECT reason, count FROM neighborhood_drops")}

    def has_nearby(self, block_code: int, reporter: int, counter: int, state: State) -> bool:
        return self.db.execute("SELECT 1 FROM nearby WHERE block_code = ? AND reporter = ? AND counter = ? "
                               "AND state = ?", [block_code, reporter, counter, int(state)]).fetchone() is not None

    def add_nearby(self, row: dict) -> bool:
        """Keep a nearby alert state; False if this (block, alert, state) was known already."""
        cols = ("block_code", "reporter", "counter", "state", "block", "area", "place", "location", "signer",
                "received_at")
        return self.db.execute(f"INSERT OR IGNORE INTO nearby ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                               [row[c] for c in cols]).rowcount == 1

    def nearby(self, now: float, window: float) -> list[dict]:
        """Nearby alerts to show: each foreign alert's latest state, if it is still active (reported or
        confirmed) and was taken within ``window`` seconds; newest first."""
        rows = self.db.query(
            "SELECT n.* FROM nearby n WHERE n.received_at >= ? AND n.state IN (?, ?) AND NOT EXISTS ("
            "SELECT 1 FROM nearby m WHERE m.block_code = n.block_code AND m.reporter = n.reporter "
            "AND m.counter = n.counter AND m.state > n.state) "
            # Merged reports: the other block's nodes may share one incident's states under two ids
            # (CONFIRMED under one reporter's, ALL CLEAR under the other's): an end at the same place,
            # taken after, ends it too.
            "AND NOT EXISTS (SELECT 1 FROM nearby e WHERE e.block_code = n.block_code AND e.location = n.location "
            "AND e.state IN (?, ?) AND e.received_at >= n.received_at) ORDER BY n.received_at DESC",
            [now - window, int(State.REPORTED), int(State.CONFIRMED), int(State.ALL_CLEAR), int(State.CANCELLED)])
        return list(rows)

    def nearby_news(self, since: float) -> list[dict]:
        """Each nearby alert's latest state, if it was taken at ``since`` or later; oldest first
        (the SMS gateway texts these to subscribers who asked for them)."""
        return list(self.db.query(
            "SELECT n.* FROM nearby n WHERE n.received_at >= ? AND NOT EXISTS ("
            "SELECT 1 FROM nearby m WHERE m.block_code = n.block_code AND m.reporter = n.reporter "
            "AND m.counter = n.counter AND m.state > n.state) ORDER BY n.received_at, n.state", [since]))

    def nearby_same_place(self, block_code: int, location: int, since: float, until: float) -> list[tuple[int, int]]:
        """The nearby alerts (reporter, counter) of one place of another block taken between ``since``
        and ``until``: an incident the other block merged may reach us under more than one id."""
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT DISTINCT reporter, counter FROM nearby WHERE block_code = ? AND location = ? "
            "AND received_at BETWEEN ? AND ?", [block_code, location, since, until])]

    # -- alerts -------------------------------------------------------------------

    def resolve(self, alert_id: str) -> str:
        """The incident id that ``alert_id`` was merged into, or ``alert_id`` itself."""
        row = self.db.execute("SELECT alert_id FROM aliases WHERE alias = ?", [alert_id]).fetchone()
        return row[0] if row else alert_id

    def get_alert(self, alert_id: str) -> Alert | None:
        rows = list(self.db.query("SELECT * FROM alerts WHERE id = ?", [self.resolve(alert_id)]))
        return _alert(rows[0]) if rows else None

    def active_alerts(self) -> list[Alert]:
        active = (State.REPORTED.value, State.CONFIRMED.value)
        return [_alert(r) for r in self.db.query(
            "SELECT * FROM alerts WHERE state IN (?, ?) ORDER BY opened_at", active)]

    def alerts(self, limit: int = 200) -> list[Alert]:
        """Active alerts first, then the most recently changed."""
        return [_alert(r) for r in self.db.query(
            "SELECT * FROM alerts ORDER BY state IN (1, 2) DESC, updated_at DESC LIMIT ?", [limit])]

    def save_alert(self, alert: Alert) -> None:
        """Insert or update ``alert``; its re-send schedule is left alone (see ``set_repeat``)."""
        self.db["alerts"].upsert({
            "id": alert.id, "kind": int(alert.kind), "location": alert.location, "reporter": alert.reporter,
            "state": int(alert.state), "signer": alert.signer, "opened_at": alert.opened_at,
            "updated_at": alert.updated_at, "last_report_at": alert.last_report_at,
        }, pk="id")

    def add_alias(self, alias: str, alert_id: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO aliases (alias, alert_id) VALUES (?, ?)", [alias, alert_id])

    def due_repeats(self, now: float) -> list[tuple[Alert, int]]:
        return [(_alert(r), r["repeats"] or 0) for r in self.db.query(
            "SELECT * FROM alerts WHERE repeat_at IS NOT NULL AND repeat_at <= ? ORDER BY repeat_at", [now])]

    def set_repeat(self, alert_id: str, repeat_at: float | None, repeats: int) -> None:
        """Schedule the next re-send of ``alert_id`` (``None``: stop); ``repeats`` counts those done."""
        self.db.execute("UPDATE alerts SET repeat_at = ?, repeats = ? WHERE id = ?", [repeat_at, repeats, alert_id])

    def record_event(self, alert_id: str, state: State, outcome: str, *, signer: int, source: str,
                     counter: int | None, received_at: float, reason: str = "", frame: bytes | None = None) -> None:
        """Append to the event log: who signed, where it came from ('air' or 'local'), when; with
        ``frame``, the signed transition as received (or sent), for the incident's bundle."""
        self.db["events"].insert({
            "alert_id": alert_id, "state": int(state), "outcome": outcome, "reason": reason,
            "signer": signer, "source": source, "counter": counter, "received_at": received_at,
            "frame": frame,
        })

    def transition_frames(self, alert_id: str) -> list[bytes]:
        """The signed frames of an incident's accepted transitions (merged reports too), in the order taken."""
        return [bytes(r[0]) for r in self.db.execute(
            "SELECT frame FROM events WHERE alert_id = ? AND frame IS NOT NULL AND outcome IN "
            "('new', 'changed', 'merged') ORDER BY id", [alert_id])]

    # -- evidence (the page writes pending rows; the daemon chains and signs them) -------------
    # An item's status: pending -> chained (or refused); chained -> released ('silbato evidence
    # release', its files deleted) -> pulled (the daemon signed a 'pulled' entry for it).

    def add_evidence(self, item_id: str, alert_id: str, now: float, *, size: int, sha256: str,
                     sealed_size: int, sealed_sha256: str, meta_sha256: str) -> None:
        with self.transaction():
            self.db["evidence"].insert({
                "item_id": item_id, "alert_id": self.resolve(alert_id), "received_at": now, "size": size,
                "sha256": sha256, "sealed_size": sealed_size, "sealed_sha256": sealed_sha256,
                "meta_sha256": meta_sha256, "status": "pending", "reason": ""})

    def pending_evidence(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM evidence WHERE status = 'pending' ORDER BY rowid"))

    def finish_evidence(self, item_id: str, status: str, reason: str = "") -> None:
        self.db.execute("UPDATE evidence SET status = ?, reason = ? WHERE item_id = ?", [status, reason, item_id])

    def release_evidence(self, item_id: str, now: float) -> bool:
        """Mark a chained item released (pulled off the node; its files are deleted next). False if it was not chained."""
        cur = self.db.execute("UPDATE evidence SET status = 'released', reason = ? WHERE item_id = ? AND status = 'chained'",
                              [f"pulled at {now:.0f}", item_id])
        return cur.rowcount == 1

    def released_evidence(self) -> list[dict]:
        """Items released and not yet recorded as pulled in their incident's manifest."""
        return list(self.db.query("SELECT * FROM evidence WHERE status = 'released' ORDER BY rowid"))

    def evidence_status(self, item_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM evidence WHERE item_id = ?", [item_id]).fetchone()
        return row[0] if row else None

    def held_evidence(self) -> list[dict]:
        """Per incident, the chained items still on the node: ``alert_id``, ``items``, ``bytes`` (sealed)."""
        return list(self.db.query("SELECT alert_id, count(*) AS items, sum(sealed_size) AS bytes FROM evidence "
                                  "WHERE status = 'chained' GROUP BY alert_id ORDER BY min(received_at)"))

    def evidence_count(self, alert_id: str) -> int:
        return self.db.execute("SELECT count(*) FROM evidence WHERE alert_id = ?",
                               [self.resolve(alert_id)]).fetchone()[0]

    def append_manifest(self, alert_id: str, seq: int, item_id: str, entry: str, hash_: str, signature: str) -> None:
        self.db.execute("INSERT INTO manifest (alert_id, seq, item_id, entry, hash, signature) VALUES (?, ?, ?, ?, ?, ?)",
                        [alert_id, seq, item_id, entry, hash_, signature])

    def manifest(self, alert_id: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM manifest WHERE alert_id = ? ORDER BY seq", [alert_id]))

    def set_manifest_head(self, alert_id: str, head: str, signature: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO manifest_heads (alert_id, head, signature) VALUES (?, ?, ?)",
                        [alert_id, head, signature])

    def purge_evidence(self, cutoff: float) -> list[str]:
        """Forget evidence received before ``cutoff``: its rows, and the manifests and heads of incidents
        left with none. Returns the item ids, whose files the caller deletes."""
        with self.transaction():
            ids = [r[0] for r in self.db.execute("SELECT item_id FROM evidence WHERE received_at < ?", [cutoff])]
            self.db.execute("DELETE FROM evidence WHERE received_at < ?", [cutoff])
            self.db.execute("DELETE FROM manifest WHERE alert_id NOT IN (SELECT alert_id FROM evidence)")
        return ids

    def manifest_head(self, alert_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM manifest_heads WHERE alert_id = ?", [alert_id]))
        return rows[0] if rows else None

    def events(self, alert_id: str | None = None) -> list[dict]:
        if alert_id is None:
            return list(self.db.query("SELECT * FROM events ORDER BY id"))
        return list(self.db.query("SELECT * FROM events WHERE alert_id = ? ORDER BY id", [alert_id]))

    # -- outbox -------------------------------------------------------------------

    def enqueue(self, frame: bytes, now: float) -> int:
        return self.db["outbox"].insert({"frame": frame, "created_at": now, "sent_at": None}).last_pk

    def pending(self) -> list[tuple[int, bytes]]:
        return [(r[0], bytes(r[1])) for r in self.db.execute(
            "SELECT seq, frame FROM outbox WHERE sent_at IS NULL ORDER BY seq")]

    def mark_sent(self, seq: int, now: float) -> None:
        self.db.execute("UPDATE outbox SET sent_at = ? WHERE seq = ?", [now, seq])

    # -- peers and troubles -------------------------------------------------------

    def sync_peers(self, roster: Roster) -> None:
        """Mirror the roster's names and places, so the web page can show them."""
        with self.transaction():
            for m in roster.members.values():
                self.db.execute(
                    """INSERT INTO peers (node_id, name, location, place, troubles) VALUES (?, ?, ?, ?, 0)
                       ON CONFLICT(node_id) DO UPDATE SET name = excluded.name,
                       location = excluded.location, place = excluded.place""",
                    [m.id, m.name, m.location, m.place])
            self.db.execute(f"DELETE FROM peers WHERE node_id NOT IN ({','.join('?' * len(roster.members))})",
                            list(roster.members))

    def peer_heard(self, node_id: int, when: float, troubles: int | None = None) -> None:
        """A heartbeat from ``node_id`` signed at ``when`` (seconds): kept unless newer news is already here."""
        if troubles is None:
            self.db.execute("UPDATE peers SET last_heard = ? WHERE node_id = ? AND "
                            "(last_heard IS NULL OR last_heard < ?)", [when, node_id, when])
        else:
            self.db.execute("UPDATE peers SET last_heard = ?, troubles = ? WHERE node_id = ? AND "
                            "(last_heard IS NULL OR last_heard < ?)", [when, troubles, node_id, when])

    def peers(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM peers ORDER BY node_id"))

    def places(self) -> dict[int, str]:
        return {r["location"]: r["place"] for r in self.db.query("SELECT location, place FROM peers")}

    def set_trouble(self, subsystem: str, message: str, now: float) -> None:
        self.db.execute("""INSERT INTO troubles (subsystem, message, since) VALUES (?, ?, ?)
                           ON CONFLICT(subsystem) DO UPDATE SET message = excluded.message""",
                        [subsystem, message, now])

    def clear_trouble(self, subsystem: str) -> None:
        self.db.execute("DELETE FROM troubles WHERE subsystem = ?", [subsystem])

    def troubles(self) -> dict[str, str]:
        """The daemon's troubles, the SMS gateway's and the bridge's (each writes only its own state table)."""
        found = {r["subsystem"]: r["message"] for r in self.db.query("SELECT * FROM troubles")}
        if self.db["sms_state"].exists():  # a database not yet migrated (a reader opened it first)
            row = self.db.execute("SELECT value FROM sms_state WHERE key = 'trouble'").fetchone()
            if row and row[0]:
                found["sms gateway"] = row[0]
        if self.db["bridge_state"].exists():
            row = self.db.execute("SELECT value FROM bridge_state WHERE key = 'trouble'").fetchone()
            if row and row[0]:
                found["neighborhood"] = row[0]
        return found

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])

    # -- captains, their requests and notes (the web's tables) ---------------------

    def add_captain(self, name: str, password_hash: str, now: float, *, replace: bool = False) -> None:
        """Create captain ``name`` (``replace``: or set a new password); raises ``StoreError`` if taken."""
        verb = "INSERT OR REPLACE" if replace else "INSERT"
        with self.transaction():
            self.db.execute(f"{verb} INTO captains (name, password_hash, created_at) VALUES (?, ?, ?)",
                            [name, password_hash, now])
            self.db.execute("DELETE FROM sessions WHERE captain = ?", [name])  # a new password ends them

    def remove_captain(self, name: str) -> bool:
        """Remove captain ``name`` and end their sessions at once; ``False`` if there was none."""
        with self.transaction():
            self.db.execute("DELETE FROM sessions WHERE captain = ?", [name])
            return self.db.execute("DELETE FROM captains WHERE name = ?", [name]).rowcount > 0

    def captain(self, name: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM captains WHERE name = ?", [name]))
        return rows[0] if rows else None

    def captains(self) -> list[dict]:
        return list(self.db.query("SELECT name, created_at FROM captains ORDER BY name"))

    # -- captains' sessions (``token_hash``: the SHA-256 of the token in the captain's cookie) ---

    def add_session(self, token_hash: str, captain: str, now: float) -> None:
        with self.transaction():
            self.db.execute("INSERT INTO sessions (token_hash, captain, created_at, last_seen) VALUES (?, ?, ?, ?)",
                            [token_hash, captain, now, now])

    def session(self, token_hash: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sessions WHERE token_hash = ?", [token_hash]))
        return rows[0] if rows else None

    def touch_session(self, token_hash: str, now: float) -> None:
        """Record that the session was used at ``now`` (the page does so at most once a minute)."""
        with self.transaction():
            self.db.execute("UPDATE sessions SET last_seen = ? WHERE token_hash = ?", [now, token_hash])

    def end_session(self, token_hash: str) -> None:
        with self.transaction():
            self.db.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])

    def end_stale_sessions(self, now: float, idle: float, lifetime: float = SESSION_LIFETIME) -> int:
        """Delete sessions unused for ``idle`` seconds, older than ``lifetime``, or from a clock that went back."""
        with self.transaction():
            return self.db.execute(
                "DELETE FROM sessions WHERE last_seen < ? OR created_at < ? OR last_seen > ?",
                [now - idle, now - lifetime, now + SESSION_CLOCK_SLACK]).rowcount

    def add_request(self, action: str, *, captain: str, now: float, alert_id: str = "",
                    location: int | None = None) -> int:
        """Queue a captain's action for the daemon; returns the request's id."""
        with self.transaction():
            return self.db.execute(
                """INSERT INTO requests (action, alert_id, location, captain, created_at, status, reason)
                   VALUES (?, ?, ?, ?, ?, 'pending', '')""", [action, alert_id, location, captain, now]).lastrowid

    def pending_requests(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM requests WHERE status = 'pending' ORDER BY id"))

    def finish_request(self, request_id: int, status: str, now: float, *, reason: str = "",
                       alert_id: str | None = None, frame_seq: int | None = None) -> None:
        """Record what the daemon did: ``signed`` (its frame is outbox ``frame_seq``) or ``refused``."""
        self.db.execute("""UPDATE requests SET status = ?, reason = ?, result_alert_id = ?, frame_seq = ?,
                           done_at = ? WHERE id = ?""", [status, reason, alert_id, frame_seq, now, request_id])

    # A signed request's frame is "sent to the block" once the radio took it from the outbox.
    _REQUEST_ROWS = """SELECT r.*, o.sent_at AS frame_sent_at FROM requests r
                       LEFT JOIN outbox o ON o.seq = r.frame_seq"""

    def get_request(self, request_id: int) -> dict | None:
        """One request with ``frame_sent_at``: when its frame went to the radio (``None``: not yet)."""
        rows = list(self.db.query(f"{self._REQUEST_ROWS} WHERE r.id = ?", [request_id]))
        return rows[0] if rows else None

    def requests(self, limit: int = 20) -> list[dict]:
        """The newest requests first, each with ``frame_sent_at`` like ``get_request``."""
        return list(self.db.query(f"{self._REQUEST_ROWS} ORDER BY r.id DESC LIMIT ?", [limit]))

    def last_seq(self) -> int | None:
        """The outbox sequence number of the newest queued frame."""
        return self.db.execute("SELECT max(seq) FROM outbox").fetchone()[0]

    def captain_reported(self, captain: str, alert_id: str) -> bool:
        """Whether ``captain`` raised a report that became (or merged into) incident ``alert_id``."""
        incident = self.resolve(alert_id)
        return any(self.resolve(r[0]) == incident for r in self.db.execute(
            """SELECT result_alert_id FROM requests WHERE captain = ? AND action IN ('raise', 'test')
               AND result_alert_id IS NOT NULL""", [captain]))

    def reported_by_request(self, alert_id: str) -> bool:
        """Whether a captain's or responder's request raised a report that became incident ``alert_id``."""
        incident = self.resolve(alert_id)
        return any(self.resolve(r[0]) == incident for r in self.db.execute(
            """SELECT result_alert_id FROM requests WHERE action IN ('raise', 'test')
               AND result_alert_id IS NOT NULL"""))

    def add_note(self, alert_id: str, captain: str, text: str, now: float) -> int:
        """A captain's note on an incident: kept on this node, never sent on air."""
        with self.transaction():
            return self.db.execute("INSERT INTO notes (alert_id, captain, text, created_at) VALUES (?, ?, ?, ?)",
                                   [self.resolve(alert_id), captain, text, now]).lastrowid

    def notes(self, alert_id: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM notes WHERE alert_id = ? ORDER BY id", [self.resolve(alert_id)]))

    # -- retention ----------------------------------------------------------------

    # -- coverage and supervision ---------------------------------------------------------------

    def add_coverage(self, alert_id: str, state: State, received: Iterable[int], sounded: Iterable[int]) -> bool:
        """Record who has ``alert_id`` in ``state`` (and who sounded it). Returns True if anything was new."""
        before = self.db.execute("SELECT total_changes()").fetchone()[0]
        sounded = set(sounded)
        for node in set(received) | sounded:
            self.db.execute("""INSERT INTO coverage (alert_id, state, node_id, sounded) VALUES (?, ?, ?, ?)
                               ON CONFLICT DO UPDATE SET sounded = MAX(sounded, excluded.sounded)
                               WHERE excluded.sounded > sounded""",
                            [alert_id, int(state), node, int(node in sounded)])
        return self.db.execute("SELECT total_changes()").fetchone()[0] != before

    def coverage(self, alert_id: str, state: State) -> tuple[set[int], set[int]]:
        """(received, sounded) node ids for one alert state."""
        rows = self.db.execute("SELECT node_id, sounded FROM coverage WHERE alert_id = ? AND state = ?",
                               [alert_id, int(state)]).fetchall()
        return {r[0] for r in rows}, {r[0] for r in rows if r[1]}

    def set_alert_frame(self, alert_id: str, frame: bytes) -> None:
        self.db.execute("UPDATE alerts SET frame = ? WHERE id = ?", [frame, alert_id])

    def alert_frame(self, alert_id: str) -> bytes | None:
        row = self.db.execute("SELECT frame FROM alerts WHERE id = ?", [alert_id]).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def set_peer_status(self, node_id: int, status: str, last_heard: float | None, troubles: int,
                        through: int | None = None) -> None:
        """The daemon's verdict on a peer; ``through``: the building its news stopped at, when ``unreachable``."""
        self.db.execute("UPDATE peers SET status = ?, last_heard = ?, remote_troubles = ?, through = ? "
                        "WHERE node_id = ?", [status, last_heard, troubles, through, node_id])

    def truncate_wal(self, tries: int = 20, pause: float = 0.1) -> bool:
        """Checkpoint and empty the ``-wal`` file, so no copy of a deleted row stays in it.

        A reader (the page, the daemon) may hold it for a moment: tried ``tries`` times,
        ``pause`` seconds apart. Whether it was emptied."""
        import threading

        waiting = threading.Event()
        for _ in range(tries):
            try:
                if not self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]:
                    return True
            except sqlite3.Error:
                pass
            waiting.wait(pause)
        return False

    def purge(self, now: float, retention: float) -> int:
        """Delete ended alerts, their events and sent frames older than ``retention`` seconds.

        Then truncate the WAL, so no copy of a purged row survives in the ``-wal`` file.
        Returns the number of alerts removed. Raises ``StoreError`` if a reader (the page)
        held a read transaction through the busy timeout: the rows are deleted, but copies
        stay in the ``-wal`` (and old pages in the database file) until a later purge.
        """
        cutoff = now - retention
        ended = [int(s) for s in ENDED]
        with self.transaction():
            # An incident with sealed evidence is kept as long as its evidence (evidence.keep), so
            # that its bundle can still be made and verified.
            ids = [r[0] for r in self.db.execute(
                f"SELECT id FROM alerts WHERE state IN ({','.join('?' * len(ended))}) AND updated_at < ? "
                "AND id NOT IN (SELECT alert_id FROM evidence)", [*ended, cutoff])]
            for alert_id in ids:
                self.db.execute("DELETE FROM events WHERE alert_id = ?", [alert_id])  # however recent
                self.db.execute("DELETE FROM coverage WHERE alert_id = ?", [alert_id])
                self.db.execute("DELETE FROM aliases WHERE alert_id = ?", [alert_id])
                self.db.execute("DELETE FROM notes WHERE alert_id = ?", [alert_id])
                self.db.execute("DELETE FROM alerts WHERE id = ?", [alert_id])
                self.db.execute("DELETE FROM manifest_heads WHERE alert_id = ?", [alert_id])
            # Old refusals about alerts this node never held, and sent frames.
            self.db.execute("DELETE FROM events WHERE received_at < ? AND alert_id NOT IN (SELECT id FROM alerts)",
                            [cutoff])
            self.db.execute("DELETE FROM outbox WHERE sent_at IS NOT NULL AND sent_at < ?", [cutoff])
            # The neighborhood's alerts: nearby states and what this node shared (replay windows stay).
            self.db.execute("DELETE FROM nearby WHERE received_at < ?", [cutoff])
            self.db.execute("DELETE FROM neighborhood_shared WHERE queued_at < ?", [cutoff])
            # Captains' requests and stray notes name captains: they go with the retention period too.
            self.db.execute("DELETE FROM requests WHERE created_at < ?", [cutoff])
            self.db.execute("DELETE FROM notes WHERE created_at < ? AND alert_id NOT IN (SELECT id FROM alerts)",
                            [cutoff])
            # The SMS gateway's texts that are done, and tips: they name places and hold free text.
            self.db.execute("DELETE FROM sms_queue WHERE status IN ('sent', 'failed', 'dropped') "
                            "AND created_at < ?", [cutoff])
            self.db.execute("DELETE FROM sms_tips WHERE received_at < ?", [cutoff])
            self.db.execute("DELETE FROM sms_replies WHERE created_at < ?", [cutoff])
            self.db.execute("DELETE FROM sms_handled WHERE handled_at < ?", [cutoff])
            self.db.execute("DELETE FROM sms_wipes WHERE created_at < ? AND done_at IS NOT NULL", [cutoff])
            # Ended logins: the page deletes idle ones as it meets them; none outlives its lifetime.
            self.end_stale_sessions(now, idle=SESSION_LIFETIME)
        try:
            busy = self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: checkpoint failed: {exc}") from exc
        if busy:  # SQLite reports a checkpoint blocked by a reader in the result, not as an error
            raise StoreError(f"{self.path}: purged {len(ids)} alerts, but a reader kept the write-ahead log; "
                             "copies of the purged rows stay on disk until the next purge")
        return len(ids)
