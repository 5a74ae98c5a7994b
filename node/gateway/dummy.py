"""The real gammu-smsd on Gammu's dummy driver: a phone in a folder, for the tests and ``silbato sim --sms``.

Shipped in the package as gpiozero ships its mock pins: no hand-written fake modem, the real
daemon on a pretend phone. ``GammuSmsd(root)`` writes an smsdrc (node.gateway.spool.smsdrc: the
files backend on ``root/spool``, the dummy driver on ``root/phone``), starts ``gammu-smsd -c <rc>
--pid <root/gammu-smsd.pid>`` and stops it (``start`` again restarts it on the same spool and phone).

- A text *arrives* when ``receive(sender, text)`` puts an SMS in the dummy phone's inbox folder,
  ``phone/sms/1/<n>``, in Gammu's smsbackup format with ``PDU = Deliver`` (libgammu/phone/dummy/
  dummy.c reads folders 1..5; gammu-smsd takes it, writes ``spool/inbox/IN...txt`` and deletes it).
  Written under another name and renamed in, so gammu-smsd never reads half a file.
- The dummy phone's SendSMS keeps nothing, so what was *sent* is what gammu-smsd's ``RunOnSent``
  recorded: ``sent()`` is the ledger of sent file names (one line per transmission), and
  ``texts()`` the (number, text) of each, from the hook's environment (``SMS_1_TEXT``).

These records hold phone numbers in the clear, as a phone's own would: for tests and the
demo only, never on a node.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
import time
from pathlib import Path

from node.errors import SilbatoError
from node.gateway.spool import Spool, smsdrc

GAMMU_SMSD = shutil.which("gammu-smsd")
_SEQ = itertools.count(1)


class SmsdError(SilbatoError):
    """gammu-smsd is not installed, or did not start."""


class GammuSmsd:
    """gammu-smsd on the dummy phone under ``root``."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.phone = self.root / "phone"
        for folder in range(1, 6):
            (self.phone / "sms" / str(folder)).mkdir(parents=True, exist_ok=True)
        self.spool = Spool(self.root / "spool").make()
        self.ledger = self.root / "ledger"
        self.copies = self.root / "copies"
        self.copies.mkdir(exist_ok=True)
        hook = self.root / "on-sent.sh"
        # $1: the file name gammu-smsd sent; SMS_1_TEXT its text (gammu-smsd-run's environment): the
        # gateway may delete the file in the sent folder before this hook runs.
        hook.write_text(f'#!/bin/sh\nprintf "%s" "$SMS_1_TEXT" > "{self.copies}/$(date +%s%N)-$1"\n'
                        f'echo "$1" >> "{self.ledger}"\n')
        hook.chmod(0o755)
        self.rc = self.root / "smsdrc"
        self.rc.write_text(smsdrc(self.spool.root, dummy=self.phone, log_file=self.root / "smsd.log",
                                  run_on_sent=str(hook)))
        self.pid = self.root / "gammu-smsd.pid"   # as Debian's unit writes /run/gammu-smsd.pid (sms.smsd_pid)
        self.process: subprocess.Popen | None = None

    def start(self) -> "GammuSmsd":
        if GAMMU_SMSD is None:
            raise SmsdError("gammu-smsd is not installed (Debian: apt-get install gammu-smsd)")
        self.process = subprocess.Popen([GAMMU_SMSD, "-c", str(self.rc), "--pid", str(self.pid)],
                                        stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        waiting = threading.Event()
        while "Starting phone communication" not in self.log():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SmsdError(f"gammu-smsd did not start (see {self.root / 'smsd.log'})")
            waiting.wait(0.02)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def log(self) -> str:
        path = self.root / "smsd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def receive(self, sender: str, text: str) -> None:
        """A text from ``sender`` arrives at the dummy phone."""
        n = next(_SEQ)
        hex_text = text.encode("utf-16-be").hex().upper()
        hex_number = sender.encode("utf-16-be").hex().upper()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        body = (f'[SMSBackup000]\nPDU = Deliver\nDateTime = {stamp}\nSMSCDateTime = {stamp}\nState = UnRead\n'
                f'Number = "{sender}"\nNumberUnicode = {hex_number}\nName = ""\nNameUnicode = \n'
                f'Text00 = {hex_text}\nCoding = Unicode_No_Compression\nFolder = 1\nLength = {len(text)}\n'
                f'Class = -1\nReplySMSC = False\nRejectDuplicates = False\nReplaceMessage = 0\n'
                f'MessageReference = 0\n')
        tmp = self.root / f"incoming-{n}.tmp"
        tmp.write_text(body, encoding="utf-8")
        tmp.replace(self.phone / "sms" / "1" / str(n))

    def sent(self) -> list[str]:
        """The file names gammu-smsd sent, one per transmission, in order."""
        return self.ledger.read_text().split() if self.ledger.exists() else []

    def texts(self) -> list[tuple[str, str]]:
        """(number, text) of every sent text, in order."""
        found = []
        for path in sorted(self.copies.iterdir()):
            number = path.name.split("_")[3]
            found.append((number, path.read_text(encoding="utf-8")))
        return found

