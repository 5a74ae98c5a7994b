"""``silbato run``: the node daemon as a service. Signals, sd_notify, the watchdog, the main loop.

Under systemd (``Type=notify``) ``run`` sends READY=1 once the store, the lifecycle and
the hardware are up, and WATCHDOG=1 only while ``health_problems`` finds none.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from node.config import Config
from node.daemon.node import Node
from node.radio.link import Link, MeshtasticLink, NullLink
from node.service import Notifier

log = logging.getLogger(__name__)

# Captains' requests (written by the web process) are polled every REQUEST_POLL seconds
# by ``run``, and refused when older than store.REQUEST_TTL.
REQUEST_POLL = 0.2   # and the air chores (Node.air_tick, every node.daemon.node.AIR_EVERY) with them
TICK_EVERY = 1.0   # seconds between two ``Node.tick``s
WIPED_EXIT = 3     # the exit code after a wipe: without its key the node cannot start again


def make_link(config: Config) -> Link:
    """The radio link the settings ask for: serial, TCP, or none."""
    if config["radio.port"] or config["radio.tcp"]:
        return MeshtasticLink(port=config["radio.port"], tcp=config["radio.tcp"], channel=config["radio.channel"],
                              hop_limit=config["radio.hop_limit"])
    return NullLink()


def health_problems(node: Node, *, lock_timeout: float = 5.0) -> list[str]:
    """Why the watchdog must not be pinged now: the radio reader, the GPIO loop or the database.

    Empty when all three answer. A radio that is merely unplugged is not a problem here
    (its reader is alive and looking for it; the page shows TROUBLE): systemd restarting
    the daemon would not bring it back. ``lock_timeout`` is seconds.
    """
    problems = []
    if not node.link.alive:
        problems.append("the radio reader has stopped")
    try:
        node.hardware.button.is_pressed  # reads the pin through the GPIO chip
    except Exception as exc:
        problems.append(f"GPIO does not answer: {exc}")
    if not node.lock.acquire(timeout=lock_timeout):
        problems.append(f"the node has been busy for {lock_timeout:.0f} s")
        return problems
    try:
        node.store.db.execute("SELECT count(*) FROM meta").fetchone()
    except Exception as exc:
        problems.append(f"the database does not answer: {exc}")
    finally:
        node.lock.release()
    return problems


def run(config: Config, *, stopping: threading.Event | None = None, link: Link | None = None,
        notifier: Notifier | None = None, pin_factory=None) -> int:
    """``silbato run``: the node daemon until SIGTERM or SIGINT. Returns the exit code."""
    from node import __version__

    stopping = stopping or threading.Event()
    link = link or make_link(config)
    notifier = notifier or Notifier.from_environment()

    def on_hangup(signum, _frame):
        log.warning("received SIGHUP (the radio's serial port hung up?); the node goes on")

    def on_signal(signum, _frame):
        log.info("received %s, stopping", signal.Signals(signum).name)
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        # The meshtastic library opens the serial port without O_NOCTTY, so under systemd (a
        # session leader with no terminal) the radio becomes the daemon's controlling terminal,
        # and unplugging it sends SIGHUP. That is a radio trouble, which the link handles.
        signal.signal(signal.SIGHUP, on_hangup)
    node = Node(config, link=link, pin_factory=pin_factory).start()
    # For 'silbato status': when and as which process the daemon runs, so that it can tell a
    # daemon started by hand from none at all. The pid is cleared at a clean stop.
    _record(node, daemon_started_at=repr(time.time()), daemon_version=__version__, daemon_pid=str(os.getpid()))
    notifier.ready(f"node {node.id}: store, lifecycle and hardware up")
    next_tick = time.monotonic() + TICK_EVERY
    reported: list[str] = []
    try:
        while not stopping.wait(REQUEST_POLL):
            if node.wipe_if_asked():  # 'silbato wipe': outside the node's lock, so the sender can tell the block
                pass
            elif time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_EVERY
                node.tick()
            else:
                node.process_requests()  # a captain's click is acted on within REQUEST_POLL seconds
                node.air_tick()          # relays, receipts, heartbeats at their random moments, not the tick's
            if node.wiped:
                log.critical("node wiped; the daemon exits and cannot start again without a new key")
                return WIPED_EXIT
            if notifier.watchdog_due():
                reported = _watchdog(node, notifier, reported)
    finally:
        notifier.stopping()
        if not node.wiped:
            _record(node, daemon_pid="")
        node.stop()
        log.info("node stopped")
    return 0


def _record(node: Node, **meta: str) -> None:
    """Write ``meta`` to the store's meta table; a full disk must not stop the node."""
    try:
        with node.lock:
            for key, value in meta.items():
                node.store.set_meta(key, value)
    except Exception:
        log.exception("could not record %s", ", ".join(meta))


def _watchdog(node: Node, notifier: Notifier, reported: list[str]) -> list[str]:
    """Ping the watchdog if the node is healthy; log a change of health. Returns the problems now."""
    problems = health_problems(node)
    if problems != reported:
        if problems:
            log.error("unhealthy, not pinging the watchdog: %s", "; ".join(problems))
        else:
            log.info("healthy again")
    if problems:
        notifier.status("unhealthy: " + "; ".join(problems))
    else:
        notifier.ping()
        notifier.status(f"node {node.id}: healthy")
    return problems
