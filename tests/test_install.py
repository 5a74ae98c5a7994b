"""`silbato install` and `uninstall` into a temporary root: every step, idempotence, and nothing run on the host."""

import os
import stat
import tomllib

import pytest

from appliance import current, installed, silbato
from node import config as config_mod
from node.appliance.host import DirectoryHost, Layout
from node.appliance.install import PATH_SETTINGS, config_template, install


@pytest.fixture(scope="module")
def node_root(tmp_path_factory, release_wheels):
    root = tmp_path_factory.mktemp("node")
    first = silbato("install", "--root", root, "--from", release_wheels["base"])
    return root, first.stdout


def test_install_makes_a_node_under_the_root_and_says_what_it_did(node_root):
    root, output = node_root
    for step in ("user:", "groups:", "config: created", "state:", "release 99.0.0: installed",
                 "current: now releases/99.0.0", "units: installed", "node key: created", "services: enabled"):
        assert step in output, f"no {step!r} line in:\n{output}"
    assert current(root) == "releases/99.0.0"
    assert silbato("--version", exe=installed(root)).stdout.strip() == "silbato, version 99.0.0"
    units = sorted(p.name for p in (root / "etc" / "systemd" / "system").iterdir())
    # the gateway's and the bridge's units are installed on every node, and enabled only where turned on
    assert units == ["silbato-bridge.service", "silbato-gateway.service", "silbato-node.service", "silbato-purge.service",
                     "silbato-purge.timer", "silbato-web.service"]
    key = root / "var" / "lib" / "silbato" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    toml = root / "etc" / "silbato" / "silbato.toml"
    assert stat.S_IMODE(toml.stat().st_mode) == 0o640


def test_under_a_root_the_privileged_steps_are_recorded_not_run(node_root):
    _, output = node_root
    assert "recorded: useradd --system silbato" in output
    assert "services: enabled silbato-node.service, silbato-web.service, silbato-purge.timer (recorded)" in output
    assert os.system("getent passwd silbato >/dev/null") != 0, "install --root must not create a user here"


def test_the_page_gets_its_own_user_and_may_write_only_the_database_folder(node_root):
    root, output = node_root
    assert "recorded: useradd --system silbato-web" in output
    state = root / "var" / "lib" / "silbato"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE((state / "db").stat().st_mode) == 0o770
    assert stat.S_IMODE((root / "var" / "lib" / "silbato-web").stat().st_mode) == 0o700
    assert f"state: {root / 'var' / 'lib' / 'silbato-web'} (mode 0700, the page's own)" in output


def test_the_release_has_its_own_venv_with_reused_dependencies(node_root):
    root, output = node_root
    release = root / "opt" / "silbato" / "releases" / "99.0.0"
    assert (release / ".complete").is_file() and (release / "silbato-99.0.0-py3-none-any.whl").is_file()
    assert "reused" in output and "installed distributions" in output
    check = silbato("-c", "import flask, meshtastic, sqlite_utils, cryptography, node; print(node.__file__)",
                    exe=release / "venv" / "bin" / "python")
    assert str(release / "venv") in check.stdout, "the release imports its own copy of the code"


def test_install_again_changes_nothing(node_root, release_wheels):
    root, _ = node_root
    toml = root / "etc" / "silbato" / "silbato.toml"
    toml.write_text(toml.read_text() + "\n# a maintainer's note\n")
    key = (root / "var" / "lib" / "silbato" / "node.key").read_bytes()
    again = silbato("install", "--root", root, "--from", release_wheels["base"]).stdout
    for line in ("config: kept", "release 99.0.0: already installed", "current: already releases/99.0.0",
                 "units: unchanged", "node key: kept"):
        assert line in again, again
    assert "a maintainer's note" in toml.read_text()
    assert (root / "var" / "lib" / "silbato" / "node.key").read_bytes() == key


def test_the_settings_file_is_a_commented_template_of_every_setting(node_root):
    root, _ = node_root
    text = (root / "etc" / "silbato" / "silbato.toml").read_text()
    for setting in config_mod.SETTINGS:
        assert f"{setting.name.split('.', 1)[1]} = " in text, setting.name
    values = tomllib.loads(text)
    # Under a root, only the paths are set, and they point into the root.
    assert {f"{s}.{k}" for s, table in values.items() for k in table} == set(PATH_SETTINGS)
    cfg = config_mod.load(root / "etc" / "silbato" / "silbato.toml", env={})
    assert cfg.state_dir == root / "var" / "lib" / "silbato"
    assert cfg["node.organizer_key"] == str(root / "etc" / "silbato" / "organizer.pub")


def test_the_template_for_a_real_node_sets_nothing():
    values = tomllib.loads(config_template())
    assert all(not table for table in values.values())


def test_every_path_setting_is_rooted():
    paths = {s.name for s in config_mod.SETTINGS if str(s.default).startswith("/")}
    assert paths == set(PATH_SETTINGS), "a new path setting must be in install.PATH_SETTINGS"


def test_install_refuses_to_run_twice_at_once(tmp_path, release_wheels):
    layout = Layout(tmp_path)
    with layout.lock():
        with pytest.raises(Exception, match="another install or update is running"):
            install(layout, DirectoryHost(layout), release_wheels["base"], say=lambda _: None)


def test_uninstall_keeps_state_and_purge_removes_it(tmp_path, release_wheels):
    root = tmp_path / "node"
    silbato("install", "--root", root, "--from", release_wheels["base"])
    out = silbato("uninstall", "--root", root).stdout
    assert "services: stopped, disabled and removed" in out and "kept" in out
    assert not (root / "opt" / "silbato").exists()
    assert not list((root / "etc" / "systemd" / "system").iterdir())
    assert (root / "var" / "lib" / "silbato" / "node.key").is_file()
    assert (root / "etc" / "silbato" / "silbato.toml").is_file()

    refused = silbato("uninstall", "--root", root, "--purge", check=False)
    assert refused.returncode == 1, "--purge asks first; with no answer it stops"
    assert (root / "var" / "lib" / "silbato" / "node.key").is_file()

    out = silbato("uninstall", "--root", root, "--purge", "--yes").stdout
    assert "state: removed" in out and "config: removed" in out and "user: removed silbato (recorded)" in out
    assert not (root / "var" / "lib" / "silbato").exists() and not (root / "etc" / "silbato").exists()


def test_install_needs_root_privileges_for_the_real_root(monkeypatch):
    from click.testing import CliRunner

    from node.cli import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = CliRunner().invoke(cli, ["install", "--from", "x.whl"], obj={})
    assert result.exit_code == 1 and "run 'silbato install' as root" in result.output


@pytest.mark.parametrize("words", [["uninstall"], ["update", "--from", "x.whl"], ["wifi", "apply"]])
def test_every_command_that_changes_the_system_needs_root_privileges_and_says_which(monkeypatch, words):
    from click.testing import CliRunner

    from node.cli import cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("SILBATO_ROOT", raising=False)
    result = CliRunner().invoke(cli, words, obj={})
    name = " ".join(w for w in words if not w.startswith("-") and w != "x.whl")
    assert result.exit_code == 1 and f"run 'silbato {name}' as root (sudo), or give --root DIR" in result.output


def test_the_gateway_gets_its_own_user_and_a_spool_only_it_and_gammu_smsd_may_enter(node_root):
    root, output = node_root
    assert "recorded: useradd --system silbato-gateway" in output
    assert "groups: silbato-gateway is in gammu (gammu-smsd's) (recorded)" in output
    spool = root / "var" / "spool" / "silbato-sms"
    for folder in (spool, *(spool / name for name in ("inbox", "outbox", "sent", "error"))):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o2770, folder
    assert f"sms: {spool} and its folders (mode 2770, silbato-gateway:gammu)" in output
    # Off unless the operator turns it on: the unit is disabled, not enabled.
    assert "sms: silbato-gateway.service disabled (sms.enabled is false) (recorded)" in output


def test_sms_enabled_enables_the_gateway_and_turning_it_off_disables_it(tmp_path):
    from node.appliance.install import SPOOL_FOLDERS, enable_gateway, sms_spool
    from node.gateway.spool import FOLDERS

    assert SPOOL_FOLDERS == FOLDERS

    layout = Layout(tmp_path)
    host = DirectoryHost(layout)
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[sms]\nenabled = true\nspool = "{tmp_path / "spool"}"\n')
    cfg = config_mod.load(toml)
    said = []
    sms_spool(cfg, host, said.append)
    enable_gateway(cfg, host, said.append)
    assert ["chown", "silbato-gateway:gammu", str(tmp_path / "spool" / "outbox")] in host.recorded
    assert ["systemctl", "enable", "silbato-gateway.service"] in host.recorded
    toml.write_text(f'[sms]\nenabled = false\nspool = "{tmp_path / "spool"}"\n')
    enable_gateway(config_mod.load(toml), host, said.append)
    assert host.recorded[-1] == ["systemctl", "disable", "--now", "silbato-gateway.service"]


def test_the_bridge_gets_its_own_user_and_its_unit_is_off_unless_bridge_enabled(node_root, tmp_path):
    from node.appliance.install import enable_bridge

    _, output = node_root
    assert "recorded: useradd --system silbato-bridge" in output
    assert "bridge: silbato-bridge.service disabled (bridge.enabled is false) (recorded)" in output
    host = DirectoryHost(Layout(tmp_path))
    toml = tmp_path / "silbato.toml"
    toml.write_text('[neighborhood]\nname = "eastside"\n[bridge]\nenabled = true\nbroker = "mqtt.example:8883"\n')
    said = []
    enable_bridge(config_mod.load(toml), host, said.append)
    assert host.recorded[-1] == ["systemctl", "enable", "silbato-bridge.service"]
    assert "connects to bridge.broker (mqtt.example:8883)" in said[-1]
    toml.write_text('[bridge]\nenabled = false\n')
    enable_bridge(config_mod.load(toml), host, said.append)
    assert host.recorded[-1] == ["systemctl", "disable", "--now", "silbato-bridge.service"]
