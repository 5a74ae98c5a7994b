"""Captains' accounts: passwords, sessions and login throttling.

Accounts are made on the node (``silbato captain add NAME``); the web only checks them.
Passwords are hashed with Werkzeug's scrypt and are at least ``MIN_PASSWORD`` characters.

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
import threading
import time
from functools import wraps
from typing import Callable

from flask import abort, current_app, g, redirect, request, session, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer
from werkzeug.security import check_password_hash, generate_password_hash

MIN_PASSWORD = 8
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
LOGIN_TRIES = 10
LOGIN_WINDOW = 15 * 60.0
DEVICE_COOKIE = "silbato_device"
DEVICE_DAYS = 90

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


def log_in(row: dict) -> None:
    session.clear()
    session.permanent = True
    session["captain"] = row["name"]
    session["key"] = fingerprint(row["password_hash"])


def current_captain() -> str | None:
    """The logged-in captain's name, if the account still exists with the same password."""
    if "captain" not in g:
        from web import data

        g.captain = None
        name = session.get("captain")
        if name:
            row = data.store().captain(name)
            if row is not None and hmac.compare_digest(fingerprint(row["password_hash"]), session.get("key", "")):
                g.captain = name
            else:
                session.clear()
    return g.captain


def safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("captain.console")


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
