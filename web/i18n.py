"""Languages of the page: Flask-Babel, reading the one message catalog (node/catalog.py).

The reader's language is, in order: ``?lang=xx`` (a one-tap switch, remembered in the
``lang`` cookie), the ``lang`` cookie, the browser's ``Accept-Language``, then the
node's first language (``node.languages``). Flask-Babel reads the compiled catalog
from ``node/translations/<locale>/LC_MESSAGES/messages.mo``. One that is missing
(that language shows in English) or compiled from an older ``.po`` is logged as an
error when the app starts; the page serves all the same.

Times are shown in the node's local time zone (set it with ``timedatectl``).
"""

from __future__ import annotations

import datetime as dt
import logging

from babel.dates import format_datetime, format_time, format_timedelta
from flask import current_app, g, request
from flask_babel import Babel, get_locale

from node import catalog
from node.catalog import LANGUAGES, NAMES

log = logging.getLogger(__name__)

COOKIE = "lang"
# Accept-Language may name a language by its locale: Tagalog as Filipino (fil).
_ACCEPTED = {code: lang for lang in LANGUAGES for code in (lang, catalog.LOCALES[lang])}


def choose_language() -> str:
    """The reader's language for this request (see the module docstring)."""
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    cookie = request.cookies.get(COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    best = request.accept_languages.best_match(list(_ACCEPTED))
    if best:
        return _ACCEPTED[best]
    return current_app.config["LANGUAGES"][0]


def init_app(app) -> None:
    """Flask-Babel on the node's catalog, in the reader's language (``g.lang``)."""
    for found in catalog.problems():  # the page still serves: a missing language is English
        log.error("%s", found)
    Babel(app, locale_selector=lambda: catalog.LOCALES[lang()],
          default_translation_directories=str(catalog.DIRECTORY))

    @app.after_request
    def remember_language(response):
        asked = request.args.get("lang", "")
        if asked in LANGUAGES and request.cookies.get(COOKIE) != asked:
            # The reader's own preference, kept in their browser; nothing changes on the node.
            response.set_cookie(COOKIE, asked, max_age=365 * 86400, samesite="Lax", httponly=True)
        return response

    app.jinja_env.globals.update(language_names=NAMES, languages=LANGUAGES)
    app.jinja_env.filters.update(ago=ago, clock=clock)


def lang() -> str:
    if "lang" not in g:
        g.lang = choose_language()
    return g.lang


def _local(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts).astimezone()


def clock(ts: float | None, now: float | None = None) -> str:
    """``ts`` as a local time in the reader's language; with the date if not today."""
    if ts is None:
        return ""
    when = _local(ts)
    today = _local(now).date() if now is not None else dt.date.today()
    if when.date() == today:
        return format_time(when, "short", tzinfo=when.tzinfo, locale=get_locale())
    return format_datetime(when, "short", tzinfo=when.tzinfo, locale=get_locale())


def ago(ts: float | None, now: float) -> str:
    """How long ago ``ts`` was, in words of the reader's language ("3 minutes ago")."""
    if ts is None:
        return ""
    seconds = max(0.0, now - ts)
    return format_timedelta(-seconds, add_direction=True, threshold=0.9, locale=get_locale())
