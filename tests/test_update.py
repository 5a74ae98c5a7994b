"""`silbato update`: a good release is switched to; a bad one (doctor, migrations, health) never stays.

The node lives in a temporary root (`silbato install --root`), so the services are not
run: under a root, "healthy" means the new current release answers `silbato status`.
The health wait after a switch, with systemd, is driven through a stand-in host whose
services come up, or not, as each test says.
"""

import http.server
import json
import os
import shutil
import sqlite3
import threading
import time

import pytest

from appliance import build_release, current, installed, silbato
from node import config as config_mod
from node.protocol.alerts import Alert, Kind, State
from node.appliance.host import Host, Layout
from node.store import Store
from node.appliance.update import KEEP, Updater


@pytest.fixture
def node_root(tmp_path, release_wheels):
    root = tmp_path / "node"
    silbato("install", "--root", root, "--from", release_wheels["base"])
    cfg = config_mod.load(root / "etc" / "silbato" / "silbato.toml", env={})
    store = Store(cfg.db_file)
    store.save_alert(Alert("1-7", Kind.RAID, 101, 1, State.REPORTED, 1, 100.0, 100.0, 100.0))
    store.close()
    return root


def test_a_good_release_is_switched_to_and_the_old_one_kept(node_root, release_wheels):
    root = node_root
    result = silbato("update", "--root", root, "--from", release_wheels["good"], "--json", exe=installed(root))
    lines = result.stdout.strip().splitlines()
    assert json.loads(lines[-1]) == {"old": "99.0.0", "new": "99.0.1", "result": "updated", "reason": ""}
    assert "update: updated 99.0.0 -> 99.0.1" in lines
    for step in ("release 99.0.1: installed", "migrations: no migrations pending (on a copy of the database)",
                 "doctor (99.0.1): no new failure", "current: 99.0.0 -> 99.0.1", "healthy on 99.0.1"):
        assert step in result.stdout, result.stdout
    assert current(root) == "releases/99.0.1"
    assert (root / "opt" / "silbato" / "releases" / "99.0.0" / ".complete").is_file(), "kept for a rollback"
    state = root / "var" / "lib" / "silbato"
    assert not list(state.glob(".update-*")), "the trial copy of the database is removed"
    assert json.loads(silbato("status", "--root", root, "--json", exe=installed(root)).stdout)["alerts"][0]["id"] \
        == "1-7"

    again = silbato("update", "--root", root, "--from", release_wheels["good"], "--json", exe=installed(root))
    assert json.loads(again.stdout.strip().splitlines()[-1])["result"] == "unchanged"


def test_a_release_whose_doctor_fails_is_rolled_back(node_root, release_wheels):
    root = node_root
    result = silbato("update", "--root", root, "--from", release_wheels["broken"], "--json",
                     exe=installed(root), check=False)
    assert result.returncode == 1
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["result"] == "rolled back" and outcome["old"] == "99.0.0" and outcome["new"] == "99.0.2"
    assert "FAIL release: this test release is broken on purpose" in outcome["reason"]
    assert "(fails with the current release too)" in result.stdout, "the node's own failures do not block"
    assert current(root) == "releases/99.0.0"
    assert not (root / "opt" / "silbato" / "releases" / "99.0.2").exists()


def test_a_release_whose_migration_fails_never_touches_the_live_database(node_root, tmp_path):
    root = node_root
    db = root / "var" / "lib" / "silbato" / "db" / "silbato.db"
    before = sqlite3.connect(db).execute("SELECT name FROM _sqlite_migrations ORDER BY name").fetchall()
    wheel = build_release(tmp_path / "bad-migration", "99.0.3", store_patch=(
        '\n\n@migrations()\ndef m999_broken_on_purpose(db):\n'
        '    db.execute("CREATE TABLE alerts (x)")  # exists already: fails\n'))
    result = silbato("update", "--root", root, "--from", wheel, "--json", exe=installed(root), check=False)
    assert result.returncode == 1
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["result"] == "rolled back" and "migrations failed on a copy of the database" in outcome["reason"]
    after = sqlite3.connect(db).execute("SELECT name FROM _sqlite_migrations ORDER BY name").fetchall()
    assert after == before and current(root) == "releases/99.0.0"


class Systemd(Host):
    """A stand-in for systemctl: ``healthy(version)`` says whether the services come up on a release."""

    real = True

    def __init__(self, layout, healthy):
        super().__init__(layout)
        self.healthy = healthy

    def run(self, argv, *, check=True):
        self.recorded.append(list(argv))

    def service_state(self, unit):
        return "active" if self.healthy(self.layout.current_version()) else "activating"

    def service_restarts(self, unit):
        return 0

    def user_exists(self, name):
        return True

    def group_exists(self, name):
        return True

    def chown(self, path, user, group=None):
        pass


@pytest.fixture
def page():
    """A page answering /api/health on a free port, like silbato-web."""
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    thread.join(5)


def updater(root, host, port, lines):
    layout = host.layout
    cfg = config_mod.load(layout.config_file, env={}, overrides={"web.port": port, "web.host": "127.0.0.1"})
    clock = [0.0]
    return Updater(layout, host, cfg, config_path=layout.config_file, say=lines.append, health_timeout=60,
                   settle=5, sleep=lambda s: clock.__setitem__(0, clock[0] + s), clock=lambda: clock[0])


def test_after_the_switch_it_waits_for_active_services_and_the_page(node_root, release_wheels, page):
    layout = Layout(node_root)
    host = Systemd(layout, healthy=lambda version: True)
    lines = []
    outcome = updater(node_root, host, page, lines).run(release_wheels["good"])
    assert outcome.result == "updated", lines
    assert ["systemctl", "restart", "--no-block", "silbato-node.service", "silbato-web.service"] in host.recorded
    assert current(node_root) == "releases/99.0.1"


def test_a_release_that_does_not_come_up_is_switched_back_within_the_timeout(node_root, release_wheels, page):
    layout = Layout(node_root)
    host = Systemd(layout, healthy=lambda version: version != "99.0.1")
    lines = []
    start = time.monotonic()
    outcome = updater(node_root, host, page, lines).run(release_wheels["good"])
    assert outcome.result == "rolled back" and "silbato-node.service is activating" in outcome.reason
    assert current(node_root) == "releases/99.0.0"
    restarts = [c for c in host.recorded if c[:2] == ["systemctl", "restart"]]
    assert len(restarts) == 2, "restarted on the new release, then on the old one"
    assert "current: 99.0.1 -> 99.0.0 (rolled back)" in lines and "healthy again on 99.0.0" in lines
    assert not (node_root / "opt" / "silbato" / "releases" / "99.0.1").exists()
    assert time.monotonic() - start < 60, "the 60 s wait runs on the injected clock"


def test_old_releases_are_pruned_but_the_rollback_target_stays(tmp_path):
    layout = Layout(tmp_path)
    for i, name in enumerate(["1.0", "1.1", "1.2", "1.3", "1.4"]):
        release = layout.release(name)
        release.mkdir(parents=True)
        (release / ".complete").write_text(name)
        stamp = 1_000_000 + i
        os.utime(release, (stamp, stamp))
    updater_ = Updater(layout, Systemd(layout, lambda v: True), config_mod.from_mapping({}), config_path=None,
                       say=lambda _: None)
    updater_._prune(keep={layout.release("1.4"), layout.release("1.0")})
    left = sorted(p.name for p in layout.releases.iterdir())
    assert len(left) == KEEP and "1.0" in left and "1.4" in left and "1.3" in left
    shutil.rmtree(layout.releases)
