"""The daemon chains only what it checked: a pending row the page's user forged is refused, not signed."""

from __future__ import annotations

import io
import os
import threading
import time

import pyrage
import pytest

from node.evidence import manifest, seal
from node.protocol.alerts import State
from websupport import everywhere, make_block, settle, until


@pytest.fixture
def block(tmp_path):
    b = make_block(tmp_path, n=2)
    raid = b.nodes[1].report()
    until(b, lambda: everywhere(b, raid.id, State.REPORTED))
    b.raid = raid.id
    yield b
    b.stop()


def put(block, body: bytes, **override):
    """What the page does: seal an item and its metadata, then write the pending row (``override``: a lie)."""
    folder = block.files.configs[0].evidence_dir
    recipient = [pyrage.x25519.Identity.generate().to_public()]
    item = seal.seal(io.BytesIO(body), folder, recipient, max_item=10**7, max_total=10**8)
    meta = seal.seal_bytes(b'{"kind": "file"}', folder, recipient, item_id=item.item_id, suffix=seal.META_SUFFIX,
                           max_total=10**8)
    row = dict(size=item.size, sha256=item.sha256, sealed_size=item.sealed_size, sealed_sha256=item.sealed_sha256,
               meta_sha256=meta.sealed_sha256)
    row.update(override)
    block.nodes[1].store.add_evidence(item.item_id, block.raid, block.clock(), **row)
    return item


def status(block, item):
    return block.nodes[1].store.db.execute("SELECT status, reason FROM evidence WHERE item_id = ?",
                                           [item.item_id]).fetchone()


def test_items_are_chained_in_order_each_linking_the_one_before(block):
    first, second = put(block, b"a" * 5000), put(block, b"b" * 7000)
    settle(block, 2)
    chain = block.nodes[1].store.manifest(block.raid)
    assert [r["item_id"] for r in chain] == [first.item_id, second.item_id]
    entries = [__import__("json").loads(r["entry"]) for r in chain]
    assert entries[0]["prev"] == manifest.genesis("sim-block", block.raid)
    assert entries[1]["prev"] == chain[0]["hash"] == manifest.sha256(manifest.canonical(entries[0]))
    assert entries[1]["size"] == 7000 and entries[1]["sealed_sha256"] == second.sealed_sha256
    me = block.nodes[1].roster.member(1)
    assert manifest.signed_by(manifest.ENTRY_DOMAIN, entries[1], chain[1]["signature"], me)


def test_a_row_that_lies_about_its_file_is_refused_and_not_signed(block, caplog):
    liar = put(block, b"c" * 5000, sealed_sha256="0" * 64)
    settle(block, 2)
    assert status(block, liar)[0] == "refused" and "SHA-256" in status(block, liar)[1]
    assert block.nodes[1].store.manifest(block.raid) == []
    assert "refused" in caplog.text


def test_a_row_whose_file_was_replaced_by_a_link_is_refused(block):
    item = put(block, b"d" * 5000)
    target = item.path.with_name("elsewhere")
    item.path.rename(target)
    item.path.symlink_to(target)
    settle(block, 2)
    assert status(block, item)[0] == "refused"


def test_sealed_evidence_and_its_incident_are_kept_for_evidence_keep_then_go(block):
    node = block.nodes[1]
    item = put(block, b"e" * 5000)
    settle(block, 2)
    node.act("cancel", block.raid)
    retention = node.config["alerts.retention"]
    node.store.purge(block.clock() + retention + 10, retention)
    assert node.store.get_alert(block.raid) is not None  # kept: it has evidence
    node.evidence.purge(block.clock() + node.config["evidence.keep"] + 10)
    assert not item.path.exists() and node.store.manifest(block.raid) == []
    node.store.purge(block.clock() + node.config["evidence.keep"] + 10, retention)
    assert node.store.get_alert(block.raid) is None


def test_an_alert_is_taken_while_a_large_item_is_being_hashed(block):
    """The checker hashes off the node's lock: a confirmation from the air is applied while it is busy."""
    node = block.nodes[1]
    desk = node.evidence
    hashing, go, hashed, ticked = (threading.Event() for _ in range(4))
    real_hash = desk.hash_file

    def slow_hash(path, stopping):  # a 500 MB video on a Pi: it takes until the test says so
        if path.suffix == ".age" and not path.name.endswith(".meta.age"):
            hashing.set()
            assert go.wait(60), "never let go"
        found = real_hash(path, stopping)
        if path.name.endswith(".meta.age"):
            hashed.set()
        return found

    desk.hash_file = slow_hash
    desk.start()
    try:
        item = put(block, os.urandom(3_000_000))
        ticker = threading.Thread(target=lambda: (node.tick(), ticked.set()), daemon=True)
        ticker.start()
        assert ticked.wait(60), "the tick waited for the hash, holding the node's lock"
        assert hashing.wait(60)
        block.nodes[2].act("confirm", block.raid)
        until(block, lambda: node.store.get_alert(block.raid).state is State.CONFIRMED)
        assert status(block, item)[0] == "pending", "the confirmation went through while the item was hashed"
        go.set()
        assert hashed.wait(60)
        settle(block, 2)
        assert status(block, item)[0] == "chained"
        assert [r["item_id"] for r in node.store.manifest(block.raid)] == [item.item_id]
    finally:
        go.set()
        desk.stop()


def test_a_row_changed_while_it_was_hashed_is_checked_again(block):
    node = block.nodes[1]
    desk = node.evidence
    go = threading.Event()
    real_hash = desk.hash_file
    calls = []

    def gated(path, stopping):
        calls.append(path.name)
        assert go.wait(60)
        return real_hash(path, stopping)

    desk.hash_file = gated
    desk.start()
    try:
        item = put(block, b"f" * 5000)
        node.tick()  # handed to the checker with the row as the page wrote it
        node.store.db.execute("UPDATE evidence SET sealed_sha256 = ? WHERE item_id = ?", ["0" * 64, item.item_id])
        go.set()
        until(block, lambda: status(block, item)[0] != "pending")
        assert status(block, item)[0] == "refused", "the lie written after the hand-over was checked too"
        assert calls.count(f"{item.item_id}.age") == 2, "checked again, with the row as it is now"
    finally:
        go.set()
        desk.stop()


def test_the_purge_removes_a_page_s_stale_temporary_file_but_not_an_upload_in_progress(block):
    """A temporary file's age is told by the kernel's clock, not the node's: with the node's clock
    ahead (here the simulation's, weeks ahead; on a node, a clock set forward) the purge deleted
    the file of an upload in progress, and the upload failed at its last piece."""
    node = block.nodes[1]
    folder = block.files.configs[0].evidence_dir
    fresh, stale = folder / ".part-fresh.age", folder / ".part-stale.age"
    fresh.write_bytes(b"sealed so far")
    stale.write_bytes(b"left by a page that stopped")
    two_days_ago = time.time() - 2 * 86400
    os.utime(stale, (two_days_ago, two_days_ago))
    node.evidence.purge(block.clock() + 30 * 86400)
    assert fresh.exists() and not stale.exists()
