"""A Mosquitto broker on loopback, for ``silbato sim --blocks`` and the tests (never on a node).

``LocalBroker(root)`` writes ``root/mosquitto.conf`` (a listener on ``127.0.0.1:<port>``, anonymous
unless ``extra`` says otherwise, persistence in ``root``, so a restart keeps the sessions and
retained messages as a real broker configured with ``persistence true`` does), starts
``/usr/sbin/mosquitto -c`` on it and returns once it says it is running (its log line, read from its
output: an event, not a guess). ``stop`` ends it (SIGTERM: it saves its state); ``start`` again
restarts it on the same port and state.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from node.errors import ListenError

log = logging.getLogger(__name__)

MOSQUITTO = "/usr/sbin/mosquitto"
STARTED = "running"  # mosquitto's "mosquitto version 2.0.11 running", once its listeners are open


def mosquitto_path() -> str | None:
    """The mosquitto binary, or None when it is not installed."""
    return MOSQUITTO if os.access(MOSQUITTO, os.X_OK) else shutil.which("mosquitto")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class LocalBroker:
    """Mosquitto on ``127.0.0.1:port`` (a free one unless given), its files under ``root``."""

    def __init__(self, root: Path, port: int | None = None, *, extra: str = "allow_anonymous true\n"):
        self.root = Path(root)
        self.port = port or free_port()
        self.extra = extra
        self.conf = self.root / "mosquitto.conf"
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []   # its log, for a failing test's message
        self._reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> "LocalBroker":
        binary = mosquitto_path()
        if binary is None:
            raise ListenError("mosquitto is not installed: 'apt-get install mosquitto' (Debian) to run a "
                              "neighborhood on this machine")
        self.root.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"listener {self.port} 127.0.0.1\n"
                             f"persistence true\npersistence_location {self.root}/\n"
                             "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n"
                             "log_type information\nlog_timestamp false\n"
                             # as root, mosquitto would switch to the user mosquitto, who cannot write root's files
                             + ("user root\n" if os.geteuid() == 0 else "") + self.extra)
        running = threading.Event()
        self.process = subprocess.Popen([binary, "-c", str(self.conf)], stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, cwd=self.root)
        self._reader = threading.Thread(target=self._read, args=(self.process, running), daemon=True,
                                        name=f"mosquitto-{self.port}")
        self._reader.start()
        if not running.wait(timeout) or self.process.poll() is not None:
            self.stop()
            said = " / ".join(self.lines[-3:]) or "nothing"
            raise ListenError(f"mosquitto did not start on {self.address}: it said {said}")
        return self

    def _read(self, process: subprocess.Popen, running: threading.Event) -> None:
        for line in process.stdout:
            line = line.rstrip()
            self.lines.append(line)
            if line.endswith(STARTED):
                running.set()
        running.set()  # it ended: start() looks at poll()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process and self.process.poll() is None else None

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(timeout=2)
        self.process = None

    def __enter__(self) -> "LocalBroker":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()
