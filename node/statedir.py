"""Who may touch what in a node's state directory: the daemon owns it, the page writes only ``db/``.

On a node, the daemon runs as ``silbato`` and the page as ``silbato-web`` (primary group
``silbato``), so a flaw in the page cannot become the node:

- ``<state_dir>`` (0750, ``silbato``): the node key (0600), the roster, the wipe request.
  The page's user may look in, never write: it cannot ask for a wipe or replace the roster;
- ``<state_dir>/db`` (0770, group ``silbato``) and the database in it (0660): the page reads
  the alerts and writes captains' requests, notes and sessions. SQLite gives its ``-wal``
  and ``-shm`` files the database's own mode; both users' primary group is ``silbato``;
- ``<state_dir>/evidence`` (0770, group ``silbato``): sealed evidence. The page writes each item
  (0640) as it streams in, to the organizers' age recipients; the daemon reads it to chain it in
  the signed manifest and deletes it after ``evidence.keep``. Neither can open it. The page
  could delete or replace an item: the signed manifest names the SHA-256 of each, so a bundle
  shows it (``silbato verify``);
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

DB_DIR_MODE = 0o770   # no setgid: both users' primary group is silbato (and RestrictSUIDSGID= forbids it)
DB_MODE = 0o660
SECRET_MODES = 0o077  # no group or other bit on a key


def prepare_db_dir(config, *, adopt: bool = True) -> Path:
    """Make ``db/`` (0770, the state directory's owner) and, with ``adopt``, move a database from
    before it existed into it. Returns the folder.

    Called by the daemon before it opens its store (which adopts), and by ``silbato install`` and
    ``update`` (which do not: the running services still use the old place until they restart).
    Never raises for a folder the caller cannot change (a test's, a laptop's): it logs.
    """
    folder = config.db_dir
    folder.mkdir(parents=True, exist_ok=True)
    _fix(folder, DB_DIR_MODE, _state_owner(config), directory=True)
    if adopt:
        adopt_legacy_db(config)
    return folder


def prepare_evidence_dir(config) -> Path:
    """Make ``evidence/`` (0770, the state directory's owner), where the page writes sealed items.

    Called by the daemon at start and by ``silbato install``; never raises (it logs).
    """
    folder = config.evidence_dir
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("could not make %s: %s", folder, exc.strerror)
        return folder
    _fix(folder, DB_DIR_MODE, _state_owner(config), directory=True)
    return folder


def share_db(config) -> None:
    """The database and its ``-wal`` and ``-shm`` are 0660, so the page's user, in the group, can write them.

    Never call it in a process that has the database open (see ``open_store``).

    Run as root (``silbato captain add``, ``silbato migrate`` before the daemon ever ran), they are
    also given to the state directory's owner, or the daemon could not write them. Only these three
    names are touched, and never through a link: the page's user may write ``db/``, so it could put
    a symbolic link to ``node.key`` in the place of ``silbato.db-shm``.
    """
    for suffix in ("", "-wal", "-shm"):
        _fix(config.db_file.with_name(config.db_file.name + suffix), DB_MODE, _state_owner(config))


def open_store(config, **kwargs):
    """The node's store, its folder and files shared as this module says (the CLI and the daemon).

    The files are set up *before* SQLite opens them, never after: closing any other descriptor
    of a database file drops every POSIX lock this process holds on it, and another process
    would then reset the shared memory under this one (SIGBUS). A new database starts as an
    empty file made here with the right mode and owner; SQLite gives its ``-wal`` and ``-shm``
    the same.
    """
    from node.store import Store

    prepare_db_dir(config)
    _create_empty(config.db_file, _state_owner(config))
    share_db(config)
    return Store(config.db_file, **kwargs)


def _create_empty(path: Path, owner: tuple[int, int] | None) -> None:
    """An empty file (an empty SQLite database) at ``path``, 0660, unless there is one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, DB_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, DB_MODE)  # whatever the umask
        if owner is not None:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)


def adopt_legacy_db(config) -> bool:
    """Earlier installs kept the database at ``<state_dir>/silbato.db``: move it (with WAL and SHM) into ``db/``."""
    old = config.state_dir / config.db_file.name
    if not old.exists():
        return False
    if config.db_file.exists():
        log.warning("two databases: %s (an earlier install's) and %s (in use); the first is left alone: "
                    "move it aside or copy what you need from it", old, config.db_file)
        return False
    for suffix in ("", "-wal", "-shm"):  # the WAL may hold committed alerts: it moves with the file
        source = old.with_name(old.name + suffix)
        if source.exists():
            os.replace(source, config.db_file.with_name(config.db_file.name + suffix))
    log.warning("moved the database %s to %s (the page's user may write only that folder)", old, config.db_file)
    return True


def _state_owner(config) -> tuple[int, int] | None:
    """Root gives what it makes to the state directory's owner and group; anyone else changes no owner."""
    if os.geteuid() != 0:
        return None
    st = config.state_dir.stat()
    return st.st_uid, st.st_gid


def _fix(path: Path, mode: int, owner: tuple[int, int] | None, *, directory: bool = False) -> None:
    """Set ``path``'s mode (and owner): opened with ``O_NOFOLLOW``, and only if it is what it should be."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_DIRECTORY if directory else 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return
    except OSError as exc:
        log.warning("%s left alone: %s (a link, or not a %s?)", path, exc.strerror,
                    "folder" if directory else "file")
        return
    try:
        st = os.fstat(fd)
        kind_ok = stat.S_ISDIR(st.st_mode) if directory else (stat.S_ISREG(st.st_mode) and st.st_nlink == 1)
        if not kind_ok:
            log.warning("%s left alone: not a plain %s", path, "folder" if directory else "file with one name")
            return
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
        if stat.S_IMODE(st.st_mode) != mode:
            os.fchmod(fd, mode)
    except OSError as exc:
        log.warning("could not set mode %o on %s: %s", mode, path, exc)
    finally:
        os.close(fd)


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
