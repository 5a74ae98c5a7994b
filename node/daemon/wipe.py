"""Wiping a node that may be seized: destroy its key, its database and its captains' accounts.

``node.shred.destroy(paths)`` overwrites each file with random bytes, syncs it and unlinks it. The
daemon wipes itself (``Node.wipe``: it first tells the block in a last heartbeat); the CLI
asks a running daemon to, and wipes the files itself if none answers.

The CLI asks by creating ``<state_dir>/wipe-requested`` (``ask``): a file in the folder
only the daemon's user and root may write, so the page's user, who may write the
database, can never ask for a wipe. The buttons ask the daemon directly.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

WIPE_WITHIN = 10.0  # seconds: the promise for the whole wipe


def node_files(config) -> list[Path]:
    """The files that identify a node or hold what it knows: its key, the database (with WAL and
    SHM: alerts, notes, captains' accounts) and the block's Meshtastic channel key."""
    db = Path(config.db_file)
    return [Path(config.key_file), db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
            Path(config["radio.channel_key_file"]), request_file(config), counter_floor(config),
            clock_floor(config)]


def counter_floor(config) -> Path:
    """The signer's counter floor (``node.daemon.signer``), beyond the page's reach."""
    return Path(config.state_dir) / "counter"


def clock_floor(config) -> Path:
    """The block clock's floor and offset (``node.daemon.signer``), beyond the page's reach."""
    return Path(config.state_dir) / "clock"


def request_file(config) -> Path:
    """Where the CLI asks a running daemon to wipe (see the module docstring)."""
    return Path(config.state_dir) / "wipe-requested"


def ask(config) -> None:
    """Ask a running daemon to wipe the node; it checks every ``REQUEST_POLL`` seconds."""
    path = request_file(config)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        if os.geteuid() == 0:  # the daemon's, so that it can overwrite it with the rest
            owner = Path(config.state_dir).stat()
            os.fchown(fd, owner.st_uid, owner.st_gid)
    finally:
        os.close(fd)


def requested(config) -> bool:
    return request_file(config).exists()
