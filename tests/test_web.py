"""The first web page and the JSON API, read from a node's real SQLite store."""

import subprocess
import sys

import pytest

from node.alerts import Kind
from node.sim import Block
from web import create_app


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = Block(tmp_path_factory.mktemp("web"), 3, "line").start()
    first = b.nodes[1].report()
    b.scheduler.run_for(30)
    b.nodes[2].act("confirm", first.id)
    b.nodes[3].report(Kind.TEST, location=103)
    b.scheduler.run_for(30)
    yield b
    b.stop()


@pytest.fixture
def client(block):
    app = create_app({"TESTING": True, "DATABASE": str(block.files.configs[2].db_file), "NODE_NAME": "B3"})
    return app.test_client()


def test_api_lists_alerts_with_the_promised_fields(client, block):
    rows = client.get("/api/alerts").get_json()
    assert len(rows) == 2
    by_kind = {r["kind"]: r for r in rows}
    raid = by_kind["raid"]
    assert raid["state"] == "confirmed" and raid["place"] == "Building 1" and raid["origin"] == 1
    assert raid["id"] == block.nodes[1].store.active_alerts()[0].id
    assert raid["received_at"].startswith("2027-")  # the sim's virtual epoch, as ISO 8601
    assert by_kind["test"]["state"] == "reported" and by_kind["test"]["place"] == "Building 3"
    for row in rows:
        assert {"id", "kind", "state", "place", "origin", "received_at"} <= row.keys()


def test_page_shows_state_place_and_a_banner(client):
    html = client.get("/").get_data(as_text=True)
    assert "RAID CONFIRMED · Building 1" in html
    assert 'data-state="reported"' in html and "Building 3" in html
    assert '<meta http-equiv="refresh"' in html  # works with JavaScript off


def test_an_empty_store_says_all_quiet(tmp_path):
    from node.store import Store
    Store(tmp_path / "empty.db").close()
    client = create_app({"DATABASE": str(tmp_path / "empty.db")}).test_client()
    assert "ALL QUIET" in client.get("/").get_data(as_text=True)
    assert client.get("/api/alerts").get_json() == []


def test_a_missing_database_is_a_503_not_a_crash(tmp_path):
    client = create_app({"DATABASE": str(tmp_path / "nope.db")}).test_client()
    response = client.get("/api/alerts")
    assert response.status_code == 503


def test_web_never_imports_radio_hardware_or_daemon():
    code = ("import sys, web; web.create_app({'DATABASE': 'x'}); "
            "bad = [m for m in ('node.radio', 'node.hardware', 'node.daemon', 'gpiozero', 'meshtastic') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
