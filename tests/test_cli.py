"""The silbato command, through click's runner and as a real process."""

import json
import os
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from node.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def node_toml(tmp_path):
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\norganizer_key = "{tmp_path / "org.key.pub"}"\n')
    return toml


def invoke(runner, *args):
    return runner.invoke(cli, list(args), obj={}, catch_exceptions=False, env={"SILBATO_RADIO_PORT": None})


def test_help_lists_the_commands(runner):
    result = invoke(runner, "--help")
    assert result.exit_code == 0
    for word in ("run", "web", "sim", "config", "keys", "roster", "purge"):
        assert word in result.output


def test_the_installed_console_script_answers():
    exe = os.path.join(os.path.dirname(sys.executable), "silbato")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "silbato" in result.stdout


def test_config_show_prints_effective_settings(runner, node_toml):
    result = runner.invoke(cli, ["--config", str(node_toml), "config", "show"], obj={},
                           env={"SILBATO_WEB_PORT": "9090"})
    assert result.exit_code == 0, result.output
    assert "port = 9090" in result.output and str(node_toml.parent / "state") in result.output


def test_a_bad_config_is_one_line_naming_file_and_key(runner, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[radio]\nhop_limit = \"seven\"\n")
    result = invoke(runner, "--config", str(bad), "config", "show")
    assert result.exit_code == 1
    assert f"{bad}: radio.hop_limit: expected an integer" in result.output
    missing = invoke(runner, "--config", str(tmp_path / "nope.toml"), "config", "show")
    assert missing.exit_code == 1 and "config file not found" in missing.output


def test_keys_init_creates_a_private_key_and_refuses_to_replace_it(runner, node_toml, tmp_path):
    result = invoke(runner, "--config", str(node_toml), "keys", "init")
    assert result.exit_code == 0 and "public key:" in result.output
    key = tmp_path / "state" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    again = invoke(runner, "--config", str(node_toml), "keys", "init")
    assert again.exit_code == 1 and "already exists" in again.output
    shown = invoke(runner, "--config", str(node_toml), "keys", "show")
    assert shown.output.strip() in result.output


def test_roster_sign_install_and_a_tampered_roster_is_rejected(runner, node_toml, tmp_path):
    org = tmp_path / "org.key"
    assert invoke(runner, "roster", "keygen", str(org)).exit_code == 0
    pub = invoke(runner, "--config", str(node_toml), "keys", "init").output.split("public key: ")[1].strip()
    body = tmp_path / "roster-body.json"
    body.write_text(json.dumps({"block": "elm", "version": 2, "nodes": [
        {"id": 1, "name": "B1", "location": 101, "place": "Building 1", "public_key": pub}]}))
    signed = tmp_path / "roster.json"
    assert invoke(runner, "roster", "sign", str(body), "--key", str(org), "--out", str(signed)).exit_code == 0

    document = json.loads(signed.read_text())
    document["roster"]["nodes"][0]["place"] = "Somewhere else"
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    result = invoke(runner, "--config", str(node_toml), "roster", "install", str(tampered))
    assert result.exit_code == 1 and "bad signature" in result.output

    result = invoke(runner, "--config", str(node_toml), "roster", "install", str(signed))
    assert result.exit_code == 0 and "installed roster v2" in result.output
    assert "Building 1" in invoke(runner, "--config", str(node_toml), "roster", "show").output

    body.write_text(json.dumps({**json.loads(body.read_text()), "version": 1}))
    older = tmp_path / "older.json"
    invoke(runner, "roster", "sign", str(body), "--key", str(org), "--out", str(older))
    result = invoke(runner, "--config", str(node_toml), "roster", "install", str(older))
    assert result.exit_code == 1 and "older than installed version 2" in result.output


def test_purge_runs_on_an_empty_store(runner, node_toml):
    result = invoke(runner, "--config", str(node_toml), "purge")
    assert result.exit_code == 0 and "purged 0 alerts" in result.output


def free_port_base(n):
    """A port p such that p..p+n are free on 127.0.0.1 right now."""
    import socket
    for base in range(20000, 60000, 97):
        socks = []
        try:
            for port in range(base, base + n + 1):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


def test_the_block_demo_carries_a_held_button_to_the_last_node(tmp_path):
    import urllib.request

    base = free_port_base(5)
    exe = os.path.join(os.path.dirname(sys.executable), "silbato")
    proc = subprocess.Popen([exe, "sim", "--nodes", "5", "--topology", "line", "--port-base", str(base),
                             "--scale", "5", "--dir", str(tmp_path / "sim")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        for line in proc.stdout:
            if "Ctrl-C stops the block" in line:
                break
        nodes = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{base}/nodes", timeout=10).read())
        assert [n["url"] for n in nodes] == [f"http://127.0.0.1:{base + i}/" for i in range(1, 6)]
        request = urllib.request.Request(f"http://127.0.0.1:{base}/nodes/1/hold?seconds=3", method="POST")
        assert json.loads(urllib.request.urlopen(request, timeout=10).read())["held_for"] == 3
        # Wait for the page of node 5 to show it: the sim runs on the wall clock here.
        import time
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline and not rows:
            rows = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{base + 5}/api/alerts", timeout=10).read())
            if not rows:
                time.sleep(0.2)
        assert rows and rows[0]["state"] == "reported" and rows[0]["place"] == "Building 1"
        page = urllib.request.urlopen(f"http://127.0.0.1:{base + 5}/", timeout=10).read().decode()
        assert "RAID REPORTED" in page
    finally:
        proc.terminate()
        proc.wait(timeout=30)
