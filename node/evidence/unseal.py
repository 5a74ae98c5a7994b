"""``silbato evidence open``: an organizer's laptop opens a verified bundle with the organizers' age identity.

Nothing is decrypted unless the whole bundle verifies (``node.evidence.verify``): a bundle
with one edited, removed, reordered, truncated or added file is refused before the first
item is opened. Then each item of the signed chain is decrypted as it streams out of the
zip, its size and SHA-256 checked against its signed manifest entry (a mismatch leaves no
file), and written as ``<seq>-<item>.<ext>``: every part of the name is made here (the
sequence number, the 32-hex item id the signature covers, an extension from a fixed table of
content types), so nothing inside the bundle can choose a path.

Photos, videos and audio then lose their location tags (GPS, ``Location*``, XMP geotags),
which a witness's phone writes where they stood, with exiftool (Debian:
``libimage-exiftool-perl``); ``keep_metadata`` keeps the exact bytes. The stripped copy no
longer has the manifest's SHA-256: ``<bundle>.opened.json`` records both, and the sealed item (or
``--keep-metadata``) is what proves the original.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pyrage

from node.errors import EvidenceError
from node.evidence import manifest, seal
from node.evidence.verify import Report, verify

log = logging.getLogger(__name__)

EXIFTOOL = "exiftool"
# What exiftool removes: EXIF GPS, every tag named GPS* or Location* in any group (QuickTime
# Keys/UserData/ItemList GPSCoordinates and LocationName, XMP, IPTC), and XMP geotags.
STRIP = ["-gps:all=", "-gps*=", "-location*=", "-xmp:geotag="]
CHECK = ["-gps*", "-location*"]
STRIP_TIMEOUT = 600  # seconds for one file (a 500 MB video is copied once)

EXTENSIONS = {
    "image/jpeg": ".jpg", "image/png": ".png", "image/heic": ".heic", "image/heif": ".heif",
    "image/webp": ".webp", "image/gif": ".gif", "image/tiff": ".tif",
    "video/mp4": ".mp4", "video/quicktime": ".mov", "video/3gpp": ".3gp", "video/webm": ".webm",
    "video/x-matroska": ".mkv", "audio/mpeg": ".mp3", "audio/mp4": ".m4a", "audio/aac": ".aac",
    "audio/ogg": ".ogg", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/webm": ".weba",
    "audio/amr": ".amr", "audio/3gpp": ".3ga", "text/plain": ".txt",
}
MEDIA = ("image/", "video/", "audio/")
ITEM_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Opened:
    """One item written: where, and what the signed manifest and the sealed metadata say of it."""

    file: str
    item: str
    seq: int
    received_at: float
    content_type: str
    sha256: str            # of the plaintext, as signed (and checked)
    location_removed: bool = False
    written_sha256: str = ""


@dataclass
class Result:
    report: Report
    opened: list[Opened] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # items that could not be opened, or kept their location

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.problems


def load_identities(path: Path) -> list:
    """The age identities in ``path`` (as ``age-keygen`` writes it: comments and ``AGE-SECRET-KEY-1...`` lines)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise EvidenceError(f"{path}: cannot read the identity file: {getattr(exc, 'strerror', None) or exc}") from None
    identities = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            # never echo the line: it may be a secret key with a typo
            raise EvidenceError(f"{path}: line {number} is not an age identity (AGE-SECRET-KEY-1...)") from None
    if not identities:
        raise EvidenceError(f"{path}: no age identity in it (expected a file written by age-keygen)")
    return identities


def exiftool() -> str:
    """The path of exiftool; ``EvidenceError`` saying how to get it."""
    found = shutil.which(EXIFTOOL)
    if not found:
        raise EvidenceError("exiftool is not installed, and it is needed to remove where a witness stood from "
                            "photos and videos (Debian: apt install libimage-exiftool-perl); "
                            "or pass --keep-metadata to write them as they are")
    return found


def unseal(bundle: Path, identities: list, out: Path, *, keep_metadata: bool = False, organizer=None) -> Result:
    """Verify ``bundle``; if it verifies, open each sealed item into ``out``.

    Returns the verification report and what was written; with a failed verification nothing
    is written (not even ``out``). ``EvidenceError``: not a bundle, or exiftool is missing.
    """
    tool = None if keep_metadata else exiftool()
    report = verify(Path(bundle), organizer)
    result = Result(report)
    if not report.ok:
        log.warning("%s does not verify (%d problem(s)): nothing opened", bundle, len(report.findings))
        return result
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    with zipfile.ZipFile(bundle) as zf:
        folder = zf.namelist()[0].split("/", 1)[0]
        for entry in report.chain:
            if manifest.kind(entry) != "item":
                continue  # a record (such as ``pulled``), not an item
            if entry["item"] in report.pulled and f"{folder}/evidence/items/{entry['item']}{seal.SUFFIX}" \
                    not in zf.NameToInfo:
                continue  # pulled off the node before this bundle was made: it is in an earlier one
            try:
                result.opened.append(_open_one(zf, folder, entry, identities, out, tool))
            except EvidenceError as exc:
                log.warning("item %s: %s", entry.get("item"), exc)
                result.problems.append(f"item {entry.get('seq')} ({entry.get('item')}): {exc}")
    if result.opened:
        _write_index(out / f"{Path(bundle).stem}.opened.json", bundle, result)
    return result


def _open_one(zf: zipfile.ZipFile, folder: str, entry: dict, identities: list, out: Path, tool: str | None) -> Opened:
    item = str(entry["item"])
    if not ITEM_ID.match(item):
        raise EvidenceError("not an item id")
    base = f"{folder}/evidence/items/{item}"
    try:
        meta = json.loads(pyrage.decrypt(zf.read(base + seal.META_SUFFIX), identities))
        content_type = str(meta.get("content_type", "application/octet-stream"))
    except pyrage.DecryptError:
        raise EvidenceError("no identity in the file opens it (a key of other organizers?)") from None
    except (ValueError, AttributeError):
        raise EvidenceError("its sealed metadata is not what the page writes") from None
    name = f"{int(entry['seq']):03d}-{item}{extension(content_type)}"
    final, part = out / name, out / f".part-{name}"
    if final.exists():
        raise EvidenceError(f"{name} exists already in {out}; not overwritten")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        sink = _HashingFile(fd)
        with zf.open(base + seal.SUFFIX) as src:
            try:
                pyrage.decrypt_io(src, sink, identities)
            except pyrage.DecryptError as exc:
                raise EvidenceError(f"it does not decrypt ({exc})") from None
        os.fsync(fd)
        if sink.size != entry["size"] or sink.hash.hexdigest() != entry["sha256"]:
            raise EvidenceError("its plaintext's size or SHA-256 is not the one in its signed manifest entry")
        os.close(fd)
        fd = -1
        os.replace(part, final)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        part.unlink(missing_ok=True)
        raise
    opened = Opened(name, item, int(entry["seq"]), entry["received_at"], content_type, entry["sha256"],
                    written_sha256=entry["sha256"])
    if tool and content_type.startswith(MEDIA):
        remove_location(final, tool)
        opened.location_removed = True
        opened.written_sha256 = seal.sha256_file(final)[1]
    return opened


def remove_location(path: Path, tool: str | None = None) -> None:
    """Remove location tags from the photo, video or audio file ``path`` in place, and check none is left.

    ``EvidenceError`` if exiftool cannot (a format it cannot write, a damaged file): then the
    file is removed, since the caller asked for no location and cannot have it.
    """
    tool = tool or exiftool()
    try:
        done = subprocess.run([tool, "-q", "-q", "-m", "-overwrite_original", *STRIP, str(path)],
                              capture_output=True, text=True, timeout=STRIP_TIMEOUT)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        else:
            left = subprocess.run([tool, "-j", "-a", "-G1", *CHECK, str(path)], capture_output=True, text=True,
                                  timeout=STRIP_TIMEOUT)
            tags = sorted(k for k in json.loads(left.stdout or "[{}]")[0] if k != "SourceFile")
            why = f"location tags left: {', '.join(tags)}" if tags else ""
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        why = f"exiftool: {exc}"
    if why:
        path.unlink(missing_ok=True)
        raise EvidenceError(f"its location could not be removed ({why}); not written (use --keep-metadata to "
                            "write it with its location)")


def extension(content_type: str) -> str:
    """A file extension for ``content_type`` from a fixed table (never from the sender's file name)."""
    return EXTENSIONS.get(content_type.split(";", 1)[0].strip().lower(), ".bin")


class _HashingFile:
    def __init__(self, fd: int):
        self.fd, self.size, self.hash = fd, 0, hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(bytes(data))
        self.hash.update(view)
        self.size += len(view)
        while view:
            view = view[os.write(self.fd, view):]
        return len(data)

    def flush(self) -> None:
        pass


def _write_index(path: Path, bundle: Path, result: Result) -> None:
    body = {"bundle": Path(bundle).name, "items": [vars(o) for o in result.opened],
            "note": "sha256 is the plaintext's as signed in the manifest; written_sha256 differs where the "
                    "location was removed (open again with --keep-metadata, or age -d, for the exact bytes)"}
    path.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
