"""Proving: the bundle carries the signed frames, the evidence chain and the sealed items; ``silbato verify``
names every kind of change, and the node keeps no plaintext of what a neighbor sent."""

from __future__ import annotations

import io
import json
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path

import pyrage
import pytest
from click.testing import CliRunner

from node.cli import cli
from node.evidence import manifest
from node.evidence.verify import verify
from node.protocol.alerts import Kind, State
from web import export
from websupport import add_captain, app_for, everywhere, login, make_block, settle, until

MARKER = b"CANARY-what-the-agents-did-9c1d-"


@pytest.fixture(scope="module")
def identity():
    return pyrage.x25519.Identity.generate()


def upload(client, alert_id, files=(), statement=""):
    html = client.get(f"/alerts/{alert_id}").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', html)[1]
    form = {"csrf_token": token, "statement": statement,
            "file": [(io.BytesIO(body), name, kind) for body, name, kind in files]
            or [(io.BytesIO(b""), "", "application/octet-stream")]}
    response = client.post(f"/alerts/{alert_id}/evidence", data=form, content_type="multipart/form-data")
    assert response.status_code == 303, response.get_data(as_text=True)


@pytest.fixture(scope="module")
def block(tmp_path_factory, identity):
    b = make_block(tmp_path_factory.mktemp("proving"))
    add_captain(b, 2, "ana")
    raid = b.nodes[1].report()
    until(b, lambda: everywhere(b, raid.id, State.REPORTED))
    b.nodes[3].act("confirm", raid.id)
    until(b, lambda: everywhere(b, raid.id, State.CONFIRMED))
    other = b.nodes[3].report(Kind.TEST)
    until(b, lambda: everywhere(b, other.id, State.REPORTED))
    b.app = app_for(b, 2, EVIDENCE_RECIPIENTS=str(identity.to_public()))
    client = b.app.test_client()
    upload(client, raid.id, files=[(MARKER * 40_000, "VID_1.mp4", "video/mp4")])
    upload(client, raid.id, files=[(b"\xff\xd8" + MARKER * 300, "IMG_2.jpg", "image/jpeg")],
           statement=(MARKER * 10).decode())
    settle(b, 3)
    b.raid, b.other = raid.id, other.id
    yield b
    b.stop()


@pytest.fixture(scope="module")
def original(block, tmp_path_factory):
    s = block.nodes[2].store
    assert [r["status"] for r in s.db.query("SELECT status FROM evidence")] == ["chained"] * 3
    name, body = export.bundle(s, block.raid, evidence_dir=block.files.configs[1].evidence_dir)
    path = tmp_path_factory.mktemp("bundle") / name
    path.write_bytes(body)
    return path


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n.split("/", 1)[1]: zf.read(n) for n in zf.namelist()}


def rewrite(original, tmp_path, change) -> "Path":
    files = members(original)
    change(files)
    folder = original.stem
    out = tmp_path / original.name
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in files.items():
            zf.writestr(f"{folder}/{name}", body)
    return out


def items(files, suffix=".age"):
    return sorted(n for n in files if n.startswith("evidence/items/") and n.endswith(suffix)
                  and not n.endswith(".meta.age"))


def test_the_bundle_holds_frames_roster_chain_and_sealed_items(original, identity):
    files = members(original)
    assert sorted(n for n in files if n.startswith("frames/")) == ["frames/01.frame", "frames/02.frame"]
    assert "roster.json" in files and "organizer.pub" in files and "evidence/head.json" in files
    assert len(files["evidence/manifest.jsonl"].splitlines()) == 3 and len(items(files)) == 3
    opened = [pyrage.decrypt(files[n], [identity]) for n in items(files)]
    assert MARKER * 40_000 in opened and (MARKER * 10) in opened
    report = verify(original)
    assert report.ok, report.findings
    assert (report.frames, report.entries, report.items) == (2, 3, 6)


def _edit_item(files):
    name = items(files)[0]
    body = bytearray(files[name])
    body[-20] ^= 1
    files[name] = bytes(body)


def _swap_lines(files):
    lines = files["evidence/manifest.jsonl"].splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    files["evidence/manifest.jsonl"] = b"".join(lines)


def _drop_line(i):
    def change(files):
        lines = files["evidence/manifest.jsonl"].splitlines(keepends=True)
        del lines[i]
        files["evidence/manifest.jsonl"] = b"".join(lines)
    return change


def _edit_entry_and_rehash(files):
    lines = files["evidence/manifest.jsonl"].splitlines(keepends=True)
    doc = json.loads(lines[1])
    doc["entry"]["received_at"] += 3600  # "it came an hour later"
    doc["hash"] = manifest.sha256(manifest.canonical(doc["entry"]))
    lines[1] = (json.dumps(doc) + "\n").encode()
    files["evidence/manifest.jsonl"] = b"".join(lines)


def _flip_frame(files):
    body = bytearray(files["frames/02.frame"])
    body[12] ^= 1
    files["frames/02.frame"] = bytes(body)


def _swap_frames(files):
    files["frames/01.frame"], files["frames/02.frame"] = files["frames/02.frame"], files["frames/01.frame"]


def _edit_roster(files):
    doc = json.loads(files["roster.json"])
    doc["roster"]["nodes"][0]["place"] = "Somewhere else"
    files["roster.json"] = json.dumps(doc).encode()


def _edit_head(files):
    doc = json.loads(files["evidence/head.json"])
    doc["head"]["entries"] = 2
    files["evidence/head.json"] = json.dumps(doc).encode()


TAMPERING = {
    "a sealed item edited": (_edit_item, "evidence/items/", "edited"),
    "a sealed item removed": (lambda f: f.pop(items(f)[0]), "evidence/items/", "removed"),
    "a sealed item truncated": (lambda f: f.update({items(f)[0]: f[items(f)[0]][:-100]}), "evidence/items/",
                                "truncated"),
    "a file added to the items": (lambda f: f.update({"evidence/items/" + "0" * 32 + ".age": b"age"}),
                                  "evidence/items/", "added"),
    "manifest entries reordered": (_swap_lines, "evidence/manifest.jsonl", "reordered"),
    "the last manifest entry removed": (_drop_line(2), "evidence/manifest.jsonl", "truncated"),
    "a middle manifest entry removed": (_drop_line(1), "evidence/manifest.jsonl", "removed"),
    "a manifest entry edited and rehashed": (_edit_entry_and_rehash, "evidence/manifest.jsonl", "edited"),
    "a frame edited": (_flip_frame, "frames/02.frame", "edited"),
    "a frame removed": (lambda f: f.pop("frames/01.frame"), "frames/01.frame", "removed"),
    "frames reordered": (_swap_frames, "frames/", "reordered"),
    "the roster edited": (_edit_roster, "roster.json", "edited"),
    "the signed head removed": (lambda f: f.pop("evidence/head.json"), "evidence/head.json", "removed"),
    "the signed head edited": (_edit_head, "evidence/head.json", "edited"),
}


def in_place(original, tmp_path, member, change) -> Path:
    """The bundle with ``member``'s bytes changed inside the zip itself (its CRC, sizes and index left as they were)."""
    raw = bytearray(original.read_bytes())
    with zipfile.ZipFile(original) as zf:
        info = zf.getinfo(f"{original.stem}/{member(zf) if callable(member) else member}")
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len
    change(raw, start, info.compress_size)
    out = tmp_path / original.name
    out.write_bytes(bytes(raw))
    return out


def _flip(raw, start, size):
    raw[start + size // 2] ^= 1


def _garble(raw, start, size):  # a deflated stream of 0xff is an invalid block: zlib.error, not a CRC
    raw[start:start + size] = b"\xff" * size


def _first_item(zf):
    return items({n.split("/", 1)[1] for n in zf.namelist()})[0]


IN_PLACE = {  # (member, change, what zipfile raises reading it)
    "a stored sealed item with one byte flipped": (_first_item, _flip, zipfile.BadZipFile),
    "the deflated roster with one byte flipped": ("roster.json", _flip, (zipfile.BadZipFile, zlib.error)),
    "the deflated roster's stream broken": ("roster.json", _garble, zlib.error),
    "a deflated frame's stream broken": ("frames/02.frame", _garble, zlib.error),
    "the deflated manifest's stream broken": ("evidence/manifest.jsonl", _garble, zlib.error),
}


@pytest.mark.parametrize("case", list(IN_PLACE))
def test_a_member_edited_inside_the_zip_is_named_edited(case, original, tmp_path):
    member, change, raises = IN_PLACE[case]
    bundle = in_place(original, tmp_path, member, change)
    with zipfile.ZipFile(bundle) as zf:
        name = member(zf) if callable(member) else member
        with pytest.raises(raises):  # the zip itself refuses to read it
            zf.read(f"{original.stem}/{name}")
    report = verify(bundle)
    assert not report.ok
    assert (name, "edited") in [(f.path, f.kind) for f in report.findings], report.findings
    assert not any(f.path == name and f.kind == "removed" for f in report.findings)


def test_silbato_verify_names_a_member_edited_inside_the_zip_without_a_traceback(original, tmp_path):
    result = CliRunner().invoke(cli, ["verify", str(in_place(original, tmp_path, "roster.json", _flip))])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "FAIL roster.json: edited:" in result.output and "Traceback" not in result.output


def test_silbato_verify_of_a_file_that_is_not_a_zip_says_so_in_one_line(tmp_path):
    path = tmp_path / "bundle.zip"
    path.write_bytes(b"this is not a zip at all\n" * 10)
    result = CliRunner().invoke(cli, ["verify", str(path)])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [f"Error: {path}: not a readable zip: File is not a zip file"]


@pytest.mark.parametrize("case", list(TAMPERING))
def test_each_kind_of_tampering_is_named(case, original, tmp_path):
    change, path, kind = TAMPERING[case]
    report = verify(rewrite(original, tmp_path, change))
    assert not report.ok
    assert any(f.path.startswith(path) and f.kind == kind for f in report.findings), report.findings


def test_a_validly_signed_frame_of_another_incident_is_named_added(block, original, tmp_path):
    stray = block.nodes[2].store.transition_frames(block.other)[0]
    report = verify(rewrite(original, tmp_path, lambda f: f.update({"frames/03.frame": stray})))
    assert [(f.path, f.kind) for f in report.findings] == [("frames/03.frame", "added")]


def test_silbato_verify_exits_non_zero_and_names_the_change(original, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(original)])
    assert ok.exit_code == 0 and "OK: 2 signed frames, 3 manifest entries, 6 sealed files" in ok.output
    bad = runner.invoke(cli, ["verify", str(rewrite(original, tmp_path, _edit_item))])
    assert bad.exit_code == 1 and "FAIL evidence/items/" in bad.output and ": edited:" in bad.output


def test_a_pinned_organizer_key_other_than_theirs_fails(original, tmp_path):
    from node.protocol.keys import SigningKey, b64
    other = tmp_path / "other.pub"
    other.write_text(b64(SigningKey.generate().public_raw) + "\n")
    result = CliRunner().invoke(cli, ["verify", "--organizer", str(other), str(original)])
    assert result.exit_code == 1 and "roster.json: edited" in result.output


def test_captains_download_the_same_bundle_from_the_page(block, original):
    client = block.app.test_client()
    assert login(client, "ana").status_code == 303
    response = client.get(f"/api/alerts/{block.raid}/export")
    assert response.status_code == 200
    assert members(io.BytesIO(response.get_data())) == members(original)


def test_the_canary_is_nowhere_under_the_state_directories(block):
    """What a neighbor sent never touches the node's disk in the clear: not the database, its -wal or -shm,
    nor the evidence folder (the marker was sent as a video, a photo and a statement)."""
    root = Path(os.path.commonpath([c.state_dir for c in block.files.configs]))
    scanned = 0
    for path in root.rglob("*"):
        if path.is_file():
            scanned += 1
            assert MARKER not in path.read_bytes(), f"{path} holds the plaintext"
            assert MARKER[:16] not in path.read_bytes(), f"{path} holds part of the plaintext"
    assert scanned > 10
    assert list(root.rglob("*-wal")) and list(root.rglob("evidence/*.age"))  # among those scanned
