"""Evidence: the daemon checks each sealed item the page wrote and chains it into the incident's manifest.

The page (``web/evidence.py``) writes ``<state_dir>/evidence/<item>.age`` and ``.meta.age``
and a pending row with their hashes. Here, once a tick, each pending row is checked against
the files themselves (the page's user could write anything in that row): both files are
there, plain files, of the sizes and SHA-256 the row says. Then its entry is signed and
appended to the incident's chain (``node.evidence.manifest``), and the incident's head is
signed again. A row that does not check is refused, with the reason, and logged. The
plaintext's hash cannot be checked (the node cannot open the item): it is the page's word.

Hashing a 500 MB video takes seconds on a Pi, and the tick runs under the node's lock: so once
``start()`` is called (the daemon does) the files are hashed on a thread of their own, the
*checker*, with no lock held, and a later tick chains what it found. Alerts never wait for a
hash. A row changed after it was handed to the checker is checked again. Without ``start()``
(the simulation, on virtual time) the tick hashes inline.

An item an organizer pulled (``silbato evidence release``, run by ``evidence pull``) gets a
signed ``pulled`` entry in the same chain, so later bundles show it pulled rather than removed.

Each incident's head (its transition frames and the chain's tip) is signed again whenever
either changes. Sealed items older than ``evidence.keep`` are deleted with their rows and
the incident's manifest, once every ``PURGE_EVERY`` seconds; so are temporary files left by
a page that stopped mid-upload.
"""

from __future__ import annotations

import logging
import os
import queue
import stat
import threading
import time
from pathlib import Path

from node.evidence import manifest, seal
from node.store import Store

log = logging.getLogger(__name__)

PURGE_EVERY = 3600.0   # seconds between two purges of old evidence
PART_GRACE = 86400.0   # seconds after which a temporary file is a page's leftover, not an upload in progress
CHECKER_NICE = 19      # the checker thread's nice value: hashing a video yields to everything else
CHECKER_JOIN = 5.0     # seconds ``stop`` waits for the checker thread (it stops between two 1 MiB reads)


class EvidenceDesk:
    """Chains pending evidence and keeps each incident's head signed. Callers hold the node's lock."""

    def __init__(self, me: int, block: str, store: Store, key, folder: Path, *, keep: float, max_item: int):
        self.me, self.block, self.store, self.key, self.folder = me, block, store, key, Path(folder)
        self.keep, self.max_item = keep, max_item
        self._heads: dict[str, dict] = {}
        self._last_purge = 0.0
        self.hash_file = _hash_plain_file  # (path, stopping) -> (size, SHA-256); a seam for tests
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._todo: queue.Queue[dict | None] = queue.Queue()
        self._lock = threading.Lock()     # guards the two below (the checker and the tick share them)
        self._handed: set[str] = set()    # item ids handed to the checker, not yet found
        self._found: dict[str, tuple[dict, str]] = {}  # item id -> (the row as checked, reason or "")

    # -- the checker thread ------------------------------------------------------------------

    def start(self) -> None:
        """Hash the page's files on a thread of their own from now on (the daemon; not the simulation)."""
        self._thread = threading.Thread(target=self._checker, name="evidence-checker", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._todo.put(None)
        if self._thread is not None:
            self._thread.join(timeout=CHECKER_JOIN)

    def _checker(self) -> None:
        try:  # the lowest CPU priority for this thread alone (Linux): the alert threads come first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), CHECKER_NICE)
        except (AttributeError, OSError) as exc:
            log.debug("evidence checker keeps its priority: %s", exc)
        while not self._stopping.is_set():
            row = self._todo.get()
            if row is None:
                break
            try:
                reason = self._check_files(row)
            except _Stopped:
                break
            except Exception as exc:  # one bad file never stops the checker
                log.exception("evidence %s: the check failed", row["item_id"])
                reason = f"the check failed: {exc}"
            with self._lock:
                self._handed.discard(row["item_id"])
                self._found[row["item_id"]] = (row, reason)

    def _checked(self, row: dict) -> str | None:
        """The reason to refuse ``row`` ("" to chain it), or ``None`` while the checker is at it."""
        reason = self._check_row(row)
        if reason or self._thread is None:
            return reason or self._check_files(row)
        item = row["item_id"]
        with self._lock:
            found = self._found.pop(item, None)
            if found is not None and found[0] == row:
                return found[1]
            if item not in self._handed:  # new, or changed since it was checked: (again) to the checker
                self._handed.add(item)
                self._todo.put(dict(row))
        return None

    def tick(self, now: float) -> None:
        self.chain(now)
        self.record_pulled(now)
        self.sign_heads()
        if now - self._last_purge >= PURGE_EVERY:
            self._last_purge = now
            self.purge(now)

    def chain(self, now: float) -> int:
        """Check and chain every pending item; returns how many were chained."""
        done = 0
        for row in self.store.pending_evidence():
            reason = self._checked(dict(row))
            if reason is None:
                continue  # being hashed: a later tick chains it
            if reason:
                log.warning("evidence %s refused: %s", row["item_id"], reason)
                with self.store.transaction():
                    self.store.finish_evidence(row["item_id"], "refused", reason)
                continue
            incident = self.store.resolve(row["alert_id"])
            chain = self.store.manifest(incident)
            prev = chain[-1]["hash"] if chain else manifest.genesis(self.block, incident)
            body = manifest.entry(block=self.block, incident=incident, seq=len(chain), prev=prev, signer=self.me,
                                  row=row)
            with self.store.transaction():
                self.store.append_manifest(incident, len(chain), row["item_id"], manifest.canonical(body).decode(),
                                           manifest.sha256(manifest.canonical(body)),
                                           manifest.sign(manifest.ENTRY_DOMAIN, body, self.key))
                self.store.finish_evidence(row["item_id"], "chained")
            log.info("evidence %s chained: incident %s, entry %d", row["item_id"], incident, len(chain))
            done += 1
        return done

    def record_pulled(self, now: float) -> int:
        """Chain a signed ``pulled`` entry for each item ``silbato evidence release`` let go; returns how many.

        The release deleted its files after checking them against the item's entry (and if it
        stopped before, they are deleted here): the node keeps only the record that it was pulled.
        """
        done = 0
        for row in self.store.released_evidence():
            for suffix in (seal.SUFFIX, seal.META_SUFFIX):
                (self.folder / f"{row['item_id']}{suffix}").unlink(missing_ok=True)
            incident = row["alert_id"]
            chain = self.store.manifest(incident)
            prev = chain[-1]["hash"] if chain else manifest.genesis(self.block, incident)
            body = manifest.pulled(block=self.block, incident=incident, seq=len(chain), prev=prev, signer=self.me,
                                   item=row["item_id"], pulled_at=now)
            with self.store.transaction():
                self.store.append_manifest(incident, len(chain), row["item_id"], manifest.canonical(body).decode(),
                                           manifest.sha256(manifest.canonical(body)),
                                           manifest.sign(manifest.ENTRY_DOMAIN, body, self.key))
                self.store.finish_evidence(row["item_id"], "pulled", row["reason"])
            log.info("evidence %s pulled: recorded in incident %s, entry %d", row["item_id"], incident, len(chain))
            done += 1
        return done

    def _check_row(self, row: dict) -> str:
        """What can be checked at once, under the node's lock (the store is read)."""
        if not _is_item_id(row["item_id"]):
            return "not an item id"
        if self.store.get_alert(row["alert_id"]) is None:
            return "no such incident"
        if not isinstance(row["size"], int) or not 0 <= row["size"] <= self.max_item:
            return "size out of bounds"
        return ""

    def _check_files(self, row: dict) -> str:
        """Both files against the row: slow for a large item, and touches no store (the checker runs it)."""
        for suffix, size, digest in ((seal.SUFFIX, row["sealed_size"], row["sealed_sha256"]),
                                     (seal.META_SUFFIX, None, row["meta_sha256"])):
            path = self.folder / f"{row['item_id']}{suffix}"
            try:
                found_size, found = self.hash_file(path, self._stopping)
            except OSError as exc:
                return f"{path.name}: {exc.strerror or exc}"
            if found != digest or size is not None and found_size != size:
                return f"{path.name}: its SHA-256 or size is not what the page recorded"
        return ""

    def sign_heads(self) -> int:
        """Sign again the head of each incident whose frames or chain changed; returns how many."""
        signed = 0
        for alert in self.store.alerts(limit=1000):
            chain = self.store.manifest(alert.id)
            body = manifest.head(block=self.block, incident=alert.id, frames=self.store.transition_frames(alert.id),
                                 entries=len(chain), tip=chain[-1]["hash"] if chain else
                                 manifest.genesis(self.block, alert.id), signer=self.me)
            if self._heads.get(alert.id) == body:
                continue
            stored = self.store.manifest_head(alert.id)
            if stored is None or stored["head"] != manifest.canonical(body).decode():
                with self.store.transaction():
                    self.store.set_manifest_head(alert.id, manifest.canonical(body).decode(),
                                                 manifest.sign(manifest.HEAD_DOMAIN, body, self.key))
                signed += 1
            self._heads[alert.id] = body
        return signed

    def purge(self, now: float) -> int:
        """Delete sealed items older than ``evidence.keep`` and a page's stale temporary files."""
        gone = self.store.purge_evidence(now - self.keep)
        for item_id in gone:
            for suffix in (seal.SUFFIX, seal.META_SUFFIX):
                (self.folder / f"{item_id}{suffix}").unlink(missing_ok=True)
        wall = time.time()  # a file's time is the kernel's clock, not the node's (which may be ahead, or simulated)
        try:
            for entry in os.scandir(self.folder):
                if entry.name.startswith(seal.PART_PREFIX) and wall - entry.stat(follow_symlinks=False).st_mtime > PART_GRACE:
                    os.unlink(entry.path)
        except OSError as exc:
            log.warning("could not clean %s: %s", self.folder, exc)
        if gone:
            log.info("evidence purge removed %d sealed items older than evidence.keep", len(gone))
        return len(gone)


def _is_item_id(value) -> bool:
    return isinstance(value, str) and len(value) == 32 and all(c in "0123456789abcdef" for c in value)


class _Stopped(Exception):
    """The daemon is stopping: a hash in progress is dropped (the row stays pending)."""


def _hash_plain_file(path: Path, stopping: threading.Event | None = None) -> tuple[int, str]:
    """(size, SHA-256) of a plain file, never through a link (the page's user may write the folder)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise OSError(0, "not a plain file")
        h, size = manifest.hashlib.sha256(), 0
        while chunk := fh.read(1 << 20):
            if stopping is not None and stopping.is_set():
                raise _Stopped()
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()
