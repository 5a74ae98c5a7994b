"""Who may touch what in a node's state directory: the daemon owns it, the page writes only ``db/``.

On a node, the daemon runs as ``silbato`` and the page as ``silbato-web`` (primary group
``silbato``), so a flaw in the page cannot become the node:

- ``<state_dir>`` (0750, ``silbato``): the node key (0600), the roster, the wipe request.
  The page's user may look in, never write: it cannot ask for a wipe or replace the roster;
- ``<state_dir>/db`` (2770, group ``silbato``) and the database in it (0660): the page reads
  the alerts and writes captains' requests, notes and sessions. SQLite gives its ``-wal``
  and ``-shm`` files the database's own mode, and the setgid folder its group;
- the block's channel key (``radio.channel_key_file``, 0600, ``root``) is read only by
  ``silbato radio configure``, as root.

``readable_by`` is the check ``silbato doctor`` and the tests make of that promise.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

DB_DIR_MODE = 0o2770
DB_MODE = 0o660
SECRET_MODES = 0o077  # no group or other bit on a key


def prepare_db_dir(config) -> Path:
    """Make ``db/`` (2770) and move a database from before it existed into it. Returns the folder.

    Called by the daemon before it opens its store and by ``silbato install``; never raises for a
    folder the caller cannot chmod (a test's or a laptop's), it logs.
    """
    folder = config.db_dir
    folder.mkdir(parents=True, exist_ok=True)
    group = config.state_dir.stat().st_gid   # the daemon's group, which the page's user has
    try:
        _give_to_state_owner(config, folder)  # made by root (silbato migrate, a test)
        if folder.stat().st_gid != group:
            os.chown(folder, -1, group)
    except OSError as exc:
        log.warning("could not give %s the owner of %s: %s", folder, config.state_dir, exc)
    _chmod(folder, DB_DIR_MODE)
    adopt_legacy_db(config)
    return folder


def share_db(config) -> None:
    """The database (once it exists) is 0660, so the page's user, in the group, can write it.

    Run as root (``silbato captain add``, ``silbato migrate`` before the daemon ever ran), the
    files are also given to the state directory's owner, or the daemon could not write them.
    """
    for suffix in ("", "-wal", "-shm"):
        path = config.db_file.with_name(config.db_file.name + suffix)
        if path.exists():
            _give_to_state_owner(config, path)
            _chmod(path, DB_MODE)


def open_store(config, **kwargs):
    """The node's store, its folder and files shared as this module says (the CLI and the daemon)."""
    from node.store import Store

    prepare_db_dir(config)
    store = Store(config.db_file, **kwargs)
    share_db(config)
    return store


def _give_to_state_owner(config, path: Path) -> None:
    if os.geteuid() != 0:
        return
    owner = config.state_dir.stat()
    st = path.stat()
    if (st.st_uid, st.st_gid) != (owner.st_uid, owner.st_gid):
        os.chown(path, owner.st_uid, owner.st_gid)


def adopt_legacy_db(config) -> bool:
    """Earlier installs kept the database at ``<state_dir>/silbato.db``: move it (with WAL and SHM) into ``db/``."""
    old = config.state_dir / config.db_file.name
    if not old.exists() or config.db_file.exists():
        return False
    for suffix in ("", "-wal", "-shm"):  # the WAL may hold committed alerts: it moves with the file
        source = old.with_name(old.name + suffix)
        if source.exists():
            os.replace(source, config.db_file.with_name(config.db_file.name + suffix))
    log.warning("moved the database %s to %s (the page's user may write only that folder)", old, config.db_file)
    return True


def _chmod(path: Path, mode: int) -> None:
    try:
        if stat.S_IMODE(path.stat().st_mode) != mode:
            os.chmod(path, mode)
    except OSError as exc:
        log.warning("could not set mode %o on %s: %s", mode, path, exc)


def readable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process of ``uid`` with groups ``gids`` could open ``path`` for reading (not root).

    The folders on the way must let it through, and the file's own bits let it read.
    """
    path = Path(path).absolute()
    try:
        for folder in reversed(path.parents):
            if not _allows(folder.stat(), uid, gids, stat.S_IXUSR, stat.S_IXGRP, stat.S_IXOTH):
                return False
        return _allows(path.stat(), uid, gids, stat.S_IRUSR, stat.S_IRGRP, stat.S_IROTH)
    except FileNotFoundError:
        return False


def _allows(st: os.stat_result, uid: int, gids: set[int], user_bit: int, group_bit: int, other_bit: int) -> bool:
    if st.st_uid == uid:
        return bool(st.st_mode & user_bit)
    if st.st_gid in gids:
        return bool(st.st_mode & group_bit)
    return bool(st.st_mode & other_bit)
