"""`silbato doctor`: each check, seen passing and failing, on a provisioned node in a temporary directory."""

import json
import os
import sqlite3
import time

import pytest
from click.testing import CliRunner

from node import statedir
from node.appliance import doctor as doctor_mod
from node.cli import cli
from node.appliance.doctor import FAIL, PASS, WARN, Doctor
from node.appliance.host import DirectoryHost, Layout
from node.sim import provision
from node.radio.sim_air import SimAir
from node.radio.sim_radio import SimMeshtasticRadio
from node.store import Store


class Services(DirectoryHost):
    """A host whose services are in the given states (a stand-in for systemctl)."""

    def __init__(self, layout, states):
        super().__init__(layout)
        self.states = states

    def service_state(self, unit):
        return self.states.get(unit, "inactive")


@pytest.fixture
def node(tmp_path):
    """Node 1 of a provisioned block: key, roster, organizer key, a database, and its settings file."""
    files = provision(tmp_path / "block", 2)
    cfg = files.configs[0]
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    Store(cfg.db_file).close()
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "gpiochip0").touch()
    return cfg, toml, dev


def doctor(toml, dev, **kw):
    host = kw.pop("host", None) or DirectoryHost(Layout(toml.parent))
    return Doctor(host, config_path=toml, dev=dev, **kw)


def findings(d: Doctor, name: str):
    return [r for r in d.run() if r.check == name]


def statuses(results):
    return {r.status for r in results}


def test_config_passes_when_valid_and_fails_naming_the_key(node, tmp_path):
    _, toml, dev = node
    assert statuses(findings(doctor(toml, dev), "config")) == {PASS}
    toml.write_text(toml.read_text() + '[radio]\nhop_limit = "seven"\n')
    (bad,) = findings(doctor(toml, dev), "config")
    assert bad.status == FAIL and "radio.hop_limit: expected an integer" in bad.detail
    toml.write_text(toml.read_text().replace('hop_limit = "seven"', "hop_limit = 3") + '[wifi]\nmode = "ap"\n')
    (bad,) = findings(doctor(toml, dev), "config")
    assert bad.status == FAIL and "wifi.password" in bad.detail


def test_key_passes_at_0600_and_fails_when_open_or_missing(node):
    cfg, toml, dev = node
    assert statuses(findings(doctor(toml, dev), "key")) == {PASS}
    os.chmod(cfg.key_file, 0o644)
    (bad,) = findings(doctor(toml, dev), "key")
    assert bad.status == FAIL and "0644" in bad.detail
    cfg.key_file.unlink()
    (bad,) = findings(doctor(toml, dev), "key")
    assert bad.status == FAIL and "not found" in bad.detail


def test_roster_passes_when_signed_warns_when_old_and_fails_when_tampered(node):
    cfg, toml, dev = node
    (good,) = findings(doctor(toml, dev), "roster")
    assert good.status == PASS and "v1 of block 'sim-block'" in good.detail and "B1" in good.detail
    old = time.time() - 31 * 86400
    os.utime(cfg.roster_file, (old, old))
    (stale,) = findings(doctor(toml, dev), "roster")
    assert stale.status == WARN and "31 days ago" in stale.detail
    document = json.loads(cfg.roster_file.read_text())
    document["roster"]["nodes"][0]["place"] = "Elsewhere"
    cfg.roster_file.write_text(json.dumps(document))
    (bad,) = findings(doctor(toml, dev), "roster")
    assert bad.status == FAIL and "bad signature" in bad.detail


def test_roster_fails_when_this_node_is_not_on_it(node):
    from node.protocol.keys import SigningKey

    cfg, toml, dev = node
    SigningKey.create(cfg.key_file, force=True)
    (bad,) = findings(doctor(toml, dev), "roster")
    assert bad.status == FAIL and "this node's key is not on it" in bad.detail


def test_radio_passes_with_a_private_key_and_fails_on_the_default_key_and_mqtt(node, tmp_path):
    _, toml, dev = node
    (none,) = findings(doctor(toml, dev), "radio")
    assert none.status == FAIL and "no radio configured" in none.detail

    base = toml.read_text()
    good = SimMeshtasticRadio(SimAir(1), 1, tmp_path / "by-id" / "usb-good-radio")
    try:
        toml.write_text(base + f'[radio]\nport = "{good.path}"\n')
        (ok,) = findings(doctor(toml, dev), "radio")
        assert ok.status == PASS and "firmware 2.6.11" in ok.detail and "private, 128-bit" in ok.detail \
            and "MQTT off" in ok.detail
    finally:
        good.close()
    (gone,) = findings(doctor(toml, dev), "radio")
    assert gone.status == FAIL and "no radio at" in gone.detail

    bad = SimMeshtasticRadio(SimAir(1), 1, tmp_path / "by-id" / "usb-bad-radio", psk=b"\x01", mqtt=True,
                             firmware="2.5.0.abc")
    try:
        toml.write_text(base + f'[radio]\nport = "{bad.path}"\n')
        found = findings(doctor(toml, dev), "radio")
    finally:
        bad.close()
    assert statuses(found) == {FAIL}
    text = " ".join(r.detail for r in found)
    assert "public default key" in text and "MQTT uplink is on" in text and "CVE-2025-52464" in text


def test_radio_while_the_daemon_runs_reads_its_troubles(node, tmp_path):
    cfg, toml, dev = node
    (tmp_path / "radio").touch()  # the daemon holds the port; the doctor only checks it is there
    toml.write_text(toml.read_text() + f'[radio]\nport = "{tmp_path / "radio"}"\n')
    host = Services(Layout(tmp_path), {"silbato-node.service": "active"})
    (ok,) = findings(doctor(toml, dev, host=host), "radio")
    assert ok.status == PASS and "silbato-node finds it healthy" in ok.detail
    store = Store(cfg.db_file)
    store.set_trouble("radio-mqtt", "MQTT uplink is on, so alerts could leave the block", 0.0)
    store.close()
    (bad,) = findings(doctor(toml, dev, host=host), "radio")
    assert bad.status == FAIL and "MQTT uplink is on" in bad.detail


def test_gpio_passes_with_a_chip_and_fails_without_one_or_on_a_clash(node, tmp_path):
    _, toml, dev = node
    (ok,) = findings(doctor(toml, dev), "gpio")
    assert ok.status == PASS and "gpiochip0" in ok.detail and "panic button GPIO17" in ok.detail
    (bad,) = findings(doctor(toml, tmp_path / "no-dev"), "gpio")
    assert bad.status == FAIL and "gpiochip" in bad.detail
    toml.write_text(toml.read_text() + "[hardware]\nsiren_pin = 17\n")
    (clash,) = findings(doctor(toml, dev), "gpio")
    assert clash.status == FAIL and "GPIO17 is given two jobs: panic button and siren" in clash.detail


def test_database_passes_when_sound_and_fails_when_corrupt_or_not_wal(node, tmp_path):
    cfg, toml, dev = node
    (ok,) = findings(doctor(toml, dev), "database")
    assert ok.status == PASS and "integrity ok, WAL, synchronous=FULL" in ok.detail

    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    (not_wal,) = findings(doctor(toml, dev, db=plain), "database")
    assert not_wal.status == FAIL and "journal_mode is delete" in not_wal.detail

    corrupt = tmp_path / "corrupt.db"
    conn = sqlite3.connect(corrupt)
    conn.execute("CREATE TABLE t (x)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    conn.commit()
    conn.close()
    data = bytearray(corrupt.read_bytes())
    data[4096 + 100:4096 + 400] = b"\xff" * 300  # scribble over a page of rows
    corrupt.write_bytes(bytes(data))
    (bad,) = findings(doctor(toml, dev, db=corrupt), "database")
    assert bad.status == FAIL

    (missing,) = findings(doctor(toml, dev, db=tmp_path / "none.db"), "database")
    assert missing.status == WARN and "does not exist yet" in missing.detail


def test_clock_passes_when_plausible_and_fails_when_never_set(node):
    _, toml, dev = node
    (ok,) = findings(doctor(toml, dev, clock=lambda: 1_800_000_000.0), "clock")
    assert ok.status == PASS and "2027-01-15" in ok.detail
    (bad,) = findings(doctor(toml, dev, clock=lambda: 0.0), "clock")
    assert bad.status == FAIL and "1970-01-01" in bad.detail


def test_languages_pass_when_compiled_and_warn_naming_a_missing_catalog(node, tmp_path):
    _, toml, dev = node
    (ok,) = findings(doctor(toml, dev), "languages")
    assert ok.status == PASS and "en, es, ko, tl" in ok.detail
    (tmp_path / "catalog").mkdir()
    missing = findings(doctor(toml, dev, catalog_dir=tmp_path / "catalog"), "languages")
    assert statuses(missing) == {WARN} and len(missing) == 3  # es, ko, tl; English needs none
    assert all("messages.mo is missing" in r.detail and "install it again" in r.detail for r in missing)


def test_disk_passes_with_room_warns_when_low_and_fails_when_nearly_full(node):
    _, toml, dev = node
    gib = 2**30
    (ok,) = findings(doctor(toml, dev, disk_usage=lambda _: (32 * gib, 4 * gib, 28 * gib)), "disk")
    assert ok.status == PASS and "28.0 GiB free of 32.0 GiB" in ok.detail
    (low,) = findings(doctor(toml, dev, disk_usage=lambda _: (32 * gib, 31.7 * gib, 0.3 * gib)), "disk")
    assert low.status == WARN
    (bad,) = findings(doctor(toml, dev, disk_usage=lambda _: (32 * gib, 32 * gib, 2**20)), "disk")
    assert bad.status == FAIL and "only 1 MiB free" in bad.detail


def test_services_pass_when_active_and_fail_when_not(node, tmp_path):
    _, toml, dev = node
    units = ("silbato-node.service", "silbato-web.service", "silbato-purge.timer")
    host = Services(Layout(tmp_path), {u: "active" for u in units})
    assert statuses(findings(doctor(toml, dev, host=host), "services")) == {PASS}
    host.states["silbato-node.service"] = "failed"
    found = findings(doctor(toml, dev, host=host), "services")
    assert [r.status for r in found] == [FAIL, PASS, PASS]
    assert "silbato-node.service is failed" in found[0].detail
    # Under --root there is no systemd to ask: a warning, not a failure.
    unknown = findings(doctor(toml, dev), "services")
    assert statuses(unknown) == {WARN}


def test_exit_code_is_0_with_warnings_only_and_1_with_any_failure():
    assert doctor_mod.exit_code([doctor_mod.Result(PASS, "a", ""), doctor_mod.Result(WARN, "b", "")]) == 0
    assert doctor_mod.exit_code([doctor_mod.Result(PASS, "a", ""), doctor_mod.Result(FAIL, "b", "")]) == 1


def test_a_crashing_check_is_a_failure_not_a_crash(node, monkeypatch):
    _, toml, dev = node

    def broken(_doctor):
        raise RuntimeError("boom")
        yield

    monkeypatch.setattr(doctor_mod, "CHECKS", [*doctor_mod.CHECKS, ("broken", broken)])
    (bad,) = findings(doctor(toml, dev), "broken")
    assert bad.status == FAIL and "RuntimeError: boom" in bad.detail


def test_separation_fails_when_the_page_could_read_a_key_or_write_the_state_directory(node, tmp_path):
    cfg, toml, dev = node
    channel = tmp_path / "channel.key"
    channel.write_bytes(bytes(32))
    os.chmod(channel, 0o600)
    toml.write_text(toml.read_text() + f'[radio]\nchannel_key_file = "{channel}"\n')
    statedir.prepare_db_dir(cfg)   # as the daemon leaves it
    (good,) = findings(doctor(toml, dev), "separation")
    assert good.status == PASS and "writes only" in good.detail
    os.chmod(channel, 0o640)
    (bad,) = findings(doctor(toml, dev), "separation")
    assert bad.status == FAIL and "the channel key" in bad.detail and "640" in bad.detail
    os.chmod(channel, 0o600)
    os.chmod(cfg.state_dir, 0o770)
    (bad,) = findings(doctor(toml, dev), "separation")
    assert bad.status == FAIL and "ask for a wipe" in bad.detail
    os.chmod(cfg.state_dir, 0o750)
    os.chmod(cfg.db_dir, 0o700)
    (warn,) = findings(doctor(toml, dev), "separation")
    assert warn.status == WARN and "not 770" in warn.detail
    os.chmod(cfg.db_dir, 0o770)
    (cfg.db_dir / "silbato.db-shm").symlink_to(cfg.key_file)   # what the page's user could plant
    (bad,) = findings(doctor(toml, dev), "separation")
    assert bad.status == FAIL and "silbato.db-shm" in bad.detail


def test_the_command_prints_one_line_per_finding_and_exits_1_on_failure(node):
    _, toml, _ = node
    result = CliRunner().invoke(cli, ["--config", str(toml), "doctor", "--root", str(toml.parent)], obj={},
                                env={"SILBATO_RADIO_PORT": None})
    assert result.exit_code == 1  # no radio and no GPIO here
    lines = result.output.strip().splitlines()
    assert all(line.split(" ", 1)[0] in (PASS, WARN, FAIL) for line in lines[:-1])
    assert "FAIL radio: no radio configured" in result.output and lines[-1].startswith("doctor: not fit")
    as_json = CliRunner().invoke(cli, ["--config", str(toml), "doctor", "--root", str(toml.parent), "--json"],
                                 obj={})
    found = json.loads(as_json.output)
    assert {"status": "PASS", "check": "key"} == {k: found[1][k] for k in ("status", "check")}


def test_gateway_passes_when_off_and_when_running_warns_locked_and_fails_without_a_modem(node, tmp_path):
    cfg, toml, dev = node
    unit = "silbato-gateway.service"
    host = Services(Layout(tmp_path), {unit: "inactive"})
    (off,) = findings(doctor(toml, dev, host=host), "gateway")
    assert off.status == PASS and "sms.enabled is false" in off.detail
    host.states[unit] = "active"
    (stray,) = findings(doctor(toml, dev, host=host), "gateway")
    assert stray.status == WARN and "sms.enabled is false" in stray.detail
    toml.write_text(toml.read_text() + "[sms]\nenabled = true\n")
    host.states[unit] = "failed"
    (failed,) = findings(doctor(toml, dev, host=host), "gateway")
    assert failed.status == FAIL and "silbato-gateway.service is failed" in failed.detail
    host.states[unit] = "active"

    def gateway_state(state, trouble):
        with Store(cfg.db_file) as store, store.transaction():
            store.db.execute("INSERT OR REPLACE INTO sms_state (key, value) VALUES ('state', ?), ('trouble', ?)",
                             [state, trouble])
        (found,) = findings(doctor(toml, dev, host=host), "gateway")
        return found

    locked = gateway_state("locked", "locked: texts wait until a captain runs 'silbato sms unlock'")
    assert locked.status == WARN and "silbato sms unlock" in locked.detail
    gone = gateway_state("running", "no modem: gammu-smsd is not running")
    assert gone.status == FAIL and gone.detail == "SMS gateway: no modem: gammu-smsd is not running"
    busy = gateway_state("running", "queue backing up: over 1000 texts waiting")
    assert busy.status == WARN
    fine = gateway_state("running", "")
    assert fine.status == PASS and fine.detail == "running, unlocked, the modem seen, 0 texts queued"


def test_bridge_passes_when_off_fails_on_bad_settings_or_a_link_down_and_passes_with_the_link_up(node, tmp_path):
    cfg, toml, dev = node
    unit = "silbato-bridge.service"
    host = Services(Layout(tmp_path), {unit: "inactive"})
    (off,) = findings(doctor(toml, dev, host=host), "bridge")
    assert off.status == PASS and "bridge.enabled is false" in off.detail
    host.states[unit] = "active"
    (stray,) = findings(doctor(toml, dev, host=host), "bridge")
    assert stray.status == WARN and "bridge.enabled is false" in stray.detail
    base = toml.read_text()
    toml.write_text(base + '[bridge]\nenabled = true\n')
    (empty,) = findings(doctor(toml, dev, host=host), "bridge")
    assert empty.status == FAIL and "neighborhood.name is empty" in empty.detail
    secret = tmp_path / "bridge.password"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    toml.write_text(base + '[neighborhood]\nname = "eastside"\n[bridge]\nenabled = true\nbroker = "b.example:8883"\n'
                    f'username = "A"\npassword_file = "{secret}"\n')
    (loose,) = findings(doctor(toml, dev, host=host), "bridge")
    assert loose.status == FAIL and "mode 0644, expected 0600" in loose.detail
    secret.chmod(0o600)
    host.states[unit] = "failed"
    (failed,) = findings(doctor(toml, dev, host=host), "bridge")
    assert failed.status == FAIL and "silbato-bridge.service is failed" in failed.detail
    host.states[unit] = "active"

    def bridge_state(link, trouble):
        with Store(cfg.db_file) as store, store.transaction():
            store.db.execute("INSERT OR REPLACE INTO bridge_state (key, value) VALUES ('link', ?), ('trouble', ?)",
                             [link, trouble])
        (found,) = findings(doctor(toml, dev, host=host), "bridge")
        return found

    down = bridge_state("down", "neighborhood link down since 10:02 (connection refused)")
    assert down.status == FAIL and down.detail == "neighborhood link down since 10:02 (connection refused)"
    assert bridge_state("down", "").status == WARN
    up = bridge_state("up", "")
    assert up.status == PASS and up.detail == "the link to b.example:8883 is up"
