"""Seal a plaintext stream to the organizers' age recipients, on its way to the evidence folder.

The plaintext is read in small pieces (pyrage asks for 8 KiB at a time), hashed and counted
as it passes, and encrypted in memory; only sealed bytes are written, to a hidden temporary
name in the folder that becomes ``<item>.age`` once it is complete and synced. Anything that
stops it (too large, the folder's cap, a full disk, a dropped connection) removes the
temporary file: no partial item is ever left.

The output is the standard age format (v1, X25519 recipients): ``age -d -i key.txt item.age``
opens it on an organizer's laptop.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage

from node.errors import EvidenceError

log = logging.getLogger(__name__)

SUFFIX = ".age"
META_SUFFIX = ".meta.age"   # a second sealed item: the content type and kind, never in the clear
PART_PREFIX = ".part-"       # temporary names, removed on any failure (and by the daemon if stale)
FILE_MODE = 0o640            # the page's user writes, the daemon (group) reads and deletes


class TooLarge(EvidenceError):
    """One item is over ``evidence.max_item`` bytes."""


class StorageFull(EvidenceError):
    """The evidence folder holds ``evidence.max_total`` bytes already (or would, with this item)."""


class DiskFull(EvidenceError):
    """The disk is full (ENOSPC) while sealing."""


class NoRecipients(EvidenceError):
    """No organizers' recipients are configured: nothing can be sealed, so nothing is taken."""


@dataclass(frozen=True)
class Sealed:
    """One sealed item: ``size`` and ``sha256`` of the plaintext, ``sealed_*`` of the file written."""

    item_id: str
    path: Path
    size: int
    sha256: str
    sealed_size: int
    sealed_sha256: str


def parse_recipients(text: str) -> list[pyrage.x25519.Recipient]:
    """``evidence.recipients`` (comma- or space-separated ``age1...`` keys) as recipients; ``ValueError`` names a bad one."""
    out = []
    for word in text.replace(",", " ").split():
        if not word.startswith("age1"):
            raise ValueError(f"expected age public keys (age1...), got {word[:16]!r}")
        try:
            out.append(pyrage.x25519.Recipient.from_str(word))
        except pyrage.RecipientError:
            raise ValueError(f"not a valid age public key: {word[:16]}...") from None
    return out


def new_item_id() -> str:
    """A random item id (128 bits, hex): it says nothing about who sent what, or when."""
    return secrets.token_hex(16)


def used_bytes(folder: Path) -> int:
    """Bytes held in the evidence folder (sealed items and temporary ones)."""
    total = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                except OSError:
                    continue
    except FileNotFoundError:
        return 0
    return total


class _Source:
    """The plaintext on its way in: hashed and counted, refused past ``limit`` bytes."""

    def __init__(self, source: BinaryIO, limit: int):
        self.source, self.limit = source, limit
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None
        self.largest_read = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        try:
            chunk = self.source.read(n if n is not None and n > 0 else 65536)
        except BaseException as exc:  # a dropped connection: kept, re-raised by ``seal``
            self.error = exc
            raise
        self.largest_read = max(self.largest_read, len(chunk))
        self.size += len(chunk)
        if self.size > self.limit:
            self.error = TooLarge(f"over the limit of {self.limit} bytes")
            raise self.error
        self.hash.update(chunk)
        return chunk


class _Sink:
    """The sealed bytes on their way out: hashed, counted, refused past the folder's cap."""

    def __init__(self, fd: int, room: int):
        self.fd, self.room = fd, room
        self.hash = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        data = bytes(data)
        if self.size + len(data) > self.room:
            self.error = StorageFull("the evidence folder is full")
            raise self.error
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.error = DiskFull("the disk is full") if exc.errno == errno.ENOSPC else exc
            raise self.error from None
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def seal(source: BinaryIO, folder: Path, recipients: list, *, max_item: int, max_total: int,
         item_id: str | None = None, suffix: str = SUFFIX) -> Sealed:
    """Seal ``source`` (read to its end) into ``folder/<item_id><suffix>``; return its hashes and sizes.

    ``max_item``: bytes of plaintext one item may hold; ``max_total``: bytes the folder may hold.
    Raises ``NoRecipients``, ``TooLarge``, ``StorageFull`` or ``DiskFull`` (leaving nothing
    behind), or the source's own error (a dropped connection), also leaving nothing.
    """
    if not recipients:
        raise NoRecipients("no organizers' age recipients are configured (evidence.recipients)")
    folder = Path(folder)
    item_id = item_id or new_item_id()
    room = max_total - used_bytes(folder)
    if room <= 0:
        raise StorageFull("the evidence folder is full")
    final = folder / f"{item_id}{suffix}"
    part = folder / f"{PART_PREFIX}{item_id}{suffix}"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull("the disk is full") from None
        raise EvidenceError(f"{folder}: cannot write evidence: {exc.strerror}") from None
    reader, writer = _Source(source, max_item), None
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask: the daemon (group) must read it
        writer = _Sink(fd, room)
        try:
            pyrage.encrypt_io(reader, writer, recipients)
        except pyrage.EncryptError as exc:
            # pyrage wraps what our reader or writer raised: give back the original
            raise (reader.error or writer.error or EvidenceError(f"sealing failed: {exc}")) from None
        if reader.error or writer.error:  # pyrage does not report an error of its last write
            raise reader.error or writer.error
        try:
            os.fsync(fd)
        except OSError as exc:
            raise (DiskFull("the disk is full") if exc.errno == errno.ENOSPC else exc) from None
        os.close(fd)
        fd = -1
        os.replace(part, final)
        _sync_folder(folder)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            part.unlink()
        except FileNotFoundError:
            pass
        raise
    return Sealed(item_id, final, reader.size, reader.hash.hexdigest(), writer.size, writer.hash.hexdigest())


def seal_bytes(data: bytes, folder: Path, recipients: list, *, item_id: str, suffix: str,
               max_total: int) -> Sealed:
    """A small plaintext (an item's metadata, a statement) sealed like ``seal``."""
    import io
    return seal(io.BytesIO(data), folder, recipients, max_item=len(data), max_total=max_total,
                item_id=item_id, suffix=suffix)


def sha256_file(path: Path) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in 1 MiB pieces."""
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _sync_folder(folder: Path) -> None:
    """Make the rename durable (a power cut must not lose an item the page said was received)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
