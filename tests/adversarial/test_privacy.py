"""Privacy under seizure: what the database and the frames may hold, and that the purge leaves no copy.

The allow-lists below are deliberate. A new database column or frame field fails this test
until someone decides what it may hold, writes it here with its kind, and, if it can hold
free text or name a person, makes the retention purge (``Store.purge``) remove it.
"""

from __future__ import annotations

import dataclasses
import random
import typing
from pathlib import Path

import pytest

from adversary import TALLY
from node.protocol import wire
from node.protocol.alerts import Alert, Kind, State
from node.store import Store

CODE = "codes and numbers: ids, kinds, states, counters, bit masks"
TIME = "a time on the node's clock"
FRAME = "a signed frame: codes only (see ALLOWED_FRAME_FIELDS)"
ROSTER = "a building's short name or place, from the roster"
MACHINE = "text written by the node's code: outcomes, statuses, TROUBLE lines, settings"
PERSON = "a captain's name: purged with the retention period (requests, notes)"
FREE_TEXT = "free text typed or caused by people: purged with the retention period"
ACCOUNT = "a captain's account: kept until removed (silbato captain remove)"
SESSION = "a captain's login (a SHA-256 of its token): deleted at logout, captain remove, idle or 12 h"
HASH = "a SHA-256 or a size of a sealed item: no plaintext, no file name, no content type, no address"
PUBLIC = ("a block's public roster or the neighborhood roster (keys, short names, location codes, block "
          "names and areas: never a place name), or a signed frame (codes only)")
MASKED = "a phone number's last two digits (••• ••12), for the captains' console: never the number"
SIGNED = "the daemon's signed evidence manifest: item ids, incident ids, times, sizes and hashes only"
SEALED = ("a phone number or PIN, only sealed (AES-GCM) or as a keyed HMAC: unreadable without the SMS "
          "gateway's passphrase, which no file holds")

ALLOWED_COLUMNS: dict[str, dict[str, str]] = {
    "_sqlite_migrations": {"id": CODE, "migration_set": MACHINE, "name": MACHINE, "applied_at": TIME},
    "alerts": {"id": CODE, "kind": CODE, "location": CODE, "reporter": CODE, "state": CODE, "signer": CODE,
               "opened_at": TIME, "updated_at": TIME, "last_report_at": TIME, "repeat_at": TIME, "repeats": CODE,
               "frame": FRAME},
    "aliases": {"alias": CODE, "alert_id": CODE},
    "captains": {"name": ACCOUNT, "password_hash": ACCOUNT, "created_at": TIME},
    "counters": {"origin": CODE, "highest": CODE, "bitmap": CODE},
    "coverage": {"alert_id": CODE, "state": CODE, "node_id": CODE, "sounded": CODE},
    "events": {"id": CODE, "alert_id": CODE, "state": CODE, "outcome": MACHINE, "reason": FREE_TEXT,
               "signer": CODE, "source": MACHINE, "counter": CODE, "received_at": TIME, "frame": FRAME},
    "evidence": {"item_id": CODE, "alert_id": CODE, "received_at": TIME, "size": HASH, "sha256": HASH,
                 "sealed_size": HASH, "sealed_sha256": HASH, "meta_sha256": HASH, "status": MACHINE,
                 "reason": MACHINE},
    "manifest": {"alert_id": CODE, "seq": CODE, "item_id": CODE, "entry": SIGNED, "hash": HASH,
                 "signature": SIGNED},
    "manifest_heads": {"alert_id": CODE, "head": SIGNED, "signature": SIGNED},
    "meta": {"key": MACHINE, "value": MACHINE},
    "notes": {"id": CODE, "alert_id": CODE, "captain": PERSON, "text": FREE_TEXT, "created_at": TIME},
    "outbox": {"seq": CODE, "frame": FRAME, "created_at": TIME, "sent_at": TIME},
    "peers": {"node_id": CODE, "name": ROSTER, "location": CODE, "place": ROSTER, "last_heard": TIME,
              "troubles": CODE, "status": MACHINE, "remote_troubles": CODE, "through": CODE},
    "requests": {"id": CODE, "action": MACHINE, "alert_id": CODE, "location": CODE, "captain": PERSON,
                 "created_at": TIME, "status": MACHINE, "reason": FREE_TEXT, "result_alert_id": CODE,
                 "frame_seq": CODE, "done_at": TIME},
    # The SMS gateway (node/gateway): numbers only sealed (AES-GCM under the gateway's in-memory key) or
    # as a keyed HMAC; texts name places from the roster (a nearby raid: the other block's public name and
    # area from the neighborhood roster, never a place); tips are free text. Queue and tips are purged
    # with the retention period; a subscriber stays until STOP or 'silbato sms responders remove'.
    "sms_subscribers": {"id": CODE, "list": MACHINE, "number_enc": SEALED, "number_mac": SEALED,
                        "pin_mac": SEALED, "language": MACHINE, "handle": CODE, "created_at": TIME,
                        "joined_at": TIME, "masked": MASKED, "pin_failures": CODE,
                        "nearby": CODE},
    "sms_queue": {"id": CODE, "key": SEALED, "number_enc": SEALED, "number_mac": SEALED, "priority": MACHINE,
                  "alert_id": CODE, "state": CODE, "text": ROSTER, "status": MACHINE, "created_at": TIME,
                  "handed_at": TIME, "done_at": TIME},
    "sms_tips": {"id": CODE, "text": FREE_TEXT, "number_enc": SEALED, "received_at": TIME},
    "sms_state": {"key": MACHINE, "value": MACHINE},
    # A captain's reply to a tip: the page writes it without the number; the gateway texts it.
    "sms_replies": {"id": CODE, "tip_id": CODE, "text": FREE_TEXT, "captain": PERSON, "created_at": TIME,
                    "status": MACHINE, "done_at": TIME},
    # The neighborhood (node/bridgequeue.py, node/daemon/neighborhood.py): what crosses is public rosters
    # (no place names) and signed frames. bridge_out rows go after the retention period once sent,
    # bridge_in rows as soon as the daemon took them; nearby and neighborhood_shared with retention.
    "bridge_in": {"id": CODE, "topic": MACHINE, "payload": PUBLIC, "received_at": TIME},
    "bridge_out": {"id": CODE, "topic": MACHINE, "payload": PUBLIC, "retain": CODE, "created_at": TIME,
                   "sent_at": TIME},
    "bridge_state": {"key": MACHINE, "value": MACHINE},
    "nearby": {"block_code": CODE, "reporter": CODE, "counter": CODE, "state": CODE, "block": PUBLIC,
               "area": PUBLIC, "place": PUBLIC, "location": CODE, "signer": CODE, "received_at": TIME},
    "neighborhood_blocks": {"block": PUBLIC, "version": CODE, "document": PUBLIC, "updated_at": TIME},
    "neighborhood_counters": {"block": PUBLIC, "origin": CODE, "highest": CODE, "bitmap": CODE},
    "neighborhood_drops": {"reason": MACHINE, "count": CODE, "last_at": TIME},
    "neighborhood_shared": {"alert_id": CODE, "state": CODE, "queued_at": TIME},
    # A received text's keyed identity (no number), purged with retention; a wipe request names its captain.
    "sms_handled": {"identity": SEALED, "handled_at": TIME},
    "sms_wipes": {"id": CODE, "captain": PERSON, "created_at": TIME, "done_at": TIME},
    "sessions": {"token_hash": SESSION, "captain": SESSION, "created_at": TIME, "last_seen": TIME},
    "troubles": {"subsystem": MACHINE, "message": MACHINE, "since": TIME},
}

# On air: codes only. Place names, people and free text never go in a frame.
ALLOWED_FRAME_FIELDS: dict[str, tuple[str, ...]] = {
    "TransitionFrame": ("origin", "counter", "alert_reporter", "alert_counter", "kind", "state", "location"),
    "ReceiptFrame": ("origin", "counter", "alert_reporter", "alert_counter", "state", "roster_version",
                     "received", "sounded", "clock"),
    "HeartbeatFrame": ("origin", "counter", "troubles", "roster_version", "latest_reporter", "latest_counter",
                       "latest_state", "vector", "clock"),
    "SilentFrame": ("origin", "counter", "subject", "silent_for", "clock"),
    # A raid on another block: its block's code (4 bytes of SHA-256 of its public name) and codes.
    "NearbyFrame": ("origin", "counter", "block_code", "alert_reporter", "alert_counter", "state", "location",
                    "clock"),
}
ALLOWED_WIRE_LAYOUT = {"header": ">BBHI", 1: ">HIBBH", 2: ">HIBHI", 3: ">HHHIBI", 4: ">HHI", 5: ">IHIBHI"}


def schema(path: Path) -> dict[str, dict[str, str]]:
    """Every table and column of a database migrated by this release: {table: {column: type}}."""
    store = Store(path)
    try:
        tables = [r[0] for r in store.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {t: {r[1]: r[2] for r in store.db.execute(f"PRAGMA table_info([{t}])")} for t in tables}
    finally:
        store.close()


def test_every_database_column_is_on_the_allow_list(tmp_path):
    actual = schema(tmp_path / "silbato.db")
    new = [f"{t}.{c}" for t, cols in actual.items() for c in cols if c not in ALLOWED_COLUMNS.get(t, {})]
    gone = [f"{t}.{c}" for t, cols in ALLOWED_COLUMNS.items() for c in cols if c not in actual.get(t, {})]
    assert not new, (f"new database columns {new}: decide what each may hold, add it to ALLOWED_COLUMNS, "
                     "and if it can hold free text or name a person, purge it with the retention period")
    assert not gone, f"columns {gone} are gone: remove them from ALLOWED_COLUMNS"


def test_every_frame_field_is_on_the_allow_list():
    classes = {cls.__name__: cls for cls in typing.get_args(wire.Frame)}
    assert set(classes) == set(ALLOWED_FRAME_FIELDS), "a frame type was added or removed"
    for name, cls in classes.items():
        assert tuple(f.name for f in dataclasses.fields(cls)) == ALLOWED_FRAME_FIELDS[name], (
            f"{name}'s fields changed: what goes on air is codes only; update ALLOWED_FRAME_FIELDS deliberately")
    layout = {"header": wire._HEADER.format, **{t: s.format for t, s in wire._BODIES.items()}}
    assert layout == ALLOWED_WIRE_LAYOUT, "the frame layout changed: update ALLOWED_WIRE_LAYOUT deliberately"


def test_the_allow_list_check_fails_on_a_new_column(tmp_path):
    """The check above can fail: a column added by a later migration is caught."""
    path = tmp_path / "silbato.db"
    Store(path).close()
    store = Store(path)
    store.db["notes"].add_column("phone", str)
    store.close()
    assert "phone" in schema(path)["notes"] and "phone" not in ALLOWED_COLUMNS["notes"]


# -- the retention purge leaves no copy on disk ---------------------------------------------------

DAY = 86_400.0
RETENTION = 3 * DAY
NOW = 1_800_000_000.0
CANARIES = 1_000


def canary(rng: random.Random, n: int) -> str:
    return f"canary-{rng.getrandbits(64):016x}-{n:04d}"


def plant(store: Store, rng: random.Random) -> tuple[list[str], list[str]]:
    """Old ended alerts with everything free text can be attached to: 1,000 canaries to purge.
    Plus recent ones that must stay (the control: the scan finds what is there)."""
    purged, kept = [], []
    ends = [State.ALL_CLEAR, State.CANCELLED, State.EXPIRED]
    for i in range(CANARIES // 5):
        old = NOW - RETENTION - DAY + i
        alert_id = f"1-{i + 1}"
        store.save_alert(Alert(alert_id, Kind.RAID, 101, 1, ends[i % 3], 2, old, old, old))
        words = [canary(rng, len(purged) + k) for k in range(5)]
        store.record_event(alert_id, State.CONFIRMED, "rejected", signer=2, source="air", counter=i + 1,
                           received_at=old, reason=f"refused: {words[0]}")
        store.add_note(alert_id, words[1], f"seen by {words[2]}", old)
        request = store.add_request("confirm", captain=words[3], now=old, alert_id=alert_id)
        store.finish_request(request, "refused", old, reason=f"refused: {words[4]}")
        purged += words
    for i in range(5):
        recent = NOW - DAY
        alert_id = f"2-{i + 1}"
        store.save_alert(Alert(alert_id, Kind.RAID, 102, 2, State.REPORTED, 2, recent, recent, recent))
        words = [f"kept-{i}-{k}" for k in range(3)]
        store.add_note(alert_id, words[0], words[1], recent)
        store.record_event(alert_id, State.REPORTED, "new", signer=2, source="air", counter=i + 1,
                           received_at=recent, reason=words[2])
        kept += words
    return purged, kept


def found(db: Path, words: list[str]) -> dict[str, list[str]]:
    """Which of ``words`` appear anywhere in the raw bytes of the database, its -wal and its -shm."""
    hits = {}
    for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        if path.exists():
            raw = path.read_bytes()
            hits[path.name] = [w for w in words if w.encode() in raw]
    return hits


@pytest.mark.parametrize("reader", [False, True], ids=["alone", "with-the-web-reading"])
def test_the_purge_leaves_no_canary_in_the_database_files(tmp_path, reader):
    db = tmp_path / "silbato.db"
    store = Store(db)
    web = Store(db, readonly=True) if reader else None  # the page's connection stays open
    try:
        purged, kept = plant(store, random.Random(11))
        assert len(purged) == CANARIES and len(set(purged)) == CANARIES
        if web is not None:
            assert len(web.notes("1-1")) == 1
        before = found(db, purged)
        assert sum(map(len, before.values())) >= CANARIES, "the canaries should be on disk before the purge"
        assert store.purge(NOW, RETENTION) == CANARIES // 5
        TALLY["canaries planted and purged"] += CANARIES
        while_open = found(db, purged)
        assert not any(while_open.values()), {name: len(hits) for name, hits in while_open.items()}
        assert set(kept) <= {w for hits in found(db, kept).values() for w in hits}, "the control must be found"
    finally:
        if web is not None:
            web.close()
        store.close()
    after_close = found(db, purged)
    assert not any(after_close.values()), {name: len(hits) for name, hits in after_close.items()}


def test_a_purge_blocked_by_a_reader_says_so_and_the_next_one_finishes(tmp_path):
    """A read held through the busy timeout keeps the WAL: the purge must not claim it is done."""
    import sqlite3

    from node.errors import StoreError

    db = tmp_path / "silbato.db"
    store = Store(db)
    store.db.execute("PRAGMA busy_timeout = 100")  # milliseconds; the node waits 5 s
    purged, _ = plant(store, random.Random(12))
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM notes").fetchone()  # a read transaction, held open
        with pytest.raises(StoreError, match="reader kept the write-ahead log"):
            store.purge(NOW, RETENTION)
        assert any(found(db, purged).values()), "blocked, the copies are still on disk"
        reader.execute("COMMIT")
        assert store.purge(NOW, RETENTION) == 0  # the rows went the first time; now the copies go
        assert not any(found(db, purged).values())
        TALLY["canaries planted and purged"] += CANARIES
    finally:
        reader.close()
        store.close()
