"""Buildings not heard since this node started are "waiting for first contact", never silent (issue 17, item 5)."""

from __future__ import annotations

from node.protocol.keys import load_roster
from node.sim import Block, provision
from node.store import Store
from web import data

NOW = 1_800_000_000.0
SILENT_AFTER = 540.0


def _health(store: Store, now: float = NOW) -> dict[int, str]:
    store.set_meta("node_id", "1")
    return {row["id"]: row["health"] for row in data.node_rows(store, now, SILENT_AFTER)}


def test_a_building_the_daemon_has_not_judged_since_its_start_is_waiting_not_silent(tmp_path):
    cfg = provision(tmp_path / "block", 4).configs[0]
    with Store(cfg.db_file) as store:
        store.sync_peers(load_roster(cfg))
        assert _health(store) == {1: "ok", 2: "waiting", 3: "waiting", 4: "waiting"}, "never heard"
        # heard before a restart, long ago; the restarted daemon has not judged it yet
        store.set_peer_status(2, "unknown", NOW - 10 * SILENT_AFTER, 0)
        store.set_peer_status(3, "silent", NOW - 10 * SILENT_AFTER, 0)   # a live neighbour's verdict
        store.peer_heard(4, NOW - 10 * SILENT_AFTER)                      # no daemon verdict at all
        assert _health(store) == {1: "ok", 2: "waiting", 3: "silent", 4: "silent"}


def test_right_after_a_block_starts_no_building_shows_silent_and_the_page_says_waiting(tmp_path):
    from websupport import app_for

    block = Block(tmp_path / "b", 3, "line", scale=None).start()
    try:
        app = app_for(block, 1)
        page = app.test_client().get("/", headers={"Accept-Language": "en"}).get_data(as_text=True)
        assert "waiting for first contact" in page and ">silent<" not in page
        block.scheduler.run_for(120)   # heartbeats: each building is heard and judged
        health = {row["id"]: row["health"] for row in data.node_rows(block.nodes[1].store, block.clock(),
                                                                      SILENT_AFTER)}
        assert health == {1: "ok", 2: "ok", 3: "ok"}
    finally:
        block.stop()
