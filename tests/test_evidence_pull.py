"""``silbato evidence pull`` against a real sshd on loopback and a node that is a directory on this machine.

The node holds an incident with sealed items, chained and signed by the daemon's own
``EvidenceDesk``; the pull copies its bundle here, verifies it here, and only then has the
node release (delete) exactly the items it verified. A copy cut half way, or one that does
not verify, releases nothing; pulling twice is harmless.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pyrage
import pytest

from appliance import add_roster, clean_env, silbato
from node import config as config_mod
from node.appliance.fleet import Ssh
from node.daemon.evidence import EvidenceDesk
from node.evidence import manifest, pull, seal
from node.evidence.verify import verify
from node.protocol.alerts import Alert, Kind, State
from node.protocol.keys import Roster, SigningKey
from node.store import Store
from test_fleet import sshd  # noqa: F401  (the real sshd fixture)

NOW = 1_800_000_000.0


class Node:
    """node-a: a directory node with the block's roster, an incident and what the daemon would do."""

    def __init__(self, root: Path, organizer: SigningKey, recipient):
        self.root, self.organizer, self.recipient = root, organizer, recipient
        self.config = config_mod.load(root / "etc" / "silbato" / "silbato.toml")
        self.folder = self.config.evidence_dir
        self.folder.mkdir(parents=True, exist_ok=True)
        self.store = Store(self.config.db_file)
        document = json.loads((root / "roster.json").read_text())
        self.store.sync_peers(Roster.load(root / "roster.json", organizer.public))
        self.store.set_meta("roster", json.dumps(document, sort_keys=True))  # as the daemon does at start
        self.store.set_meta("organizer_key", organizer.public_b64)
        self.store.save_alert(Alert("1-3", Kind.RAID, 101, 1, State.CONFIRMED, 2, NOW, NOW + 20, NOW))
        key = SigningKey.load(self.config.state_dir / "node.key")
        self.desk = EvidenceDesk(1, document["roster"]["block"], self.store, key, self.folder, keep=30 * 86400,
                                 max_item=10**8)

    def send(self, body: bytes) -> str:
        """What the page does with a neighbor's file, then the daemon's tick."""
        item = seal.seal(io.BytesIO(body), self.folder, [self.recipient], max_item=10**8, max_total=10**10)
        meta = seal.seal_bytes(json.dumps({"kind": "file", "content_type": "video/mp4"}).encode(), self.folder,
                               [self.recipient], item_id=item.item_id, suffix=seal.META_SUFFIX, max_total=10**10)
        self.store.add_evidence(item.item_id, "1-3", NOW + 30, size=item.size, sha256=item.sha256,
                                sealed_size=item.sealed_size, sealed_sha256=item.sealed_sha256,
                                meta_sha256=meta.sealed_sha256)
        self.tick()
        return item.item_id

    def tick(self) -> None:
        self.desk.tick(NOW + 60)

    def files(self) -> set[str]:
        return {p.name for p in self.folder.iterdir()}

    def statuses(self) -> dict[str, str]:
        return {r["item_id"]: r["status"] for r in self.store.db.query("SELECT item_id, status FROM evidence")}


@pytest.fixture
def node(sshd, tmp_path, release_wheels):  # noqa: F811
    root = tmp_path / "node-a"
    silbato("install", "--root", root, "--from", release_wheels["base"])
    (tmp_path / "ssh_config").write_text(f"""\
Host node-a
  HostName 127.0.0.1
  Port {sshd.port}
  User {sshd.user}
  IdentityFile {sshd.dir / 'id'}
  IdentitiesOnly yes
  UserKnownHostsFile {sshd.dir / 'known_hosts'}
  StrictHostKeyChecking yes
  SetEnv SILBATO_ROOT={root}
""")
    organizer = SigningKey.generate()
    add_roster({1: root}, organizer)
    identity = pyrage.x25519.Identity.generate()
    n = Node(root, organizer, identity.to_public())
    n.identity, n.ssh_config = identity, tmp_path / "ssh_config"
    yield n
    n.store.close()


def pull_cli(node: Node, to: Path) -> subprocess.CompletedProcess:
    return silbato("evidence", "pull", "node-a", "--to", to, "--ssh-config", node.ssh_config, check=False,
                   env=clean_env(), timeout=600)


def test_pull_copies_verifies_here_then_the_node_deletes_exactly_those_items(node, tmp_path):
    bodies = [os.urandom(1_500_000), os.urandom(300_000)]
    items = [node.send(b) for b in bodies]
    result = pull_cli(node, tmp_path / "laptop")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[node-a] incident 1-3: 2 item(s) verified here, 2 released on the node" in result.stdout
    copy = tmp_path / "laptop" / "node-a" / "incident-1-3.zip"
    assert verify(copy).ok
    with zipfile.ZipFile(copy) as zf:
        opened = [pyrage.decrypt(zf.read(f"incident-1-3/evidence/items/{i}.age"), [node.identity]) for i in items]
    assert opened == bodies
    assert node.files() == set(), "the node deleted both items and their sealed metadata"
    assert node.statuses() == {i: "released" for i in items}

    node.tick()  # the daemon signs what the release did
    assert node.statuses() == {i: "pulled" for i in items}
    entries = [json.loads(r["entry"]) for r in node.store.manifest("1-3")]
    assert [manifest.kind(e) for e in entries] == ["item", "item", "pulled", "pulled"]
    assert [e["item"] for e in entries[2:]] == items

    again = pull_cli(node, tmp_path / "laptop")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "nothing held on those nodes" in again.stdout
    assert verify(copy).ok and sorted(p.name for p in copy.parent.iterdir()) == ["incident-1-3.zip"]

    later = node.send(b"a third video" * 1000)
    third = pull_cli(node, tmp_path / "laptop")
    assert third.returncode == 0, third.stdout + third.stderr
    second_copy = copy.with_name("incident-1-3-2.zip")
    report = verify(second_copy)
    assert report.ok, report.findings
    assert report.pulled == set(items), "the node's later bundle shows the first two pulled, not removed"
    with zipfile.ZipFile(second_copy) as zf:
        assert sorted(n.rsplit("/", 1)[1] for n in zf.namelist() if "/items/" in n) == [
            f"{later}.age", f"{later}.meta.age"]
    assert verify(copy).ok, "an earlier pull is never overwritten"


class DroppedSsh(Ssh):
    """The organizer's Wi-Fi drops after the first MiB of the copy: a real ssh, cut half way."""

    @staticmethod
    def _write(fh, chunk: bytes) -> None:
        fh.write(chunk)
        raise ConnectionResetError("the connection dropped")


def test_a_copy_cut_half_way_or_one_that_does_not_verify_releases_nothing(node, tmp_path):
    items = [node.send(os.urandom(1_500_000)), node.send(os.urandom(2000))]
    before = node.files()
    laptop = tmp_path / "laptop"
    cut = pull.pull(["node-a"], laptop, ssh=DroppedSsh(node.ssh_config, say=lambda _: None))
    assert len(cut) == 1 and not cut[0].ok and "the copy stopped" in cut[0].problems[0]
    assert cut[0].released == 0 and list((laptop / "node-a").iterdir()) == [], "no partial copy is left"
    assert node.files() == before and set(node.statuses().values()) == {"chained"}

    sealed = node.folder / f"{items[1]}.age"  # the node's copy is damaged after it was signed
    body = bytearray(sealed.read_bytes())
    body[-5] ^= 1
    sealed.write_bytes(bytes(body))
    result = pull_cli(node, laptop)
    assert result.returncode == 1
    assert "does not verify here: nothing released" in result.stdout
    assert f"evidence/items/{items[1]}.age: edited" in result.stdout
    assert (laptop / "node-a" / "incident-1-3.unverified.zip").is_file()
    assert node.files() == before and set(node.statuses().values()) == {"chained"}


def test_release_deletes_only_items_whose_sealed_files_are_the_ones_signed(node):
    good, changed = node.send(b"good" * 1000), node.send(b"changed" * 1000)
    (node.folder / f"{changed}.age").write_bytes(b"something else")
    outcome = pull.release(node.store, node.folder, "1-3", [good, changed, "0" * 32, "../../etc"], NOW + 90)
    assert outcome[good] == "released"
    assert outcome[changed].startswith("kept:") and "not the file its signed entry names" in outcome[changed]
    assert outcome["0" * 32] == outcome["../../etc"] == "kept: not an item of this incident"
    assert node.files() == {f"{changed}.age", f"{changed}.meta.age"}
    assert pull.release(node.store, node.folder, "1-3", [good], NOW + 91) == {good: "already released"}
    assert re.fullmatch(r"pulled at \d+", node.store.db.execute(
        "SELECT reason FROM evidence WHERE item_id = ?", [good]).fetchone()[0])
