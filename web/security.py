"""Headers on every response, error pages that reveal nothing, load shedding, and the app's secret.

- Every response carries the Content-Security-Policy (no inline script, no other host),
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
- A failed CSRF check is 403. An error page names the error and nothing else: no
  traceback, no path, no version. A ``Host`` header that cannot be routed is 400.
- Overload never becomes a 500: a client address sending more than ``RATE_LIMIT``
  requests per window gets 429, a full set of live streams or a busy database 503,
  each with ``Retry-After``. Before the node daemon has made its database (it never
  started, or is starting) the page says so (``NotRunning``, 503), logged once.
- ``load_secret``/``rotate_secret``: the secret that signs the session and device
  cookies, kept in ``web.state_dir`` so a restart logs nobody out.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import sqlite3
import stat
import threading
import time
from pathlib import Path
from typing import Callable

from flask import Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, ServiceUnavailable, TooManyRequests

from node.errors import KeyFileError, StoreError
from node.protocol.keys import write_secret_bytes

log = logging.getLogger(__name__)

CSP = "default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers too old for CSP
}


class RateLimit:
    """At most ``limit`` hits per ``window`` seconds per key, in fixed windows; memory is bounded."""

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 10_000):
        self.limit, self.window, self.clock, self.max_keys = limit, window, clock, max_keys
        self._counts: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count one hit; returns 0 if allowed, else the seconds until the key may try again."""
        now = self.clock()
        with self._lock:
            start, count = self._counts.get(key, (now, 0))
            if now - start >= self.window:
                start, count = now, 0
            if count >= self.limit:
                return max(1.0, start + self.window - now)
            if key not in self._counts and len(self._counts) >= self.max_keys:
                self._counts = {k: v for k, v in self._counts.items() if now - v[0] < self.window}
                if len(self._counts) >= self.max_keys:
                    return self.window  # flooded with new addresses: refuse rather than grow
            self._counts[key] = (start, count + 1)
            return 0.0


def _local(address: str | None) -> bool:
    try:
        return ipaddress.ip_address(address or "").is_loopback
    except ValueError:
        return False


def wants_json() -> bool:
    return request.path.startswith("/api/")


class NotRunning(ServiceUnavailable):
    """503: the node daemon has not made its database yet: it never started, or is starting."""

    description = "the node is not running yet (it has no database); try again in a minute"


def error_response(status: int, message: str, retry_after: float | None = None, *,
                   title: str | None = None) -> Response:
    """A small error page (or JSON under /api/) that says what happened and nothing more.

    A 503 page with ``retry_after`` reloads itself then (no script needed).
    """
    if wants_json():
        response = jsonify({"error": message})
    else:
        titles = {400: _("That request was not understood."), 401: _("Please log in."),
                  403: _("That is not allowed. If your session expired, log in again."),
                  404: _("Page not found."), 405: _("That is not allowed."),
                  409: _("That cannot be done now."), 413: _("That is too long."),
                  429: _("Too many tries. Please wait a few minutes."),
                  503: _("The node is busy. This page will try again.")}
        title = title or titles.get(status, _("Something went wrong on this node."))
        retry = int(retry_after + 0.999) if status == 503 and retry_after is not None else None
        response = Response(render_template("error.html", status=status, title=title, retry=retry),
                            mimetype="text/html")
    response.status_code = status
    if retry_after is not None:
        response.headers["Retry-After"] = str(int(retry_after + 0.999))
    return response


def unavailable(message: str, retry_after: float) -> Response:
    return error_response(503, message, retry_after)


def init_app(app) -> None:
    limiter = RateLimit(*app.config["RATE_LIMIT"]) if app.config["RATE_LIMIT"] else None
    app.extensions["silbato.rate_limit"] = limiter

    @app.before_request
    def shed_load():
        if limiter is None or request.endpoint == "static" or (app.config["EXEMPT_LOOPBACK"]
                                                               and _local(request.remote_addr)):
            return None
        if request.endpoint in ("uploads.piece", "uploads.status"):
            from web.uploads import uploads  # the pieces of an upload already counted when it started
            if uploads().get((request.view_args or {}).get("upload_id", "")) is not None:
                return None
        wait = limiter.hit(request.remote_addr or "?")
        if wait:
            raise TooManyRequests(retry_after=int(wait + 0.999))
        return None

    @app.after_request
    def security_headers(response):
        response.headers.update(HEADERS)
        return response

    @app.errorhandler(CSRFError)
    def csrf_failed(exc):
        return error_response(403, "missing or invalid CSRF token")

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        retry = exc.response.headers.get("Retry-After") if exc.response is not None else None
        if retry is None and isinstance(exc, TooManyRequests) and exc.retry_after is not None:
            retry = exc.retry_after
        retry_after = float(retry) if retry is not None else (5.0 if exc.code == 503 else None)
        if exc.code == 405:
            response = error_response(405, exc.description or "method not allowed", retry_after)
            response.headers["Allow"] = ", ".join(exc.valid_methods or [])
            return response
        if isinstance(exc, NotRunning):
            return error_response(503, exc.description, 10.0, title=_(
                "This node is not running yet, or is still starting. This page will try again."))
        return error_response(exc.code or 500, exc.description or "", retry_after)

    @app.errorhandler(StoreError)
    @app.errorhandler(sqlite3.OperationalError)
    def store_busy(exc):
        log.error("store unavailable: %s", exc)
        return unavailable("the node's database is busy; try again", 5)

    @app.errorhandler(Exception)
    def unexpected(exc):
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error_response(500, "internal error")


# -- the app's secret ------------------------------------------------------------------------------

SECRET_BYTES = 32


def load_secret(path: Path) -> bytes:
    """The page's secret from ``path`` (``Config.web_secret_file``), made there if there is none.

    Made by the page's own process, so it belongs to the page's user: ``SECRET_BYTES``
    random bytes, mode 0600, fsynced before it appears under its name. A file that group or
    others may read, or of another size, is refused (``KeyFileError`` naming it).
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return _create_secret(path)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the page's secret: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        mode = info.st_mode
        if not stat.S_ISREG(mode):
            raise KeyFileError(f"{path}: the page's secret is not a regular file")
        if mode & 0o077:
            raise KeyFileError(f"{path}: mode {stat.S_IMODE(mode):04o} lets others read the page's secret; "
                               f"chmod 600 {path}, or run 'silbato web rotate-secret' to make a new one")
        if info.st_size != SECRET_BYTES:
            raise KeyFileError(f"{path}: {info.st_size} bytes, not the {SECRET_BYTES} of a secret; "
                               "run 'silbato web rotate-secret' to make a new one")
        return fh.read()


def rotate_secret(path: Path) -> None:
    """Replace the secret at ``path`` with a new one, atomically: every cookie it signed stops working.

    Run as root, the new file gets the old one's owner (else the folder's), so the page can still read it.
    """
    path = Path(path)
    try:
        owner = path.stat() if path.exists() else path.parent.stat()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot make a new secret: {exc.strerror}") from None
    write_secret_bytes(path, secrets.token_bytes(SECRET_BYTES),
                       owner=(owner.st_uid, owner.st_gid) if os.geteuid() == 0 else None)


def _create_secret(path: Path) -> bytes:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_secret_bytes(path, secrets.token_bytes(SECRET_BYTES))
    except (OSError, KeyFileError) as exc:
        raise KeyFileError(f"{path}: cannot make the page's secret: {getattr(exc, 'strerror', None) or exc} "
                           "(set web.state_dir to a folder the page's user may write)") from None
    log.info("made a new secret for the page's cookies: %s", path)
    return load_secret(path)
