"""Headers on every response, error pages that reveal nothing, and load shedding.

- Every response carries the Content-Security-Policy (no inline script, no other host),
  ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``.
- A failed CSRF check is 403. An error page names the error and nothing else: no
  traceback, no path, no version.
- Overload never becomes a 500: a client address sending more than ``RATE_LIMIT``
  requests per window gets 429, a full set of live streams or a busy database 503,
  each with ``Retry-After``.
"""

from __future__ import annotations

import ipaddress
import logging
import sqlite3
import threading
import time
from typing import Callable

from flask import Response, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, TooManyRequests

from node.errors import StoreError

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


def error_response(status: int, message: str, retry_after: float | None = None) -> Response:
    """A small error page (or JSON under /api/) that says what happened and nothing more."""
    if wants_json():
        response = jsonify({"error": message})
    else:
        titles = {400: _("That request was not understood."), 401: _("Please log in."),
                  403: _("That is not allowed. If your session expired, log in again."),
                  404: _("Page not found."), 405: _("That is not allowed."),
                  409: _("That cannot be done now."), 413: _("That is too long."),
                  429: _("Too many tries. Please wait a few minutes."),
                  503: _("The node is busy. This page will try again.")}
        response = Response(render_template("error.html", status=status,
                                            title=titles.get(status, _("Something went wrong on this node."))),
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
