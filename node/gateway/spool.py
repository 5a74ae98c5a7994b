"""gammu-smsd's files backend: the folders through which the gateway and the modem's daemon talk.

Why the files backend, not python-gammu's SMSD interface: it needs no extra Python package
(python-gammu builds against libgammu), gammu-smsd keeps owning the modem in its own
process and user, and a folder survives either side restarting. ``<spool>/inbox``: texts
gammu-smsd received (``IN<date>_<time>_<serial>_<sender>_<part>.txt``, UTF-16);
``<spool>/outbox``: texts for it to send; ``<spool>/sent`` and ``<spool>/error``: where it
moves each one, under the same name, once sent or failed.

Exactly once across a folder and a database: the two cannot commit together, so each
queued text has one deterministic file name, ``OUT<priority><queue id>_0_00_<number>_silbato.txt``.
The gateway writes it under a hidden temporary name (gammu-smsd skips dot files), then
renames it in (atomic), then marks the row handed. After a crash between the rename and the
mark, the row is still queued: before writing, the gateway looks for that name in the
outbox, then sent, then error (the order in which gammu-smsd moves it) and, finding it, only
marks the row. gammu-smsd never sends a name twice on its own: it moves the file out of the
outbox before the next scan. The priority letter sorts responders (A) before the broad list
(B): gammu-smsd sends in file-name order. The gateway deletes each sent or failed file once
its row records the outcome, so no number stays in the spool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FOLDERS = ("inbox", "outbox", "sent", "error")
_OURS = re.compile(r"^OUT([A-Z])(\d{10})_0_00_([+0-9]{3,20})_silbato\.txt$")
_INBOX = re.compile(r"^IN(\d{8}_\d{6})_(\d{2})_([^_]+)_(\d{2})\.(txt|bin|smsbackup)$")


@dataclass(frozen=True)
class Incoming:
    files: tuple[Path, ...]  # every part, to delete once handled
    sender: str
    text: str | None         # None: a binary (8-bit) message
    digest: str = ""         # SHA-256 of every part's name and bytes: which files these are (holds the number: keep
                             # only a keyed MAC of it)


class Spool:
    """The four folders under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.inbox, self.outbox, self.sent, self.error = (self.root / name for name in FOLDERS)

    def make(self) -> "Spool":
        for name in FOLDERS:
            (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o770)
        return self

    @staticmethod
    def name(queue_id: int, priority: str, number: str) -> str:
        return f"OUT{priority}{queue_id:010d}_0_00_{number}_silbato.txt"

    def where(self, name: str) -> str | None:
        """Which folder holds ``name`` (outbox, sent, error), looked at in the order gammu-smsd moves it."""
        for folder in ("outbox", "sent", "error"):
            if (self.root / folder / name).exists():
                return folder
        return None

    def hand_off(self, queue_id: int, priority: str, number: str, text: str, *, sync: bool = True) -> bool:
        """Put a text in the outbox under its one name; False if it was there (or past it) already.

        ``sync=False``: the outbox folder is not synced; the caller calls ``sync()`` once for a batch,
        before recording any of them as handed."""
        name = self.name(queue_id, priority, number)
        if self.where(name) is not None:
            return False
        tmp = self.outbox / f".{queue_id}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(b"\xff\xfe" + text.encode("utf-16-le"))  # UTF-16 with its mark: any language
            if sync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, self.outbox / name)
        if sync:
            _fsync_dir(self.outbox)
        return True

    def sync(self) -> None:
        """Make a batch of ``hand_off(..., sync=False)`` durable, contents and names, before their
        rows are marked handed: one ``sync()`` instead of two fsyncs a text (2 ms each on a disk)."""
        os.sync()

    def outcomes(self) -> list[tuple[int, bool, Path]]:
        """(queue id, sent?, file) for each of our files gammu-smsd has moved to sent or error."""
        found = []
        for folder, sent in ((self.sent, True), (self.error, False)):
            for path in sorted(folder.glob("OUT*")):
                match = _OURS.match(path.name)
                if match:
                    found.append((int(match.group(2)), sent, path))
        return found

    def waiting(self) -> int:
        """How many of our texts wait in the outbox for gammu-smsd."""
        return sum(1 for path in self.outbox.glob("OUT*") if _OURS.match(path.name))

    def withdraw(self, queue_id: int, priority: str, number: str) -> bool:
        """Take a text back from the outbox before gammu-smsd sends it (STOP); True if it was there."""
        try:
            (self.outbox / self.name(queue_id, priority, number)).unlink()
            return True
        except FileNotFoundError:
            return False

    def incoming(self) -> list[Incoming]:
        """Received texts, their parts joined, oldest first."""
        groups: dict[tuple, list[tuple[int, Path, str]]] = {}
        for path in sorted(self.inbox.glob("IN*")):
            match = _INBOX.match(path.name)
            if not match:
                log.warning("an unexpected file in gammu's inbox was removed")
                path.unlink(missing_ok=True)
                continue
            when, serial, sender, part, ext = match.groups()
            groups.setdefault((when, serial, sender), []).append((int(part), path, ext))
        messages = []
        for (_when, _serial, sender), parts in groups.items():
            parts.sort()
            digest = hashlib.sha256()
            for _, path, _ in parts:
                digest.update(path.name.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
            if any(ext != "txt" for _, _, ext in parts):
                text = None
            else:
                text = "".join(_read_text(path) for _, path, _ in parts)
            messages.append(Incoming(tuple(path for _, path, _ in parts), sender, text, digest.hexdigest()))
        return messages

    def destroy_all(self) -> int:
        """Overwrite and delete every file in the four folders (a wipe); how many there were."""
        from node.shred import destroy

        files, links = [], []
        for name in FOLDERS:
            folder = self.root / name
            for path in (folder.iterdir() if folder.is_dir() else ()):
                # A link is removed, never followed: overwriting its target could be anything.
                (links if path.is_symlink() else files if path.is_file() else []).append(path)
        for link in links:
            link.unlink(missing_ok=True)
        return len(destroy(files)) + len(links)

    def discard(self, message: Incoming) -> None:
        """Delete a handled text's files from the inbox (they name the sender)."""
        for path in message.files:
            path.unlink(missing_ok=True)


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.decode("utf-8", errors="replace")
    return text.rstrip("\x00")  # gammu-smsd may pad the text with NULs


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def smsdrc(spool: Path, *, device: str = "", model: str = "", dummy: Path | None = None,
           log_file: Path | None = None, run_on_sent: str = "") -> str:
    """A gammu-smsd configuration for the files backend on ``spool``.

    ``dummy``: Gammu's dummy driver, a phone in that folder (tests, CI, the demo). gammu-smsd
    logs numbers at every debug level (each file it receives, sends and moves), so its log goes
    to /dev/null unless ``log_file`` says otherwise (the tests). Checks that do nothing on a dummy
    phone are off; they stay on for a modem.
    """
    spool = Path(spool)
    phone = (f"model = dummy\nconnection = none\ndevice = {dummy}/\n" if dummy is not None
             else f"device = {device}\nconnection = at\n" + (f"model = {model}\n" if model else ""))
    checks = "0" if dummy is not None else "1"
    lines = [
        "[gammu]", phone.rstrip("\n"), "", "[smsd]", "service = files",
        *(f"{name}path = {spool / folder}/" for name, folder in
          (("inbox", "inbox"), ("outbox", "outbox"), ("sentsms", "sent"), ("errorsms", "error"))),
        "inboxformat = unicode", "outboxformat = unicode", "transmitformat = auto",
        f"logfile = {log_file or '/dev/null'}", "debuglevel = 0",
        "commtimeout = 1", "receivefrequency = 1", "statusfrequency = 0", "loopsleep = 1",
        f"checksecurity = {checks}", f"checkbattery = {checks}", f"checksignal = {checks}",
        f"checknetwork = {checks}",
    ]
    if run_on_sent:
        lines.append(f"runonsent = {run_on_sent}")
    return "\n".join(lines) + "\n"
