"""Live updates: the page's state, shared by every request of one app, pushed to open pages.

``Live`` keeps the newest *snapshot* of what the page shows. A snapshot is recomputed
when SQLite's ``PRAGMA data_version`` says another connection committed (checked on
every request, and every ``poll`` seconds while streams are open) or every ``recheck``
seconds (a building turns silent with no write), and gets a new version only when
what the page shows changed. Renders of a snapshot
are cached per language, so 200 open pages cost one render per language per change.

- ``GET /api/events``: server-sent events, the live document at once and on every change.
  Each stream holds one server thread, so at most ``LIVE_CLIENTS`` run at once; the
  next gets 503 and the page falls back to polling. Streams end after about
  ``STREAM_SECONDS`` and the browser reconnects, so a phone that left the Wi-Fi
  without closing its connection frees its slot.
- ``GET /api/live``: the same document once (``ETag``; 304 when unchanged), for polling.

While no stream is open there is no watcher thread: requests refresh the snapshot themselves.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable

from flask import Blueprint, Response, current_app, render_template, request, stream_with_context

from node.errors import StoreError
from node.store import Store
from web import data, i18n
from web.security import unavailable

log = logging.getLogger(__name__)

bp = Blueprint("live", __name__, url_prefix="/api")

GONE_CHECK = 1.0  # seconds between checks that a live reader is still connected


class Snapshot:
    """One version of the page's state, with its renders cached by key."""

    MAX_RENDERS = 64

    def __init__(self, version: str, doc: dict):
        self.version = version
        self.doc = doc
        self._renders: dict = {}
        self._lock = threading.Lock()

    def rendered(self, key, make: Callable[[], str]) -> str:
        with self._lock:
            if key not in self._renders:
                if len(self._renders) >= self.MAX_RENDERS:
                    self._renders.clear()
                self._renders[key] = make()
            return self._renders[key]


class Live:
    """The newest snapshot of one node's page, and the slots of its live clients."""

    def __init__(self, database: str, *, clock: Callable[[], float], silent_after: float, slots: int,
                 poll: float = 0.25, recheck: float = 10.0):
        self.database = database
        self.clock = clock
        self.silent_after = silent_after
        self.slots = slots
        self.poll = poll
        self.recheck = recheck
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._snapshot: Snapshot | None = None
        self._store: Store | None = None
        self._data_version: int | None = None
        self._computed = float("-inf")  # monotonic seconds
        self._problem: str | None = None  # the last refresh's error, logged once
        self._clients = 0
        self._watcher: threading.Thread | None = None
        self._closing = threading.Event()

    @property
    def clients(self) -> int:
        return self._clients

    def current(self) -> Snapshot:
        """The newest snapshot; raises ``StoreError`` if the database was never readable."""
        with self._lock:
            self._refresh()  # one PRAGMA unless something changed
            if self._snapshot is None:
                raise StoreError(f"{self.database}: not readable yet")
            return self._snapshot

    def _refresh(self) -> None:
        """Recompute the snapshot if the database changed (call with the lock held)."""
        checked = time.monotonic()
        try:
            if self._store is None:
                self._store = Store(self.database, readonly=True)
            data_version = self._store.pragma("data_version")
            if (self._snapshot is not None and data_version == self._data_version
                    and checked - self._computed < self.recheck):
                return
            doc = data.state_document(self._store, self.clock(), self.silent_after)
        except (StoreError, sqlite3.Error) as exc:
            if self._store is not None:
                self._store.close()
                self._store = None
            if str(exc) != self._problem:  # once, not at every request while the node is down
                self._problem = str(exc)
                if Path(self.database).exists():  # else the page says the node is not running (data.py)
                    log.warning("live state not refreshed: %s", exc)
            return  # keep serving the last snapshot
        if self._problem is not None:
            log.info("live state readable again")
            self._problem = None
        self._data_version, self._computed = data_version, checked
        version = data.digest(doc)
        if self._snapshot is None or version != self._snapshot.version:
            self._snapshot = Snapshot(version, doc)
            self._changed.notify_all()

    def join(self) -> bool:
        """Take a live client's slot (and start the watcher); ``False`` if all are taken."""
        with self._lock:
            if self._closing.is_set() or self._clients >= self.slots:
                return False
            self._clients += 1
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="live-watcher", daemon=True)
                self._watcher.start()
            return True

    def leave(self) -> None:
        with self._lock:
            self._clients -= 1

    def wait(self, version: str, timeout: float) -> Snapshot | None:
        """The snapshot once its version differs from ``version``, or after ``timeout`` seconds.

        ``None`` once the app is closing.
        """
        with self._changed:
            self._changed.wait_for(lambda: self._closing.is_set() or (
                self._snapshot is not None and self._snapshot.version != version), timeout)
            return None if self._closing.is_set() else self._snapshot

    def _watch(self) -> None:
        while not self._closing.is_set():
            with self._lock:
                if self._clients <= 0:
                    self._watcher = None
                    return
                try:
                    self._refresh()
                except Exception:
                    log.exception("live watcher failed; it goes on")
            self._closing.wait(self.poll)

    def close(self) -> None:
        """End every stream and the watcher (the server is stopping)."""
        with self._lock:
            self._closing.set()
            self._changed.notify_all()
            watcher = self._watcher
        if watcher is not None:
            watcher.join(timeout=5)
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def live() -> Live:
    return current_app.extensions["silbato.live"]


def current() -> Snapshot:
    """The newest snapshot, or 503 if the node's database cannot be read."""
    try:
        return live().current()
    except StoreError as exc:
        data.store_unavailable(exc)


def payload(snapshot: Snapshot) -> str:
    """The live document as JSON in the reader's language: version, banner state, time and HTML."""
    def make() -> str:
        doc = snapshot.doc
        html = render_template("_live.html", doc=doc, now=doc["now"])
        return json.dumps({"version": snapshot.version, "state": doc["banner"]["state"], "now": doc["now"],
                           "html": html}, separators=(",", ":"), ensure_ascii=False)
    return snapshot.rendered(("live", i18n.lang()), make)


@bp.get("/live")
def live_document():
    """The live document once, as JSON; 304 while it has not changed."""
    snapshot = current()
    response = Response(payload(snapshot), mimetype="application/json")
    response.set_etag(f"{snapshot.version}-{i18n.lang()}")
    response.cache_control.no_cache = True
    response.vary.add("Cookie")
    response.vary.add("Accept-Language")
    return response.make_conditional(request)


@bp.get("/events")
def events():
    """Server-sent events: the live document now and after every change (``text/event-stream``)."""
    current()  # 503 before streaming if the database cannot be read
    hub = live()
    if not hub.join():
        return unavailable("too many live pages are open; this page checks every 15 seconds instead", 15)
    i18n.lang()  # chosen now, while the request's cookies and headers are at hand
    last = request.headers.get("Last-Event-ID", "")
    seconds = current_app.config["STREAM_SECONDS"] * random.uniform(0.8, 1.2)  # spread the reconnects
    keepalive = current_app.config["KEEPALIVE"]

    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            hub.leave()

    # waitress tells when the reader closed the connection (see web.server); other servers do not
    gone = request.environ.get("waitress.client_disconnected", lambda: False)

    def stream():
        try:
            yield "retry: 3000\n\n"
            now = time.monotonic()
            version, end, next_keepalive = last, now + seconds, now + keepalive
            while (left := end - time.monotonic()) > 0:
                snapshot = hub.wait(version, max(0.0, min(left, GONE_CHECK, next_keepalive - time.monotonic())))
                if snapshot is None:
                    return
                if snapshot.version != version:
                    version = snapshot.version
                    next_keepalive = time.monotonic() + keepalive
                    yield f"id: {version}\nevent: state\ndata: {payload(snapshot)}\n\n"
                elif gone():
                    return  # the slot frees now, not at the next keep-alive
                elif time.monotonic() >= next_keepalive:
                    next_keepalive = time.monotonic() + keepalive
                    yield ": keepalive\n\n"  # also finds out, by failing, that a vanished reader has gone
        finally:
            release()

    response = Response(stream_with_context(stream()), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"
    response.call_on_close(release)  # also when the stream never started
    return response
