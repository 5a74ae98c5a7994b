"""``silbato evidence open``: an organizer opens a bundle on a laptop, after it verifies, without the
witness's location; a tampered bundle is refused before anything is decrypted; ``age -d`` opens items too."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from node.cli import cli
from node.evidence import unseal
from node.protocol.alerts import State
from web import export
from websupport import app_for, everywhere, make_block, settle, until

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(EXIFTOOL is None, reason="install libimage-exiftool-perl (.ci/apt-packages)")

# the smallest baseline JPEG (1x1 grey), before exiftool adds where it was taken
TINY_JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQEASABIAAD/2wBDAP//////////////////////////////////////////////////////////////////"
    "////////////////////wgALCAABAAEBAREA/8QAFBABAAAAAAAAAAAAAAAAAAAAAP/aAAgBAQABPxA=")
STATEMENT = "Two agents in plain clothes took the man from 4B into a grey van at 06:10."


def _box(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", 8 + len(body)) + kind + body


def tiny_mp4() -> bytes:
    """An MP4 with a movie header and no media: enough for a phone's location tag to sit in."""
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(b"mvhd", bytes(4) + struct.pack(">IIII", 0, 0, 1000, 0) + struct.pack(">IH", 0x10000, 0x100)
                + bytes(10) + matrix + bytes(24) + struct.pack(">I", 2))
    return _box(b"ftyp", b"isom" + struct.pack(">I", 512) + b"isomiso2mp41") + _box(b"moov", mvhd)


def locations(path: Path) -> dict:
    """The location tags exiftool finds in ``path`` (GPS*, Location*), by group:name."""
    out = subprocess.run([EXIFTOOL, "-j", "-a", "-G1", "-gps*", "-location*", str(path)],
                         capture_output=True, text=True, check=True)
    return {k: v for k, v in json.loads(out.stdout)[0].items() if k != "SourceFile"}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, bytes]:
    """A photo and a video as a phone writes them: each with where it was taken."""
    d = tmp_path_factory.mktemp("phone")
    (d / "IMG_1.jpg").write_bytes(TINY_JPEG)
    (d / "VID_2.mp4").write_bytes(tiny_mp4())
    subprocess.run([EXIFTOOL, "-q", "-overwrite_original", "-GPSLatitude=40.7128", "-GPSLatitudeRef=N",
                    "-GPSLongitude=74.006", "-GPSLongitudeRef=W", str(d / "IMG_1.jpg")], check=True)
    subprocess.run([EXIFTOOL, "-q", "-m", "-overwrite_original", "-Keys:GPSCoordinates=40.7128, -74.006, 10",
                    "-UserData:GPSCoordinates=40.7128, -74.006", str(d / "VID_2.mp4")], check=True)
    found = {name: (d / name).read_bytes() for name in ("IMG_1.jpg", "VID_2.mp4")}
    assert locations(d / "IMG_1.jpg") and locations(d / "VID_2.mp4"), "the test media must carry a location"
    return found


@pytest.fixture(scope="module")
def identity_file(tmp_path_factory) -> Path:
    """The organizers' identity, written by the stock age-keygen."""
    path = tmp_path_factory.mktemp("organizers") / "organizers-key.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    return path


def recipient(identity_file: Path) -> str:
    return re.search(r"public key: (age1\w+)", identity_file.read_text())[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, media, identity_file) -> Path:
    b = make_block(tmp_path_factory.mktemp("opening"))
    try:
        raid = b.nodes[1].report()
        until(b, lambda: everywhere(b, raid.id, State.REPORTED))
        client = app_for(b, 2, EVIDENCE_RECIPIENTS=recipient(identity_file)).test_client()
        html = client.get(f"/alerts/{raid.id}").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', html)[1]
        form = {"csrf_token": token, "statement": STATEMENT,
                "file": [(io.BytesIO(media["IMG_1.jpg"]), "IMG_1.jpg", "image/jpeg"),
                         (io.BytesIO(media["VID_2.mp4"]), "VID_2.mp4", "video/mp4")]}
        response = client.post(f"/alerts/{raid.id}/evidence", data=form, content_type="multipart/form-data")
        assert response.status_code == 303, response.get_data(as_text=True)
        store = b.nodes[2].store
        until(b, lambda: [r["status"] for r in store.db.query("SELECT status FROM evidence")] == ["chained"] * 3)
        settle(b, 2)
        name, body = export.bundle(store, raid.id, evidence_dir=b.files.configs[1].evidence_dir)
    finally:
        b.stop()
    path = tmp_path_factory.mktemp("bundle") / name
    path.write_bytes(body)
    return path


def open_cli(*args, env=None):
    return CliRunner().invoke(cli, ["evidence", "open", *map(str, args)], env=env)


def by_type(out: Path) -> dict[str, Path]:
    index = json.loads(next(out.glob("*.opened.json")).read_text())
    return {item["content_type"].split(";")[0]: out / item["file"] for item in index["items"]}


def test_open_verifies_decrypts_and_removes_the_location_from_photos_and_videos(bundle, identity_file, media,
                                                                               tmp_path):
    result = open_cli(bundle, "--identity", identity_file, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert "OK: 3 item(s) opened" in result.output
    files = by_type(tmp_path / "out")
    assert set(files) == {"image/jpeg", "video/mp4", "text/plain"}
    assert files["image/jpeg"].suffix == ".jpg" and files["video/mp4"].suffix == ".mp4"
    assert locations(files["image/jpeg"]) == {} and locations(files["video/mp4"]) == {}
    assert files["image/jpeg"].read_bytes()[:2] == b"\xff\xd8", "still a JPEG"
    assert files["text/plain"].read_text() == STATEMENT
    assert all(re.fullmatch(r"\d{3}-[0-9a-f]{32}\.\w+", p.name) for p in files.values())
    assert not list((tmp_path / "out").glob(".part-*"))


def test_keep_metadata_writes_the_exact_bytes_the_witness_sent(bundle, identity_file, media, tmp_path):
    result = open_cli(bundle, "--identity", identity_file, "--out", tmp_path / "out", "--keep-metadata")
    assert result.exit_code == 0, result.output
    files = by_type(tmp_path / "out")
    assert files["image/jpeg"].read_bytes() == media["IMG_1.jpg"]
    assert files["video/mp4"].read_bytes() == media["VID_2.mp4"]
    assert locations(files["video/mp4"]), "kept"


def _rewritten(bundle: Path, tmp_path: Path, change) -> Path:
    with zipfile.ZipFile(bundle) as zf:
        files = {n: zf.read(n) for n in zf.namelist()}
    change(files)
    out = tmp_path / bundle.name
    with zipfile.ZipFile(out, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return out


def _flip_a_sealed_byte(files):
    name = next(n for n in sorted(files) if n.endswith(".age") and not n.endswith(".meta.age"))
    body = bytearray(files[name])
    body[-20] ^= 1
    files[name] = bytes(body)


def _add_a_traversing_member(files):
    folder = next(iter(files)).split("/", 1)[0]
    name = next(n for n in sorted(files) if n.endswith(".meta.age"))
    files[f"{folder}/evidence/items/../../../escaped.age"] = files[name]


@pytest.mark.parametrize("change", [_flip_a_sealed_byte, _add_a_traversing_member])
def test_a_tampered_bundle_is_refused_before_anything_is_decrypted(bundle, identity_file, tmp_path, change):
    tampered = _rewritten(bundle, tmp_path, change)
    out = tmp_path / "out"
    result = open_cli(tampered, "--identity", identity_file, "--out", out)
    assert result.exit_code == 1
    assert "does not verify" in result.output and "nothing was decrypted" in result.output
    assert "FAIL evidence/items/" in result.output
    assert not out.exists(), "nothing written, not even the folder"
    assert not (tmp_path / "escaped.age").exists() and not list(tmp_path.rglob("escaped*"))


def test_the_stock_age_tool_opens_a_sealed_item(bundle, identity_file, media, tmp_path):
    with zipfile.ZipFile(bundle) as zf:
        sealed = [zf.read(n) for n in zf.namelist() if n.endswith(".age") and not n.endswith(".meta.age")]
    opened = []
    for i, body in enumerate(sealed):
        (tmp_path / f"{i}.age").write_bytes(body)
        done = subprocess.run(["age", "-d", "-i", str(identity_file), str(tmp_path / f"{i}.age")],
                              capture_output=True, check=True)
        opened.append(done.stdout)
    assert media["IMG_1.jpg"] in opened and media["VID_2.mp4"] in opened and STATEMENT.encode() in opened


def test_another_organizers_key_opens_nothing_and_says_so(bundle, tmp_path):
    other = tmp_path / "other.txt"
    subprocess.run(["age-keygen", "-o", str(other)], check=True, capture_output=True)
    result = open_cli(bundle, "--identity", other, "--out", tmp_path / "out")
    assert result.exit_code == 1
    assert result.output.count("no identity in the file opens it") == 3
    assert not [p for p in (tmp_path / "out").iterdir()]


def test_a_bad_identity_file_or_no_exiftool_is_one_clear_line(bundle, identity_file, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("# created by hand\nAGE-SECRET-KEY-1NOTAKEY\n")
    result = open_cli(bundle, "--identity", bad, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "line 2 is not an age identity" in result.output
    assert "NOTAKEY" not in result.output, "a secret-looking line is never echoed"
    empty = tmp_path / "empty-path"
    empty.mkdir()
    result = open_cli(bundle, "--identity", identity_file, "--out", tmp_path / "out", env={"PATH": str(empty)})
    assert result.exit_code == 1 and "exiftool is not installed" in result.output
    assert "libimage-exiftool-perl" in result.output and not (tmp_path / "out").exists()
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_file_exiftool_cannot_clean_is_not_written_with_its_location(tmp_path):
    path = tmp_path / "001-x.jpg"
    path.write_bytes(b"not a jpeg at all")
    with pytest.raises(unseal.EvidenceError, match="location could not be removed"):
        unseal.remove_location(path)
    assert not path.exists()
