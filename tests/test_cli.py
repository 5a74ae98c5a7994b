"""The silbato command, through click's runner and as a real process."""

import json
import os
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.protocol.keys import SigningKey


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


def test_keys_init_creates_a_private_key_and_keeps_an_existing_one(runner, node_toml, tmp_path):
    result = invoke(runner, "--config", str(node_toml), "keys", "init")
    assert result.exit_code == 0 and "public key:" in result.output
    key = tmp_path / "state" / "node.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    before = key.read_bytes()
    shown = invoke(runner, "--config", str(node_toml), "keys", "show").output.strip()
    assert shown in result.output

    # As after 'silbato install', which makes the key: keys init says so and shows it, no error.
    again = invoke(runner, "--config", str(node_toml), "keys", "init")
    assert again.exit_code == 0, again.output
    assert "this node has a key already" in again.output and "'silbato install' makes one" in again.output
    assert f"public key: {shown}" in again.output and "refusing" not in again.output
    assert key.read_bytes() == before

    forced = invoke(runner, "--config", str(node_toml), "keys", "init", "--force")
    assert forced.exit_code == 0 and f"replaced {key}" in forced.output and key.read_bytes() != before


def test_roster_keygen_keeps_the_organizers_key(runner, tmp_path):
    org = tmp_path / "organizer.key"
    assert invoke(runner, "roster", "keygen", str(org)).exit_code == 0
    before = org.read_bytes()
    again = invoke(runner, "roster", "keygen", str(org))
    assert again.exit_code == 1 and "the organizers make their key once and keep it" in again.output
    assert "node identity" not in again.output and org.read_bytes() == before


def make_roster_body(tmp_path, pub, *, revoked=False, version=1):
    body = tmp_path / f"body-{version}.json"
    body.write_text(json.dumps({"block": "elm", "version": version, "nodes": [
        {"id": 1, "name": "B1", "location": 101, "place": "Building 1", "public_key": pub, "revoked": revoked}]}))
    return body


@pytest.mark.parametrize("make_private", [False, True], ids=["as written", "after chmod 600"])
def test_roster_sign_refuses_the_public_key(runner, tmp_path, make_private):
    org = tmp_path / "organizer.key"
    invoke(runner, "roster", "keygen", str(org))
    pub = tmp_path / "organizer.key.pub"
    if make_private:
        pub.chmod(0o600)
    body = make_roster_body(tmp_path, SigningKey.generate().public_b64)
    out = tmp_path / "roster.json"
    result = invoke(runner, "roster", "sign", str(body), "--key", str(pub), "--out", str(out))
    assert result.exit_code == 1 and not out.exists()
    assert (f"{pub}: that is the organizers' public key; sign with the private key (organizer.key)"
            in result.output), result.output
    assert "mode" not in result.output


def test_roster_install_refuses_a_roster_without_this_node(runner, node_toml, tmp_path):
    org = tmp_path / "org.key"
    invoke(runner, "roster", "keygen", str(org))
    anyone = tmp_path / "anyone.json"
    invoke(runner, "roster", "sign", str(make_roster_body(tmp_path, SigningKey.generate().public_b64)),
           "--key", str(org), "--out", str(anyone))
    absent = invoke(runner, "--config", str(node_toml), "roster", "install", str(anyone))
    assert absent.exit_code == 1 and "this node has no key yet: run 'silbato keys init'" in absent.output

    mine = invoke(runner, "--config", str(node_toml), "keys", "init").output.split("public key: ")[1].strip()
    other = SigningKey.generate().public_b64
    roster_file = tmp_path / "state" / "roster.json"
    for pub, revoked, words in [(other, False, f"this roster does not list this node's key ({mine}): "
                                                "ask the organizers to add it"),
                                (mine, True, f"this roster lists this node's key ({mine}) as B1, revoked")]:
        signed = tmp_path / "roster.json"
        assert invoke(runner, "roster", "sign", str(make_roster_body(tmp_path, pub, revoked=revoked)),
                      "--key", str(org), "--out", str(signed)).exit_code == 0
        result = invoke(runner, "--config", str(node_toml), "roster", "install", str(signed))
        assert result.exit_code == 1 and words in result.output, result.output
        assert not roster_file.exists()


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
    assert result.exit_code == 0 and "installed roster v2" in result.output and "this node is B1" in result.output
    assert "Building 1" in invoke(runner, "--config", str(node_toml), "roster", "show").output

    body.write_text(json.dumps({**json.loads(body.read_text()), "version": 1}))
    older = tmp_path / "older.json"
    invoke(runner, "roster", "sign", str(body), "--key", str(org), "--out", str(older))
    result = invoke(runner, "--config", str(node_toml), "roster", "install", str(older))
    assert result.exit_code == 1 and "older than installed version 2" in result.output


def test_purge_runs_on_an_empty_store(runner, node_toml, tmp_path):
    from node import config
    from node.store import Store

    Store(config.load(node_toml, env={}).db_file).close()
    result = invoke(runner, "--config", str(node_toml), "purge")
    assert result.exit_code == 0 and "purged 0 alerts" in result.output


def test_purge_never_makes_a_database(runner, node_toml, tmp_path):
    result = invoke(runner, "--config", str(node_toml), "purge")
    db = tmp_path / "state" / "db" / "silbato.db"
    assert result.exit_code == 0 and f"nothing to purge: no database at {db}" in result.output
    assert not (tmp_path / "state").exists(), "purge made a folder or a database"


def node_env(**more):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SILBATO_", "GPIOZERO_"))}
    return {**env, **more}


@pytest.mark.skipif(any(os.path.exists(f"/dev/gpiochip{i}") for i in range(5)), reason="this machine has GPIO")
def test_run_off_a_pi_says_so_in_one_line_and_how_to_use_mock_pins(tmp_path):
    from node.sim import provision

    cfg = provision(tmp_path / "block", 1).configs[0]
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    result = subprocess.run([sys.executable, "-m", "node.cli", "--config", str(toml), "run"], env=node_env(),
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "INFO" not in line]
    assert errors == ["Error: no GPIO on this machine: gpiozero found no pin library that works here (on a Pi: "
                      "is python3-lgpio installed, and is the node's user in the gpio group?). To try Silbato on a "
                      "laptop, use mock pins: 'silbato run --mock-pins', 'silbato hardware test --mock', or "
                      "GPIOZERO_PIN_FACTORY=mock"], result.stderr


def test_run_with_mock_pins_runs_and_status_sees_it_running(tmp_path):
    import signal
    import socket

    from node.sim import provision

    cfg = provision(tmp_path / "block", 1).configs[0]
    root = tmp_path / "root"
    (root / "etc" / "silbato").mkdir(parents=True)
    toml = root / "etc" / "silbato" / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # READY=1 comes once the daemon recorded its pid
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    proc = subprocess.Popen([sys.executable, "-m", "node.cli", "--config", str(toml), "run", "--mock-pins"],
                            env=node_env(NOTIFY_SOCKET=str(tmp_path / "notify")), cwd=tmp_path,
                            stderr=subprocess.DEVNULL)
    try:
        assert notify.recv(4096).decode().startswith("READY=1")
        status = subprocess.run([sys.executable, "-m", "node.cli", "status", "--root", str(root)], env=node_env(),
                                capture_output=True, text=True, timeout=60)
        assert f"health    trouble: silbato-node running, not under systemd (pid {proc.pid})" in status.stdout
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        notify.close()
    status = subprocess.run([sys.executable, "-m", "node.cli", "status", "--root", str(root)], env=node_env(),
                            capture_output=True, text=True, timeout=60)
    assert "health    down: silbato-node not running" in status.stdout, status.stdout


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
