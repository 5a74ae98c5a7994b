"""Languages of the page: English, Spanish, Korean and Tagalog, from gettext ``.po`` files.

The reader's language is, in order: ``?lang=xx`` (a one-tap switch, remembered in the
``lang`` cookie), the ``lang`` cookie, the browser's ``Accept-Language``, then the
node's first language (``node.languages``). The ``.po`` files under
``web/translations/<lang>/LC_MESSAGES/`` are the only source: they are compiled in
memory when first used, so there is no build step and no ``.mo`` file to go stale.

Times are shown in the node's local time zone (set it with ``timedatectl``).
"""

from __future__ import annotations

import datetime as dt
import io
import threading
from pathlib import Path

from babel import Locale, support
from babel.dates import format_datetime, format_time, format_timedelta
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import current_app, g, request
from flask_babel import Babel, Domain, get_locale

TRANSLATIONS = Path(__file__).parent / "translations"
LANGUAGES = ("en", "es", "ko", "tl")
# Each language named in itself, for the switch.
NAMES = {"en": "English", "es": "Español", "ko": "한국어", "tl": "Tagalog"}
# Babel (CLDR) knows Tagalog as Filipino.
_BABEL_CODE = {"tl": "fil"}
COOKIE = "lang"


def po_file(lang: str) -> Path:
    return TRANSLATIONS / lang / "LC_MESSAGES" / "messages.po"


class PoDomain(Domain):
    """A Flask-Babel domain that reads the ``.po`` files directly (compiled once, in memory)."""

    def __init__(self) -> None:
        super().__init__(domain="messages")
        self._lock = threading.Lock()

    def get_translations(self):
        lang = language_of(get_locale())
        with self._lock:
            if lang not in self.cache:
                self.cache[lang] = _load(lang)
            return self.cache[lang]


def _load(lang: str):
    path = po_file(lang)
    if lang == "en" or not path.exists():
        return support.NullTranslations()  # English is the source language
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=_BABEL_CODE.get(lang, lang))
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return support.Translations(buffer, domain="messages")


def language_of(locale: Locale | None) -> str:
    """Our language code for a Babel locale (``fil_PH`` is ``tl``)."""
    if locale is None:
        return "en"
    return {"fil": "tl"}.get(locale.language, locale.language)


def choose_language() -> str:
    """The reader's language for this request (see the module docstring)."""
    asked = request.args.get("lang", "")
    if asked in LANGUAGES:
        return asked
    cookie = request.cookies.get(COOKIE, "")
    if cookie in LANGUAGES:
        return cookie
    offered = [*LANGUAGES, "fil"]
    best = request.accept_languages.best_match(offered)
    if best:
        return "tl" if best == "fil" else best
    return current_app.config["LANGUAGES"][0]


def init_app(app) -> None:
    """Flask-Babel with the ``.po`` domain; ``g.lang`` holds the reader's language."""
    babel = Babel(app, locale_selector=lambda: _BABEL_CODE.get(lang(), lang()))
    babel.domain_instance = PoDomain()  # overrides Flask-Babel's .mo loader

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
