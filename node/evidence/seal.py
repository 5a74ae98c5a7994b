"""Seal a plaintext stream to the organizers' age recipients, on its way to the evidence folder.

The plaintext is read a piece at a time (``READ_AHEAD``), hashed and counted as it passes,
and encrypted in memory (``node.evidence.age``); only sealed bytes are written, to a hidden temporary
name in the folder that becomes ``<item>.age`` once it is complete and synced. Anything that
stops it (too large, the folder's cap, a full disk, a dropped connection) removes the
temporary file: no partial item is ever left.

The folder's cap (``evidence.max_total``) holds under concurrent uploads: every seal first
reserves, under one process-wide lock, the most its sealed file can take (``sealed_bound``
of the plaintext it may receive), and is refused ``StorageFull`` at once if what the folder
holds plus what others have reserved and not yet written would pass the cap. The
reservation shrinks as sealed bytes are written and is released when the seal ends.

The output is the standard age format (v1, X25519 recipients): ``age -d -i key.txt item.age``
opens it on an organizer's laptop.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import pyrage

from node.errors import EvidenceError
from node.evidence import age

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


def sealed_bound(plaintext: int, recipients: int = 1) -> int:
    """The most bytes an age file of ``plaintext`` bytes to ``recipients`` recipients can take.

    age adds a 16-byte tag per 64 KiB piece, a 16-byte nonce and a header of one stanza per
    recipient (``node.evidence.age`` writes no "grease" stanza, as pyrage did): counted generously.
    """
    return plaintext + 16 * (plaintext // 65536 + 1) + 2048 + 256 * max(recipients, 1)


class Reservation:
    """Bytes of the evidence folder one seal may still write (``size`` reserved, ``written`` so far)."""

    def __init__(self, ledger: "Ledger", key: str, size: int):
        self.ledger, self.key, self.size = ledger, key, size
        self.written = 0
        self.released = False

    @property
    def outstanding(self) -> int:
        return max(self.size - self.written, 0)

    def release(self) -> None:
        self.ledger.release(self)


class Ledger:
    """The process's reservations against each evidence folder's cap, under one lock.

    What a folder holds is its files (sealed items and temporary ones being written) plus the
    part of each reservation not written yet: two uploads started together cannot both count
    on the same free space.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[str, list[Reservation]] = {}

    def reserve(self, folder: Path, size: int, max_total: int) -> Reservation:
        """Reserve ``size`` bytes of ``folder``; ``StorageFull`` if that would pass ``max_total``."""
        key = os.path.abspath(folder)
        with self._lock:
            held = self._held.setdefault(key, [])
            if used_bytes(Path(folder)) + sum(r.outstanding for r in held) + size > max_total:
                raise StorageFull("the evidence folder is full")
            reservation = Reservation(self, key, size)
            held.append(reservation)
            return reservation

    def release(self, reservation: Reservation) -> None:
        with self._lock:
            if reservation.released:
                return
            reservation.released = True
            held = self._held.get(reservation.key, [])
            held.remove(reservation)
            if not held:
                self._held.pop(reservation.key, None)

    def outstanding(self, folder: Path) -> int:
        """Bytes reserved in ``folder`` and not written yet."""
        with self._lock:
            return sum(r.outstanding for r in self._held.get(os.path.abspath(folder), []))


LEDGER = Ledger()  # one per process: the page's form uploads and chunked uploads share it


def reserve(folder: Path, plaintext: int, recipients: list, max_total: int) -> Reservation:
    """Reserve room in ``folder`` for an item of at most ``plaintext`` bytes; ``StorageFull`` if there is none."""
    return LEDGER.reserve(folder, sealed_bound(plaintext, len(recipients)), max_total)


def room(folder: Path, max_total: int) -> int:
    """Bytes ``folder`` may still take: its cap less what it holds and what is reserved."""
    return max_total - used_bytes(Path(folder)) - LEDGER.outstanding(folder)


READ_AHEAD = 1 << 20        # bytes of plaintext taken from the source at once (see _Source)
WRITEBACK_EVERY = 4 << 20   # bytes of a sealed file between two hints to write it back (see _Sink)


class _Source:
    """The plaintext on its way in: hashed and counted, refused past ``limit`` bytes.

    Read ``READ_AHEAD`` bytes at a time and hashed in one call per read (hashlib lets go of
    the GIL for it): one look at the page's pipe per piece (benchmark P11)."""

    def __init__(self, source: BinaryIO, limit: int):
        self.source, self.limit = source, limit
        self.hash = hashlib.sha256()
        self.size = 0

    def read(self) -> bytes:
        """The next piece (``b""`` at the end); ``TooLarge`` past the limit, never more than one byte past it."""
        chunk = self.source.read(min(READ_AHEAD, self.limit - self.size + 1))
        self.size += len(chunk)
        if self.size > self.limit:
            raise TooLarge(f"over the limit of {self.limit} bytes")
        self.hash.update(chunk)
        return chunk


class _Sink:
    """The sealed bytes on their way out: hashed, counted, refused past the room reserved.

    Every ``WRITEBACK_EVERY`` bytes it asks the kernel to write what came so far to the disk
    now, and to drop it from the page cache (``POSIX_FADV_DONTNEED``, which does not wait).
    Left to itself the kernel holds hundreds of megabytes of five uploads in memory and writes
    them in bursts, and the database's sync at a captain's hold waits behind a burst: hold to
    siren p99 during 5 uploads of 100 MB 78-93 ms, 31 ms with this (benchmark P11)."""

    def __init__(self, fd: int, reservation: Reservation):
        self.fd, self.reservation = fd, reservation
        self.hash = hashlib.sha256()
        self.size = 0
        self.written_back = 0   # bytes before this offset were handed to the kernel's writeback

    def write(self, data) -> int:   # bytes or a view (the encryptor's buffer, written before its next use)
        if self.size + len(data) > self.reservation.size:
            raise StorageFull("the evidence folder is full")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise (DiskFull("the disk is full") if exc.errno == errno.ENOSPC else exc) from None
        self.hash.update(data)
        self.size += len(data)
        self.reservation.written = self.size  # after the write: a look in between counts it twice, never none
        if self.size - self.written_back >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            try:
                os.posix_fadvise(self.fd, self.written_back, self.size - self.written_back, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass   # only a hint: the final fsync writes it all the same
            self.written_back = self.size
        return len(data)


def seal(source: BinaryIO, folder: Path, recipients: list, *, max_item: int, max_total: int,
         item_id: str | None = None, suffix: str = SUFFIX, expected: int | None = None,
         reservation: Reservation | None = None) -> Sealed:
    """Seal ``source`` (read to its end) into ``folder/<item_id><suffix>``; return its hashes and sizes.

    ``max_item``: bytes of plaintext one item may hold; ``max_total``: bytes the folder may hold.
    Room is reserved first for ``expected`` bytes of plaintext (at most; default ``max_item``),
    unless the caller passes its own ``reservation``; either way it is released at the end.
    Raises ``NoRecipients``, ``TooLarge``, ``StorageFull`` or ``DiskFull`` (leaving nothing
    behind), or the source's own error (a dropped connection), also leaving nothing.
    """
    try:
        if not recipients:
            raise NoRecipients("no organizers' age recipients are configured (evidence.recipients)")
        if reservation is None:
            size = max_item if expected is None else min(expected, max_item)
            reservation = reserve(folder, size, recipients, max_total)
        return _seal(source, Path(folder), recipients, max_item, item_id or new_item_id(), suffix, reservation)
    finally:
        if reservation is not None:
            reservation.release()


def _seal(source: BinaryIO, folder: Path, recipients: list, max_item: int, item_id: str, suffix: str,
          reservation: Reservation) -> Sealed:
    final = folder / f"{item_id}{suffix}"
    part = folder / f"{PART_PREFIX}{item_id}{suffix}"
    try:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiskFull("the disk is full") from None
        raise EvidenceError(f"{folder}: cannot write evidence: {exc.strerror}") from None
    reader = _Source(source, max_item)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the umask: the daemon (group) must read it
        writer = _Sink(fd, reservation)
        try:
            encryptor = age.Encryptor(recipients)
        except ValueError as exc:
            raise EvidenceError(f"sealing failed: {exc}") from None
        writer.write(encryptor.header)
        while chunk := reader.read():
            for sealed in encryptor.update(chunk):
                writer.write(sealed)
        writer.write(encryptor.finish())
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
