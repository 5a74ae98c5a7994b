"""`silbato wifi apply`: the files it writes under a root, checked as NetworkManager, dnsmasq and avahi read them.

Nothing here changes this machine's network: under --root, nmcli and friends are recorded.
"""

import configparser
import stat
import xml.etree.ElementTree as ET

import pytest

from node import config as config_mod
from node.appliance import wifi
from node.errors import ConfigError
from node.appliance.host import DirectoryHost, Layout
from node.sim import provision


@pytest.fixture
def node(tmp_path):
    files = provision(tmp_path / "block", 3)
    return tmp_path / "root", files.configs[1]  # node 2, "B2", of block "sim-block"


def apply(root, cfg, **settings):
    cfg = config_mod.from_mapping(settings, base=dict(cfg))
    layout = Layout(root)
    host = DirectoryHost(layout)
    said = []
    warnings = wifi.apply(layout, host, cfg, say=said.append)
    return host, said, warnings


def keyfile(path):
    parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    parser.read_string(path.read_text())
    return parser


def test_ap_mode_writes_a_hotspot_profile_and_a_dns_rule_that_answers_every_name(node):
    root, cfg = node
    host, said, warnings = apply(root, cfg, **{"wifi.mode": "ap", "wifi.password": "correct horse", "web.port": 80})
    profile = root / "etc/NetworkManager/system-connections/silbato-hotspot.nmconnection"
    nm = keyfile(profile)
    assert nm["connection"]["type"] == "wifi" and nm["connection"]["interface-name"] == "wlan0"
    assert nm["wifi"]["mode"] == "ap" and nm["wifi"]["ssid"] == "Silbato sim-block"
    assert nm["wifi-security"]["key-mgmt"] == "wpa-psk" and nm["wifi-security"]["psk"] == "correct horse"
    assert nm["ipv4"]["method"] == "shared" and nm["ipv4"]["address1"] == "10.42.0.1/24"
    assert stat.S_IMODE(profile.stat().st_mode) == 0o600, "NetworkManager ignores profiles others can read"
    dns = (root / "etc/NetworkManager/dnsmasq-shared.d/silbato.conf").read_text()
    assert "address=/#/10.42.0.1" in dns and 'dhcp-option=114,"http://10.42.0.1/"' in dns
    assert "net.ipv4.ip_unprivileged_port_start = 80" in (root / "etc/sysctl.d/60-silbato-web.conf").read_text()
    assert ["nmcli", "connection", "up", "silbato-hotspot"] in host.recorded
    assert warnings == []


def test_an_open_hotspot_has_no_security_section_and_a_warning(node):
    root, cfg = node
    _, _, warnings = apply(root, cfg, **{"wifi.mode": "ap", "wifi.security": "open", "wifi.ssid": "Elm St"})
    nm = keyfile(root / "etc/NetworkManager/system-connections/silbato-hotspot.nmconnection")
    assert "wifi-security" not in nm and nm["wifi"]["ssid"] == "Elm St"
    assert any("open" in w for w in warnings) and any("web.port is 8080" in w for w in warnings)


def test_lan_mode_joins_the_building_wifi_and_is_announced_as_silbato_name_local(node):
    root, cfg = node
    host, said, _ = apply(root, cfg, **{"wifi.mode": "lan", "wifi.ssid": "Building2", "wifi.password": "hallway-42"})
    nm = keyfile(root / "etc/NetworkManager/system-connections/silbato-lan.nmconnection")
    assert nm["wifi"]["mode"] == "infrastructure" and nm["wifi"]["ssid"] == "Building2"
    assert nm["ipv4"]["method"] == "auto" and nm["wifi-security"]["psk"] == "hallway-42"
    assert (root / "etc/hostname").read_text() == "silbato-b2\n"
    assert "127.0.1.1\tsilbato-b2" in (root / "etc/hosts").read_text()
    service = ET.parse(root / "etc/avahi/services/silbato.service").getroot()
    assert service.find("service/type").text == "_http._tcp" and service.find("service/port").text == "8080"
    assert ["hostnamectl", "hostname", "silbato-b2"] in host.recorded
    assert ["systemctl", "restart", "avahi-daemon"] in host.recorded
    assert "wifi: host name is now silbato-b2 (reachable as silbato-b2.local)" in said


def test_lan_mode_without_an_ssid_keeps_the_wifi_the_pi_already_joins(node):
    root, cfg = node
    apply(root, cfg, **{"wifi.mode": "lan", "wifi.name": "corner-shop"})
    assert not (root / "etc/NetworkManager/system-connections/silbato-lan.nmconnection").exists()
    assert (root / "etc/hostname").read_text() == "silbato-corner-shop\n"


def test_switching_modes_removes_the_other_mode_s_files_and_applying_twice_changes_nothing(node):
    root, cfg = node
    ap = {"wifi.mode": "ap", "wifi.password": "correct horse"}
    apply(root, cfg, **ap)
    _, said, _ = apply(root, cfg, **ap)
    assert all("unchanged" in line or "recorded" in line for line in said), said
    apply(root, cfg, **{"wifi.mode": "lan"})
    assert not (root / "etc/NetworkManager/system-connections/silbato-hotspot.nmconnection").exists()
    assert not (root / "etc/NetworkManager/dnsmasq-shared.d/silbato.conf").exists()
    assert (root / "etc/avahi/services/silbato.service").exists()
    _, said, _ = apply(root, cfg, **{"wifi.mode": "off"})
    assert not (root / "etc/avahi/services/silbato.service").exists()
    assert any("removed" in line for line in said)


@pytest.mark.parametrize("settings, word", [
    ({"wifi.mode": "ap"}, "wifi.password"),
    ({"wifi.mode": "ap", "wifi.password": "short"}, "wifi.password"),
    ({"wifi.mode": "mesh"}, "wifi.mode"),
    ({"wifi.mode": "ap", "wifi.security": "wep", "wifi.password": "correct horse"}, "wifi.security"),
    ({"wifi.mode": "ap", "wifi.password": "correct horse", "wifi.ssid": "a;b"}, "wifi.ssid"),
    ({"wifi.mode": "ap", "wifi.password": "correct horse", "wifi.address": "8.8.8.1"}, "wifi.address"),
    ({"wifi.mode": "lan", "wifi.name": "Not Valid"}, "wifi.name"),
])
def test_bad_settings_are_refused_before_anything_is_written(node, settings, word):
    root, cfg = node
    with pytest.raises(ConfigError, match=word):
        apply(root, cfg, **settings)
    assert not (root / "etc").exists()


def test_the_command_writes_under_the_root(tmp_path):
    from click.testing import CliRunner

    from node.cli import cli

    root = tmp_path / "root"
    (root / "etc/silbato").mkdir(parents=True)
    (root / "etc/silbato/silbato.toml").write_text(
        f'[node]\nstate_dir = "{tmp_path / "state"}"\n[wifi]\nmode = "ap"\nsecurity = "open"\n')
    result = CliRunner().invoke(cli, ["wifi", "apply", "--root", str(root)], obj={})
    assert result.exit_code == 0, result.output
    assert "wifi: mode ap applied" in result.output and "WARN" in result.output
    nm = keyfile(root / "etc/NetworkManager/system-connections/silbato-hotspot.nmconnection")
    assert nm["wifi"]["ssid"] == "Silbato"  # no roster yet: no block name
