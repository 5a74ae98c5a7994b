"""The SQLite store: migrations, pragmas, counters, the replay window, the event log and retention."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node import store as store_mod
from node.protocol.alerts import Alert, Kind, State
from node.errors import StoreError
from node.store import REPLAY_WINDOW, Store

NOW = 1_800_000_000.0
DAY = 86_400.0


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "state" / "silbato.db"


@pytest.fixture
def store(db_path):
    s = Store(db_path)
    yield s
    s.close()


def reopen(s: Store) -> Store:
    s.close()
    return Store(s.path)


def make_alert(alert_id: str, state: State, updated_at: float) -> Alert:
    return Alert(id=alert_id, kind=Kind.RAID, location=101, reporter=1, state=state, signer=2,
                 opened_at=updated_at, updated_at=updated_at, last_report_at=updated_at)


def add_alert(s: Store, alert_id: str, state: State, updated_at: float, reason: str = "") -> None:
    s.save_alert(make_alert(alert_id, state, updated_at))
    s.record_event(alert_id, state, "changed", signer=2, source="air", counter=1,
                   received_at=updated_at, reason=reason)


# -- migrations and pragmas ------------------------------------------------------------------


def test_migrations_apply_twice_harmlessly(db_path):
    Store(db_path).close()
    s = Store(db_path)
    store_mod.migrations.apply(s.db)
    names = [m.name for m in store_mod.migrations.applied(s.db)]
    assert len(names) == len(set(names)) and "m001_initial" in names  # each recorded once
    assert store_mod.migrations.pending(s.db) == []
    s.close()


def test_pragmas_for_durability_and_erasure(store):
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("secure_delete") == 1


def test_directory_as_database_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="cannot open database"):
        Store(tmp_path)


def test_unopenable_path_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot open database"):
        Store(tmp_path / "file" / "silbato.db")


# -- this node's frame counter ---------------------------------------------------------------


def test_next_counter_is_monotonic_from_one(store):
    assert [store.next_counter() for _ in range(5)] == [1, 2, 3, 4, 5]


def test_next_counter_survives_reopen(store):
    store.next_counter()
    last = store.next_counter()
    again = reopen(store)
    assert again.next_counter() == last + 1
    again.close()


def test_counter_rolled_back_with_its_transaction(store):
    store.next_counter()
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.next_counter()
            raise RuntimeError("send failed")
    assert store.next_counter() == 2


# -- the replay window -----------------------------------------------------------------------


def test_unknown_origin_has_seen_nothing(store):
    assert not store.seen(1, 5)


def test_in_order_counters_are_seen_once(store):
    for counter in (1, 2, 3):
        assert not store.seen(1, counter)
        store.mark_seen(1, counter)
        assert store.seen(1, counter)
    assert not store.seen(1, 4)


def test_out_of_order_counter_within_window_is_accepted_once(store):
    store.mark_seen(1, 10)
    store.mark_seen(1, 20)
    assert not store.seen(1, 15)
    store.mark_seen(1, 15)
    assert store.seen(1, 15)
    assert store.seen(1, 10) and store.seen(1, 20)
    assert not store.seen(1, 14) and not store.seen(1, 16)


def test_counters_at_window_edge(store):
    store.mark_seen(1, 100)
    assert not store.seen(1, 100 - (REPLAY_WINDOW - 1))  # oldest counter still remembered
    assert store.seen(1, 100 - REPLAY_WINDOW)             # too old to tell: treated as seen


def test_jump_just_inside_window_keeps_old_counters(store):
    store.mark_seen(1, 10)
    store.mark_seen(1, 10 + REPLAY_WINDOW - 1)
    assert store.seen(1, 10)
    assert not store.seen(1, 11)


def test_far_jump_forgets_old_counters_as_seen(store):
    store.mark_seen(1, 5)
    store.mark_seen(1, 5 + 1000)
    assert store.seen(1, 5) and store.seen(1, 6)
    assert not store.seen(1, 1004)


def test_origins_are_independent(store):
    store.mark_seen(1, 10)
    assert not store.seen(2, 10)


def test_replay_window_survives_reopen(store):
    store.mark_seen(3, 50)
    store.mark_seen(3, 48)
    again = reopen(store)
    assert again.seen(3, 50) and again.seen(3, 48)
    assert not again.seen(3, 49)
    again.close()


@pytest.fixture(scope="module")
def window_store(tmp_path_factory):
    s = Store(tmp_path_factory.mktemp("window") / "silbato.db")
    yield s
    s.close()


_origins = itertools.count(1)


@settings(derandomize=True, max_examples=200, database=None, deadline=None)
@given(counters=st.lists(st.integers(1, 150), max_size=40))
def test_replay_window_matches_a_simple_model(window_store, counters):
    origin = next(_origins)  # a fresh origin per example; the store is shared
    accepted: set[int] = set()
    for counter in counters:
        highest = max(accepted, default=0)
        expect_seen = counter in accepted or highest - counter >= REPLAY_WINDOW
        assert window_store.seen(origin, counter) == expect_seen, (counter, sorted(accepted))
        if not expect_seen:
            window_store.mark_seen(origin, counter)
            accepted.add(counter)


# -- the event log -----------------------------------------------------------------------------


def test_events_are_append_only(store):
    add_alert(store, "1-5", State.REPORTED, NOW, reason="first")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        store.db.execute("UPDATE events SET reason = 'rewritten'")
    assert [e["reason"] for e in store.events("1-5")] == ["first"]


def test_event_update_inside_transaction_is_a_store_error(store):
    add_alert(store, "1-5", State.REPORTED, NOW)
    with pytest.raises(StoreError, match="append-only"):
        with store.transaction():
            store.db.execute("UPDATE events SET outcome = 'new'")


def test_events_are_listed_in_order(store):
    for state in (State.REPORTED, State.CONFIRMED, State.ALL_CLEAR):
        store.record_event("1-5", state, "changed", signer=2, source="air", counter=1, received_at=NOW)
    store.record_event("2-9", State.REPORTED, "new", signer=2, source="local", counter=None, received_at=NOW)
    assert [e["state"] for e in store.events("1-5")] == [1, 2, 3]
    assert len(store.events()) == 4


# -- the outbox --------------------------------------------------------------------------------


def test_outbox_is_first_in_first_out(store):
    seqs = [store.enqueue(frame, NOW) for frame in (b"a", b"b", b"c")]
    assert store.pending() == list(zip(seqs, [b"a", b"b", b"c"]))


def test_mark_sent_removes_from_pending(store):
    first, second, third = (store.enqueue(frame, NOW) for frame in (b"a", b"b", b"c"))
    store.mark_sent(second, NOW + 1)
    assert store.pending() == [(first, b"a"), (third, b"c")]


# -- retention ---------------------------------------------------------------------------------


@pytest.fixture
def aged(store):
    """Alerts of every age and state, with their events, an alias and outbox frames."""
    add_alert(store, "1-1", State.ALL_CLEAR, NOW - 4 * DAY, reason="old-ended-marker")
    store.record_event("1-1", State.ALL_CLEAR, "duplicate", signer=3, source="air", counter=9,
                       received_at=NOW - 1 * DAY)  # a late re-send does not change updated_at
    store.add_alias("2-3", "1-1")
    add_alert(store, "1-2", State.CANCELLED, NOW - 1 * DAY)
    add_alert(store, "1-3", State.REPORTED, NOW - 4 * DAY)  # active, however old
    add_alert(store, "1-4", State.EXPIRED, NOW - 4 * DAY)
    store.record_event("9-9", State.CONFIRMED, "rejected", signer=3, source="air", counter=4,
                       received_at=NOW - 4 * DAY, reason="unknown alert")
    store.enqueue(b"old-sent", NOW - 4 * DAY)
    store.mark_sent(1, NOW - 4 * DAY)
    store.enqueue(b"old-unsent", NOW - 4 * DAY)
    return store


def test_purge_removes_old_ended_alerts_with_their_events(aged):
    assert aged.purge(NOW, retention=3 * DAY) == 2
    assert aged.get_alert("1-1") is None and aged.get_alert("1-4") is None
    assert aged.events("1-1") == [] and aged.events("1-4") == []
    assert aged.resolve("2-3") == "2-3"  # the alias went with its alert
    assert aged.events("9-9") == []


def test_purge_keeps_active_and_recent_alerts(aged):
    aged.purge(NOW, retention=3 * DAY)
    assert aged.get_alert("1-2").state is State.CANCELLED
    assert aged.get_alert("1-3").state is State.REPORTED
    assert len(aged.events("1-2")) == 1 and len(aged.events("1-3")) == 1


def test_purge_drops_old_sent_frames_only(aged):
    aged.purge(NOW, retention=3 * DAY)
    frames = [bytes(r[0]) for r in aged.db.execute("SELECT frame FROM outbox")]
    assert frames == [b"old-unsent"]


def test_purge_truncates_the_wal(aged, db_path):
    wal = Path(f"{db_path}-wal")
    assert wal.stat().st_size > 0
    aged.purge(NOW, retention=3 * DAY)
    assert wal.stat().st_size == 0


def test_purged_text_is_gone_from_the_files(aged, db_path):
    aged.purge(NOW, retention=3 * DAY)
    aged.close()
    for path in (db_path, Path(f"{db_path}-wal")):
        if path.exists():
            assert b"old-ended-marker" not in path.read_bytes(), path


def test_purge_with_nothing_to_remove(store):
    add_alert(store, "1-1", State.REPORTED, NOW)
    assert store.purge(NOW, retention=DAY) == 0
    assert store.get_alert("1-1") is not None


# -- troubles ----------------------------------------------------------------------------------


def test_trouble_set_update_and_clear(store):
    store.set_trouble("radio", "radio lost", NOW)
    store.set_trouble("radio", "radio still lost", NOW + 60)
    store.set_trouble("storage", "disk full", NOW)
    assert store.troubles() == {"radio": "radio still lost", "storage": "disk full"}
    since = store.db.execute("SELECT since FROM troubles WHERE subsystem = 'radio'").fetchone()[0]
    assert since == NOW  # the trouble started at the first report
    store.clear_trouble("radio")
    store.clear_trouble("never-set")
    assert store.troubles() == {"storage": "disk full"}


# -- read-only ---------------------------------------------------------------------------------


def test_readonly_store_reads(store, db_path):
    add_alert(store, "1-5", State.REPORTED, NOW)
    ro = Store(db_path, readonly=True)
    assert ro.get_alert("1-5").state is State.REPORTED
    ro.close()


def test_readonly_store_cannot_write(store, db_path):
    ro = Store(db_path, readonly=True)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        ro.set_meta("counter", "99")
    with pytest.raises(StoreError):
        with ro.transaction():
            ro.save_alert(make_alert("1-5", State.REPORTED, NOW))
    ro.close()
    assert store.meta("counter") is None and store.get_alert("1-5") is None


def test_readonly_store_of_missing_file_is_a_store_error(tmp_path):
    with pytest.raises(StoreError):
        Store(tmp_path / "missing.db", readonly=True)
    assert not (tmp_path / "missing.db").exists()


def test_readonly_store_opens_a_path_with_a_hash(tmp_path):
    path = tmp_path / "node#1" / "silbato.db"
    writer = Store(path)
    writer.set_meta("block", "elm-st")
    ro = Store(path, readonly=True)
    try:
        assert ro.meta("block") == "elm-st"
    finally:
        ro.close()
        writer.close()


def test_a_transaction_that_reads_then_writes_is_not_refused_by_another_process_writing_between(tmp_path):
    """BEGIN IMMEDIATE: the daemon reads the bridge's queue, the bridge (another connection)
    writes, then the daemon writes. A deferred BEGIN failed there at once with "database is
    locked" (its snapshot was stale; the busy timeout does not apply). Now the other writer waits."""
    import threading

    from node.bridgequeue import BridgeQueue
    from node.store import BRIDGE_TABLES

    path = tmp_path / "db"
    daemon = Store(path)
    bridge = Store(path, writes=BRIDGE_TABLES)
    done, failed = threading.Event(), []

    def bridge_writes():
        try:
            BridgeQueue(bridge).received("silbato/h/b/frames", b"x", 2.0)
        except Exception as exc:  # noqa: BLE001 - reported below
            failed.append(exc)
        done.set()

    with daemon.transaction():
        assert BridgeQueue(daemon).incoming() == []
        writer = threading.Thread(target=bridge_writes)
        writer.start()
        done.wait(1.0)        # the old code: the bridge's write is in by now; the new: it waits for us
        daemon.set_meta("k", "v")
    writer.join(10)
    assert not failed and done.is_set()
    assert daemon.meta("k") == "v" and len(BridgeQueue(daemon).incoming()) == 1
def test_a_transaction_that_reads_first_is_not_refused_when_the_page_writes_meanwhile(db_path):
    """The daemon reads its counter, then writes it; the page (another process) commits an evidence row
    in between. With a deferred BEGIN SQLite refused the daemon at once ("database is locked") and the
    hold's alert was lost (tests/bench/evidence.py found it). Now the daemon holds the write lock from
    its BEGIN, and the page waits its turn."""
    daemon = Store(db_path)
    page = Store(db_path, writes=store_mod.WEB_TABLES)
    page.db.conn.set_authorizer(None)  # the page may not set pragmas: this test does, for it
    page.db.conn.execute("PRAGMA busy_timeout = 0")  # it would wait; here it says at once that it must
    page.db.conn.set_authorizer(store_mod._writes_only_to(store_mod.WEB_TABLES))
    meanwhile = []

    def page_writes_between(action, table, *_):
        if action == sqlite3.SQLITE_UPDATE or action == sqlite3.SQLITE_INSERT:
            if table == "meta" and not meanwhile:
                try:
                    page.add_evidence("0" * 32, "1-1", 1.0, size=1, sha256="a", sealed_size=1, sealed_sha256="b",
                                      meta_sha256="c")
                    meanwhile.append("the page wrote")
                except StoreError:
                    meanwhile.append("the page waits")
        return sqlite3.SQLITE_OK

    daemon.db.conn.set_authorizer(page_writes_between)
    try:
        with daemon.transaction():
            counter = daemon.next_counter()  # reads meta, then writes it: the authorizer runs the page here
    finally:
        daemon.db.conn.set_authorizer(None)
    assert meanwhile == ["the page waits"]
    assert daemon.next_counter() == counter + 1
    page.add_evidence("1" * 32, "1-1", 2.0, size=1, sha256="a", sealed_size=1, sealed_sha256="b", meta_sha256="c")
    assert daemon.db.execute("SELECT count(*) FROM evidence").fetchone()[0] == 1
    page.close()
    daemon.close()


def test_a_nearby_raid_ends_with_an_end_at_its_place_under_another_id(tmp_path):
    """Review finding: a block that merged two reports may share CONFIRMED under one id and ALL
    CLEAR under the other; the page showed the raid as live for 2 h. An end at the same place,
    taken later, ends it; a new raid there after the end shows."""
    store = Store(tmp_path / "db")

    def add(counter, state, at, location=12):
        store.add_nearby({"block_code": 7, "reporter": 3, "counter": counter, "state": int(state), "block": "oak",
                          "area": "Oak", "place": "Oak", "location": location, "signer": 1, "received_at": at})

    add(1, State.CONFIRMED, 100.0)
    add(5, State.CONFIRMED, 101.0, location=13)          # another place of that block: untouched
    assert len(store.nearby(200.0, 7200)) == 2
    add(2, State.ALL_CLEAR, 150.0)                        # the same incident, its other id
    assert [r["counter"] for r in store.nearby(200.0, 7200)] == [5]
    add(3, State.CONFIRMED, 160.0)                        # a new raid at that place, after the end
    assert sorted(r["counter"] for r in store.nearby(200.0, 7200)) == [3, 5]
