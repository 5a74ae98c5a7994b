"""Talking to systemd as a service: sd_notify messages, the watchdog, and journald log lines.

``silbato-node.service`` is ``Type=notify`` with ``WatchdogSec=``. systemd passes two
environment variables:

- ``NOTIFY_SOCKET``: a datagram socket (a path, or ``@name`` in the abstract namespace)
  that takes ``READY=1``, ``STATUS=...``, ``STOPPING=1`` and ``WATCHDOG=1``, one message
  per datagram (the sd_notify protocol; no library needed);
- ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``): microseconds after which systemd kills and
  restarts a service that has not sent ``WATCHDOG=1``.

Outside systemd neither is set and every call here does nothing.

Log lines: under systemd, stderr goes to journald (``JOURNAL_STREAM`` is set), which stamps
the time itself. ``JournalFormatter`` prefixes each line with its syslog priority
(``<3>`` error ... ``<7>`` debug) so ``journalctl -p warning`` works, and keeps every event
on one line: a traceback is folded into it rather than spread over many entries.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)


def _address(path: str) -> str:
    """``@name`` is a socket in the abstract namespace, which starts with a NUL byte."""
    return "\0" + path[1:] if path.startswith("@") else path


class Notifier:
    """Sends sd_notify messages to ``socket_path``; with none, ``send`` does nothing.

    ``watchdog_interval`` (seconds) is how often ``WATCHDOG=1`` must arrive: half of
    systemd's ``WATCHDOG_USEC``, as sd_watchdog_enabled(3) advises; ``None`` when systemd
    runs no watchdog for this process.
    """

    def __init__(self, socket_path: str | None = None, *, watchdog_usec: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.socket_path = socket_path or None
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._clock = clock
        self._last_ping: float | None = None
        self._status = ""

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> "Notifier":
        """The notifier systemd asked for through ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC``."""
        env = os.environ if env is None else env
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        watchdog = int(usec) if usec.isdigit() and (not pid or pid == str(os.getpid())) else None
        return cls(env.get("NOTIFY_SOCKET"), watchdog_usec=watchdog)

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, *fields: str) -> bool:
        """Send ``fields`` (``"READY=1"``, ``"STATUS=..."``) as one datagram; False if not sent."""
        if self.socket_path is None:
            return False
        message = "\n".join(fields).encode("utf-8")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.connect(_address(self.socket_path))
                sock.sendall(message)
        except OSError as exc:
            log.warning("cannot notify systemd at %s: %s", self.socket_path, exc)
            return False
        return True

    def ready(self, status: str) -> None:
        """Start-up is complete: systemd marks the unit active (and ``silbato update`` sees it)."""
        self._status = status
        self.send("READY=1", f"STATUS={status}")
        self._last_ping = self._clock()

    def status(self, status: str) -> None:
        """Set the one-line status ``systemctl status`` shows; sent only when it changes."""
        if status != self._status:
            self._status = status
            self.send(f"STATUS={status}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog_due(self) -> bool:
        """Whether a ``WATCHDOG=1`` is due now (always False without a watchdog)."""
        if self.watchdog_interval is None or self.socket_path is None:
            return False
        return self._last_ping is None or self._clock() - self._last_ping >= self.watchdog_interval

    def ping(self) -> None:
        """Tell systemd the service is healthy. Call only after checking that it is."""
        if self.send("WATCHDOG=1"):
            self._last_ping = self._clock()


# Python's levels to syslog priorities, which journald reads from a "<N>" prefix.
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


class JournalFormatter(logging.Formatter):
    """``<6>node.daemon.desk: alert 1-7 reported by this node``: priority, logger, message, one line."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)  # with the traceback, if any
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>" + text.replace("\r", "").replace("\n", " | ")


def under_journald(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """Whether ``fd`` (stderr) goes to journald: systemd sets ``JOURNAL_STREAM`` to its
    ``device:inode``, and a child whose stderr was redirected inherits the variable but not the stream."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return bool(value) and value == f"{st.st_dev}:{st.st_ino}"
