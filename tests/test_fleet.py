"""`silbato fleet` against a real sshd on loopback and two nodes that are directories on this machine.

The fixture starts `/usr/sbin/sshd -D` on a free port of 127.0.0.1 with a throwaway host
key and a user key made here, and writes an ssh_config with two host aliases, node-a and
node-b. Each alias sends its node's directory as SILBATO_ROOT (SetEnv; the sshd accepts
it), so `silbato` on the far side acts on that node. Nothing but 127.0.0.1 is contacted.
"""

import getpass
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance import add_roster, clean_env, current, silbato
from node.protocol.keys import SigningKey
from node.store import Store

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "silbato-test", "-f", str(path)],
                   check=True)


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1:<free port>; yields the directory with its keys and files."""
    assert SSHD.exists() and shutil.which("ssh"), "install openssh-server and openssh-client (.ci/apt-packages)"
    d = tmp_path_factory.mktemp("sshd")
    keygen(d / "host_key")
    keygen(d / "id")
    (d / "authorized_keys").write_text((d / "id.pub").read_text())
    port = free_port()
    user = getpass.getuser()
    (d / "sshd_config").write_text(f"""\
Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {user}
StrictModes no
UsePAM no
AcceptEnv SILBATO_ROOT
LogLevel VERBOSE
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    host_key = " ".join((d / "host_key.pub").read_text().split()[:2])
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    with open(d / "sshd.log", "w") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while True:  # sshd is ready when its port accepts connections
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise AssertionError(f"sshd did not start: {(d / 'sshd.log').read_text()}") from None
                    time.sleep(0.05)
            yield Sshd(d, port, user)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


@dataclass
class Sshd:
    dir: Path    # keys, sshd_config, known_hosts, sshd.log
    port: int
    user: str


@pytest.fixture
def fleet(sshd, tmp_path, release_wheels):
    """Nodes node-a and node-b on 99.0.0, each with a key, the block's roster and a database."""
    roots = {"node-a": tmp_path / "node-a", "node-b": tmp_path / "node-b"}
    blocks = []
    for name, root in roots.items():
        silbato("install", "--root", root, "--from", release_wheels["base"])
        blocks.append(f"""\
Host {name}
  HostName 127.0.0.1
  Port {sshd.port}
  User {sshd.user}
  IdentityFile {sshd.dir / 'id'}
  IdentitiesOnly yes
  UserKnownHostsFile {sshd.dir / 'known_hosts'}
  StrictHostKeyChecking yes
  SetEnv SILBATO_ROOT={root}
""")
    blocks.append(f"""\
Host node-down
  HostName 127.0.0.1
  Port {free_port()}
  User {sshd.user}
  IdentityFile {sshd.dir / 'id'}
  IdentitiesOnly yes
  UserKnownHostsFile {sshd.dir / 'known_hosts'}
""")
    config = tmp_path / "ssh_config"
    config.write_text("\n".join(blocks))
    organizer = SigningKey.generate()
    add_roster({1: roots["node-a"], 2: roots["node-b"]}, organizer)
    for root in roots.values():
        Store(root / "var" / "lib" / "silbato" / "db" / "silbato.db").close()
    return config, roots, organizer


def fleet_cli(config: Path, *args, check: bool = False) -> subprocess.CompletedProcess:
    return silbato("fleet", "--ssh-config", config, *args, check=check, env=clean_env(), timeout=600)


def table(output: str) -> dict[str, list[str]]:
    """The rows of the HOST/OLD/NEW/RESULT table, by host."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("HOST "))
    rows = {}
    for line in lines[start + 1:]:
        if line.startswith("fleet:"):
            break
        host, old, new, result = line.split(None, 3)
        rows[host] = [old, new, result]
    return rows


def snapshot(root: Path) -> dict[str, float]:
    return {str(p.relative_to(root)): p.lstat().st_mtime for p in root.rglob("*")}


def test_a_good_release_switches_both_nodes_and_a_broken_one_stops_at_the_canary(fleet, release_wheels):
    config, roots, _ = fleet
    start = time.monotonic()
    good = fleet_cli(config, "update", "node-a", "node-b", "--from", release_wheels["good"])
    seconds = time.monotonic() - start
    assert good.returncode == 0, good.stdout + good.stderr
    assert table(good.stdout) == {"node-a": ["99.0.0", "99.0.1", "updated"],
                                  "node-b": ["99.0.0", "99.0.1", "updated"]}
    assert "[node-a] healthy on 99.0.1" in good.stdout and "[node-b] healthy on 99.0.1" in good.stdout
    assert "fleet: 2 of 2 nodes on 99.0.1 in" in good.stdout
    assert current(roots["node-a"]) == current(roots["node-b"]) == "releases/99.0.1"
    print(f"\nfleet update of 2 nodes over loopback ssh: {seconds:.1f} s\n{good.stdout}")

    untouched = snapshot(roots["node-b"])
    bad = fleet_cli(config, "update", "node-a", "node-b", "--from", release_wheels["broken"])
    assert bad.returncode == 1
    rows = table(bad.stdout)
    assert rows["node-a"][:2] == ["99.0.1", "99.0.2"]
    assert rows["node-a"][2].startswith("rolled back: doctor with 99.0.2: FAIL release: this test release is broken")
    assert rows["node-b"] == ["-", "-", "skipped (an earlier node failed)"]
    assert "fleet: 0 of 2 nodes on 99.0.2" in bad.stdout
    assert current(roots["node-a"]) == "releases/99.0.1"
    assert not (roots["node-a"] / "opt" / "silbato" / "releases" / "99.0.2").exists()
    assert snapshot(roots["node-b"]) == untouched, "the second node is never touched"
    assert "[node-b]" not in bad.stdout
    print(f"rollback:\n{bad.stdout}")


def test_status_shows_each_node_s_version_health_and_alerts(fleet):
    from node.protocol.alerts import Alert, Kind, State
    from node.protocol.keys import Roster

    config, roots, organizer = fleet
    store = Store(roots["node-b"] / "var" / "lib" / "silbato" / "db" / "silbato.db")
    store.sync_peers(Roster.load(roots["node-b"] / "roster.json", organizer.public))  # as the daemon does
    store.save_alert(Alert("1-3", Kind.RAID, 101, 1, State.CONFIRMED, 2, 100.0, 120.0, 100.0))
    store.close()
    result = fleet_cli(config, "status", "node-a", "node-b", "node-down")
    assert result.returncode == 1, "one host cannot be reached"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["HOST", "VERSION", "HEALTH", "ALERTS"]
    # nothing runs in these directory nodes: health says so (it said "ok", issue 13)
    assert lines[1].split() == ["node-a", "99.0.0", "down", "none"]
    assert lines[2].split() == ["node-b", "99.0.0", "down", "1", "active"]
    assert lines[3].split()[:3] == ["node-down", "-", "unreachable"] and "ssh:" in lines[3]
    assert "node-b: 1-3 raid confirmed at Building 1" in result.stdout


def test_roster_goes_to_every_node_canary_first(fleet, tmp_path):
    from node.protocol.keys import sign_roster

    config, roots, organizer = fleet
    document = json.loads((roots["node-a"] / "roster.json").read_text())
    body = dict(document["roster"], version=2)
    newer = tmp_path / "roster-v2.json"
    newer.write_text(json.dumps(sign_roster(body, organizer)))
    result = fleet_cli(config, "roster", newer, "node-a", "node-b")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "node-a  v2      installed: installed roster v2 of block 'elm-st' (2 nodes)" in result.stdout
    for root in roots.values():
        assert json.loads((root / "var" / "lib" / "silbato" / "roster.json").read_text())["roster"]["version"] == 2

    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(sign_roster(dict(body, version=3), SigningKey.generate())))
    result = fleet_cli(config, "roster", forged, "node-a", "node-b")
    assert result.returncode == 1
    assert "bad signature" in result.stdout and "skipped" in result.stdout


def test_a_host_name_cannot_smuggle_an_ssh_option(tmp_path):
    (tmp_path / "cfg").write_text("")
    result = fleet_cli(tmp_path / "cfg", "status", "--", f"-oProxyCommand=touch {tmp_path / 'pwned'}")
    assert result.returncode == 1 and "not a host name" in result.stdout + result.stderr
    assert not (tmp_path / "pwned").exists()
