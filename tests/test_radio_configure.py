"""`silbato radio keygen|configure|info` against a simulated radio, checked with the real meshtastic CLI."""

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from meshtastic.protobuf import apponly_pb2

from node.cli import cli
from node.radio.sim_air import SimAir
from node.radio.sim_radio import SimMeshtasticRadio

REPO = Path(__file__).parent.parent


@pytest.fixture
def radio(tmp_path):
    r = SimMeshtasticRadio(SimAir(1), 1, tmp_path / "by-id" / "usb-sim-radio", psk=b"\x01", mqtt=True)
    yield r
    r.close()


@pytest.fixture
def toml(tmp_path, radio):
    path = tmp_path / "silbato.toml"
    path.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[radio]\nport = "{radio.path}"\nchannel_key_file = "{tmp_path / "channel.key"}"\n')
    return path


def run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args], obj={}, catch_exceptions=False)
    return result


def test_configure_applies_the_yaml_and_the_private_key(tmp_path, toml, radio):
    before = run("--config", toml, "radio", "info")
    assert before.exit_code == 0, before.output
    assert "public default (AQ==)" in before.output and "TROUBLE" in before.output and "MQTT uplink" in before.output

    assert run("--config", toml, "radio", "keygen").exit_code == 0
    key_file = tmp_path / "channel.key"
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    key = base64.b64decode(key_file.read_text())
    again = run("--config", toml, "radio", "keygen")
    assert again.exit_code == 1 and "exists" in again.output

    result = run("--config", toml, "radio", "configure", "--file", REPO / "firmware_config" / "meshtastic.yaml")
    assert result.exit_code == 0, result.output
    assert "wrote config.lora" in result.output and "committed" in result.output
    assert "TROUBLE" not in result.output
    assert radio.channels[0].settings.psk == key and radio.modules.mqtt.enabled is False

    # The real meshtastic CLI sees the same settings on the radio.
    exe = os.path.join(os.path.dirname(sys.executable), "meshtastic")
    exported = subprocess.run([exe, "--port", str(radio.path), "--export-config"], capture_output=True,
                              text=True, timeout=120)
    assert exported.returncode == 0, exported.stderr
    config = yaml.safe_load(exported.stdout)
    lora = config["config"]["lora"]
    assert lora["modemPreset"] == "MEDIUM_FAST" and lora["hopLimit"] == 5 and lora["region"] == "US"
    assert config["config"]["bluetooth"]["enabled"] is False
    assert config["module_config"]["mqtt"].get("enabled", False) is False
    url = config.get("channel_url") or config["channelUrl"]
    fragment = url.split("#", 1)[1]
    channels = apponly_pb2.ChannelSet.FromString(base64.urlsafe_b64decode(fragment + "=" * (-len(fragment) % 4)))
    assert channels.settings[0].psk == key and channels.settings[0].name == "silbato"

    after = run("--config", toml, "radio", "info")
    assert "private, 256-bit" in after.output and "health       ok" in after.output


def test_configure_names_a_bad_section(tmp_path, toml, radio):
    run("--config", toml, "radio", "keygen")
    bad = tmp_path / "bad.yaml"
    bad.write_text("config:\n  lora:\n    modemPreset: WARP_SPEED\n")
    result = run("--config", toml, "radio", "configure", "--file", bad)
    assert result.exit_code == 1 and f"{bad}: config.lora" in result.output
    bad.write_text("config:\n  teleporter:\n    enabled: true\n")
    result = run("--config", toml, "radio", "configure", "--file", bad)
    assert result.exit_code == 1 and "config.teleporter: no such section" in result.output


def test_configure_without_a_key_file_says_how_to_make_one(toml, radio):
    result = run("--config", toml, "radio", "configure", "--file", REPO / "firmware_config" / "meshtastic.yaml")
    assert result.exit_code == 1 and "silbato radio keygen" in result.output


def test_info_without_a_radio_is_one_clear_line(tmp_path):
    path = tmp_path / "silbato.toml"
    path.write_text(f'[radio]\nport = "{tmp_path / "nothing"}"\n')
    result = run("--config", path, "radio", "info")
    assert result.exit_code == 1 and "check the USB cable" in result.output
