"""Check an incident bundle with no secret: frames against the roster, the manifest chain, every file's hash.

``verify(path)`` returns the findings, each naming one file or entry and what happened to
it: ``edited``, ``removed``, ``reordered``, ``truncated`` or ``added``. An item that a later signed
``pulled`` entry says an organizer pulled off the node may be absent (it is in their copy). No finding: the signed
parts are exactly as the node signed them. ``incident.json``, ``notes.json`` and ``cap/`` are
not signed (the page writes them); ``SHA256SUMS`` proves nothing (anyone who edits a file
can recompute it). Both are said in ``notes``.

Trust: the roster must be signed by the organizers' key. Pass your own copy (``organizer``);
without it the key inside the bundle is used, which proves only that the bundle agrees with
itself, and ``notes`` says so.
"""

from __future__ import annotations

import base64
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from node.errors import EvidenceError, FrameError, RosterError
from node.evidence import manifest, seal
from node.protocol import wire
from node.protocol.keys import Roster

log = logging.getLogger(__name__)

# What reading one member of a zip edited in place raises: a flipped byte in a stored member
# fails its CRC-32 (BadZipFile), in a deflated one it breaks the stream (zlib.error), a
# member cut short ends early (EOFError); RuntimeError and NotImplementedError: a member
# made encrypted or given an unknown compression method.
UNREADABLE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, RuntimeError, NotImplementedError)

KINDS = ("edited", "removed", "reordered", "truncated", "added")


@dataclass(frozen=True)
class Finding:
    path: str     # the file (or ``file: entry N``) inside the bundle's folder
    kind: str     # one of KINDS
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}: {self.detail}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    frames: int = 0
    entries: int = 0
    items: int = 0
    chain: list[dict] = field(default_factory=list)  # the signed entries, in order (trust them only if ``ok``)
    pulled: set[str] = field(default_factory=set)    # items a signed entry says were pulled off the node

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, path: str, kind: str, detail: str) -> None:
        self.findings.append(Finding(path, kind, detail))


def verify(bundle: Path, organizer: Ed25519PublicKey | None = None) -> Report:
    """Check the bundle at ``bundle`` (a zip); ``EvidenceError`` if it is not a bundle at all."""
    try:
        zf = zipfile.ZipFile(bundle)
    except (OSError, zipfile.BadZipFile) as exc:
        raise EvidenceError(f"{bundle}: not a readable zip: {exc}") from None
    with zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        folders = {n.split("/", 1)[0] for n in names}
        if len(folders) != 1 or not next(iter(folders)).startswith("incident-"):
            raise EvidenceError(f"{bundle}: not an incident bundle (expected one folder incident-<id>/)")
        folder = next(iter(folders))
        files = {n.split("/", 1)[1]: n for n in names if "/" in n}
        return _Check(zf, files, folder[len("incident-"):], organizer).run()


class _Check:
    def __init__(self, zf: zipfile.ZipFile, files: dict[str, str], incident: str, organizer):
        self.zf, self.files, self.incident, self.organizer = zf, files, incident, organizer
        self.report = Report()
        self.unreadable: set[str] = set()  # members named ``edited`` already: not also ``removed``

    def read(self, name: str) -> bytes | None:
        """The member ``name``'s bytes; ``None`` if it is absent, or unreadable (then named ``edited``)."""
        if name not in self.files:
            return None
        try:
            return self.zf.read(self.files[name])
        except UNREADABLE as exc:
            log.warning("%s: cannot be read from the bundle: %s", name, exc)
            self.unreadable.add(name)
            self.report.add(name, "edited", f"its bytes are not the ones the zip recorded ({exc})")
            return None

    def missing(self, name: str) -> bool:
        """``name`` is not in the bundle (an unreadable one is there, and named ``edited`` already)."""
        return name not in self.unreadable

    def run(self) -> Report:
        roster = self.roster()
        if roster is None:
            return self.report
        head = self.head(roster)
        self.frames(roster, head)
        self.chain(roster, head)
        self.report.notes.append("not signed, so not checked: incident.json, notes.json, cap/ (the page writes them) "
                                 "and SHA256SUMS (anyone who edits a file can recompute it)")
        return self.report

    # -- the roster and the head ------------------------------------------------------------

    def roster(self) -> Roster | None:
        body = self.read("roster.json")
        if body is None:
            if self.missing("roster.json"):
                self.report.add("roster.json", "removed", "without the roster no signature can be checked")
            return None
        organizer = self.organizer
        if organizer is None:
            key = self.read("organizer.pub")
            try:
                raw = base64.b64decode((key or b"").strip(), validate=True)
                organizer = Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                if self.missing("organizer.pub"):
                    self.report.add("organizer.pub", "removed" if key is None else "edited",
                                    "no organizers' key to check the roster with (pass --organizer)")
                return None
            self.report.notes.append("the roster was checked against the organizers' key inside the bundle: pass "
                                     "--organizer with your own copy to prove it is theirs")
        try:
            roster = Roster.parse(json.loads(body), organizer)
        except (ValueError, RosterError) as exc:
            self.report.add("roster.json", "edited", f"not the organizers' signed roster ({exc})")
            return None
        return roster

    def head(self, roster: Roster) -> dict | None:
        body = self.read("evidence/head.json")
        if body is None:
            if self.missing("evidence/head.json"):
                self.report.add("evidence/head.json", "removed",
                                "nothing signed says which frames and how many items the incident had")
            return None
        try:
            doc = json.loads(body)
            head, signature = doc["head"], doc["signature"]
            signer = roster.member(int(head["signer"]))
        except (ValueError, KeyError, TypeError):
            self.report.add("evidence/head.json", "edited", "not a signed head")
            return None
        if signer is None or not manifest.signed_by(manifest.HEAD_DOMAIN, head, signature, signer):
            self.report.add("evidence/head.json", "edited", "its signature does not verify against the roster")
            return None
        if head.get("incident") != self.incident or head.get("block") != roster.block:
            self.report.add("evidence/head.json", "edited", "it is the head of another incident or block")
            return None
        return head

    # -- frames -----------------------------------------------------------------------------

    def frames(self, roster: Roster, head: dict | None) -> None:
        names = sorted(n for n in self.files if n.startswith("frames/"))
        found: list[tuple[str, str, bool]] = []  # (file, sha256, signature ok)
        for name in names:
            data = self.read(name)
            if data is None:  # unreadable: named edited
                found.append((name, "", False))
                continue
            try:
                frame = wire.decode(data, roster)
                ok = isinstance(frame, wire.TransitionFrame)
                if not ok:
                    self.report.add(name, "edited", "not a transition frame")
            except FrameError as exc:
                ok = False
                self.report.add(name, "edited", f"its signature or contents do not verify ({exc})")
            found.append((name, manifest.sha256(data), ok))
        self.report.frames = len(found)
        if head is None:
            return
        expected = list(head.get("frames", []))
        got = [digest for _, digest, _ in found]
        if got == expected:
            return
        if sorted(got) == sorted(expected):
            self.report.add("frames/", "reordered", "the frames are not in the order the node took them")
            return
        broken = {i for i, (_, digest, ok) in enumerate(found) if not ok and digest not in expected}
        for i, digest in enumerate(expected):
            if digest not in got and i not in broken:  # a broken file in its place is named edited already
                self.report.add(f"frames/{i + 1:02d}.frame", "removed", "a frame the signed head names is missing")
        for name, digest, ok in found:
            if digest not in expected and ok:
                self.report.add(name, "added", "a validly signed frame that the signed head does not name")

    # -- the manifest chain and the items ----------------------------------------------------

    def chain(self, roster: Roster, head: dict | None) -> None:
        body = self.read("evidence/manifest.jsonl")
        if body is None and not self.missing("evidence/manifest.jsonl"):
            return  # unreadable, named edited: no entry can be trusted, nor any item checked against one
        lines = body.decode("utf-8", "replace").splitlines() if body else []
        entries: list[dict] = []
        for i, line in enumerate(lines):
            where = f"evidence/manifest.jsonl: line {i + 1}"
            try:
                doc = json.loads(line)
                entry, digest, signature = doc["entry"], doc["hash"], doc["signature"]
                signer = roster.member(int(entry["signer"]))
            except (ValueError, KeyError, TypeError):
                self.report.add(where, "edited", "not a signed manifest entry")
                continue
            if manifest.sha256(manifest.canonical(entry)) != digest:
                self.report.add(where, "edited", f"entry {entry.get('seq')} does not hash to its recorded hash")
                continue
            if signer is None or not manifest.signed_by(manifest.ENTRY_DOMAIN, entry, signature, signer):
                self.report.add(where, "edited", f"entry {entry.get('seq')}: its signature does not verify")
                continue
            if entry.get("incident") != self.incident or entry.get("block") != roster.block:
                self.report.add(where, "added", "an entry of another incident or block")
                continue
            entries.append({**entry, "_hash": digest, "_line": i + 1})
        self.report.entries = len(entries)
        seqs = [e["seq"] for e in entries]
        if seqs != sorted(seqs):
            self.report.add("evidence/manifest.jsonl", "reordered", "the entries are not in the order they were signed")
            entries.sort(key=lambda e: e["seq"])
        prev = manifest.genesis(roster.block, self.incident)
        expected_seq = 0
        for e in entries:
            if e["seq"] > expected_seq:
                self.report.add("evidence/manifest.jsonl", "removed",
                                f"entries {expected_seq} to {e['seq'] - 1} are missing before line {e['_line']}")
            elif e["seq"] < expected_seq:
                self.report.add(f"evidence/manifest.jsonl: line {e['_line']}", "added", f"a second entry {e['seq']}")
                continue
            elif e["prev"] != prev:
                self.report.add(f"evidence/manifest.jsonl: line {e['_line']}", "edited",
                                f"entry {e['seq']} does not chain to the entry before it")
            prev, expected_seq = e["_hash"], e["seq"] + 1
        if head is not None:
            if expected_seq < head.get("entries", 0):
                self.report.add("evidence/manifest.jsonl", "truncated",
                                f"the signed head names {head['entries']} entries; the chain ends after {expected_seq}")
            elif expected_seq > head.get("entries", 0):
                self.report.add("evidence/manifest.jsonl", "added",
                                f"{expected_seq - head['entries']} entries past the signed head")
            elif entries and head.get("tip") != prev:
                self.report.add("evidence/manifest.jsonl", "edited", "the chain's last entry is not the signed head's tip")
        self.report.chain = [{k: v for k, v in e.items() if not k.startswith("_")} for e in entries]
        self.items(entries)

    def items(self, entries: list[dict]) -> None:
        named = set()
        seen: set[str] = set()
        for e in entries:
            if manifest.kind(e) == "pulled":
                if e.get("item") not in seen:
                    self.report.add(f"evidence/manifest.jsonl: line {e['_line']}", "added",
                                    f"entry {e['seq']} says an item was pulled that no earlier entry names")
                self.report.pulled.add(e.get("item"))
            else:
                seen.add(e.get("item"))
        for e in entries:
            if manifest.kind(e) != "item":
                continue
            if e["item"] in self.report.pulled and not any(
                    f"evidence/items/{e['item']}{suffix}" in self.files for suffix in (seal.SUFFIX, seal.META_SUFFIX)):
                continue  # pulled off the node by an organizer, as a signed entry says: not in later bundles
            for suffix, digest in ((seal.SUFFIX, e["sealed_sha256"]), (seal.META_SUFFIX, e["meta_sha256"])):
                name = f"evidence/items/{e['item']}{suffix}"
                named.add(name)
                data = self.read(name)
                if data is None:
                    if self.missing(name):
                        self.report.add(name, "removed", f"manifest entry {e['seq']} names it")
                elif manifest.sha256(data) != digest:
                    kind = "truncated" if suffix == seal.SUFFIX and len(data) < e["sealed_size"] else "edited"
                    self.report.add(name, kind, f"its SHA-256 is not the one in manifest entry {e['seq']}")
                else:
                    self.report.items += 1
        for name in sorted(self.files):
            if name.startswith("evidence/items/") and name not in named:
                self.report.add(name, "added", "no manifest entry names it")
        for name in sorted(self.files):
            if name.startswith("evidence/") and name not in named and name not in (
                    "evidence/head.json", "evidence/manifest.jsonl") and not name.startswith("evidence/items/"):
                self.report.add(name, "added", "not part of a bundle")
