"""Captains' accounts: passwords, sessions and login throttling.

Accounts are made on the node (``silbato captain add NAME``); the web only checks them.
Passwords are hashed with Werkzeug's scrypt and are at least ``MIN_PASSWORD`` characters.

A login is a row in the store's ``sessions`` table, keyed by the SHA-256 of a random
token; the signed session cookie carries the token. So a copied cookie dies with its
row: at logout, at ``silbato captain remove`` or a new password, after ``SESSION_IDLE``
seconds unused, or 12 h (``PERMANENT_SESSION_LIFETIME``) after the login, on the node's clock.

Login throttling allows ``LOGIN_TRIES`` failed tries per ``LOGIN_WINDOW`` seconds per
account and per client address. A browser in which a captain has logged in before
carries a signed *device cookie* for that account: its tries count against its
address only, never against the account, so someone guessing at an account cannot
lock its captain out (OWASP's device-cookie scheme). Counts expire with the window.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import secrets
import threading
import time
import urllib.parse
from functools import wraps
from typing import Callable

from flask import abort, current_app, g, redirect, request, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.exceptions import HTTPException
from werkzeug.security import check_password_hash, generate_password_hash

from node.errors import StoreError
from node.store import SESSION_CLOCK_SLACK

MIN_PASSWORD = 8
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
LOGIN_TRIES = 10
LOGIN_WINDOW = 15 * 60.0
DEVICE_COOKIE = "silbato_device"
DEVICE_DAYS = 90
SESSION_TOUCH = 60.0  # seconds: a session's last use is written at most this often, not on every click

# scrypt takes 32 MB and a noticeable part of a second on a Pi: one check at a time keeps
# a burst of logins from eating the node's memory.
_HASH_LOCK = threading.Lock()
_DUMMY_HASH: list[str] = []


def valid_name(name: str) -> bool:
    """A captain's name: 1-32 letters, digits, ``.``, ``_`` or ``-`` (a handle, not a real name)."""
    return bool(NAME.fullmatch(name or ""))


def hash_password(password: str) -> str:
    """Werkzeug scrypt hash of ``password``; raises ``ValueError`` if it is too short."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return generate_password_hash(password, method="scrypt")


def fingerprint(password_hash: str) -> str:
    """Kept in the session: a new password or a removed account ends every session."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


class Throttle:
    """Failed logins per account and per address in a sliding window (see the module docstring)."""

    def __init__(self, tries: int = LOGIN_TRIES, window: float = LOGIN_WINDOW, *,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000):
        self.tries, self.window, self.clock, self.max_keys = tries, window, clock, max_keys
        self._failures: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> collections.deque[float]:
        times = self._failures.get(key)
        if times is None:
            return collections.deque()
        while times and now - times[0] >= self.window:
            times.popleft()
        if not times:
            del self._failures[key]
        return times

    def retry_after(self, account: str, address: str, trusted: bool) -> float:
        """Seconds until a try is allowed (0: now). ``trusted``: the browser has this account's device cookie."""
        now = self.clock()
        keys = [("address", address)] + ([] if trusted else [("account", account)])
        with self._lock:
            waits = [self.window - (now - times[0]) for key in keys
                     if len(times := self._recent(key, now)) >= self.tries]
        return max(waits, default=0.0)

    def failed(self, account: str, address: str, trusted: bool) -> None:
        now = self.clock()
        keys = [("address", address)] + ([] if trusted else [("account", account)])
        with self._lock:
            if len(self._failures) >= self.max_keys:
                for key in list(self._failures):
                    self._recent(key, now)  # drops keys whose window has passed
            for key in keys:
                if key in self._failures or len(self._failures) < self.max_keys:
                    self._failures.setdefault(key, collections.deque()).append(now)


def _devices() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.secret_key, salt="silbato-device")


def device_trusts(name: str) -> bool:
    """Whether this browser holds a device cookie for captain ``name``."""
    token = request.cookies.get(DEVICE_COOKIE, "")
    try:
        return bool(token) and _devices().loads(token, max_age=DEVICE_DAYS * 86400) == name
    except BadSignature:
        return False


def device_cookie(response, name: str) -> None:
    response.set_cookie(DEVICE_COOKIE, _devices().dumps(name), max_age=DEVICE_DAYS * 86400,
                        httponly=True, samesite="Lax", path="/captain")


def check(store, name: str, password: str) -> dict | None:
    """The captain's row if ``password`` is right; the same work is done for an unknown name."""
    row = store.captain(name) if valid_name(name) else None
    with _HASH_LOCK:
        if row is None:
            if not _DUMMY_HASH:
                _DUMMY_HASH.append(generate_password_hash("not a password", method="scrypt"))
            check_password_hash(_DUMMY_HASH[0], password)
            return None
        return row if check_password_hash(row["password_hash"], password) else None


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def log_in(row: dict) -> None:
    """Start a session for captain ``row``: a new row in the store, its token in the cookie."""
    from web import data

    token = secrets.token_urlsafe(32)
    now = data.node_time()
    writer = data.writer()
    writer.end_stale_sessions(now, current_app.config["SESSION_IDLE"], _lifetime())
    writer.add_session(_token_hash(token), row["name"], now)
    session.clear()
    session.permanent = True
    session["token"] = token
    session["key"] = fingerprint(row["password_hash"])


def log_out() -> None:
    """End this browser's session: its row goes, so a copy of the cookie is worth nothing."""
    from web import data

    token = session.get("token")
    if isinstance(token, str) and token:
        data.writer().end_session(_token_hash(token))
    session.clear()


def _lifetime() -> float:
    return current_app.permanent_session_lifetime.total_seconds()


def _ended(row: dict, now: float) -> bool:
    """Whether session ``row`` has ended at ``now``: idle too long, too old, or the clock went back."""
    idle = now - row["last_seen"]
    return idle > current_app.config["SESSION_IDLE"] or now - row["created_at"] > _lifetime() or (
        idle < -SESSION_CLOCK_SLACK)


def _quietly(write: Callable[[], None], what: str) -> None:
    """A bookkeeping write that must not fail the reader's request (a busy database)."""
    try:
        write()
    except (StoreError, HTTPException) as exc:
        current_app.logger.warning("could not %s: %s", what, exc)


def _session_captain() -> str | None:
    from web import data

    token = session.get("token")
    if not isinstance(token, str) or not token:
        return None
    key = _token_hash(token)
    s = data.store()
    row = s.session(key)
    now = data.node_time()
    account = s.captain(row["captain"]) if row is not None else None
    if (row is None or account is None or _ended(row, now)
            or not hmac.compare_digest(fingerprint(account["password_hash"]), str(session.get("key", "")))):
        session.clear()
        if row is not None:
            _quietly(lambda: data.writer().end_session(key), "end a session")
        return None
    if now - row["last_seen"] >= SESSION_TOUCH:
        _quietly(lambda: data.writer().touch_session(key, now), "record a session's use")
    return row["captain"]


def current_captain() -> str | None:
    """The logged-in captain's name: a live session, of an account that still has the same password."""
    if "captain" not in g:
        g.captain = _session_captain()
    return g.captain


def safe_next(target: str | None) -> str:
    """``target`` if it is a plain path on this site, else the console: never an open redirect.

    Refused: anything but printable ASCII (browsers drop tabs and newlines, so ``/``, a
    tab and ``/evil.example`` would lead to ``//evil.example``), a backslash, ``//``, a
    scheme or a host, also once percent-decoded (a proxy may decode ``%2F`` or ``%5C``).
    """
    if target and len(target) <= 2048 and _plain_path(target) and _plain_path(urllib.parse.unquote(target)):
        return target
    return url_for("captain.console")


def _plain_path(target: str) -> bool:
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return False
    if not all("!" <= c <= "~" for c in target):  # printable ASCII, no space
        return False
    parts = urllib.parse.urlsplit(target)
    return not parts.scheme and not parts.netloc


def captain_required(view):
    """Views for captains only: the API answers 401, pages send the reader to the login form."""
    @wraps(view)
    def wrapped(*args, **kwargs):
        if current_captain() is None:
            if request.path.startswith("/api/"):
                abort(401, "log in as a captain first")
            return redirect(url_for("captain.login", next=request.path))
        return view(*args, **kwargs)
    return wrapped
