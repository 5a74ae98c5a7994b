"""The one message catalog: the page's words, the spoken announcements and the radio's text alerts.

``LANGUAGES`` is the list of languages Silbato speaks, declared here once: the
settings, the page and the API take it from here.

English is the source language: a message's English words are its ``msgid``, in
the code (``N_`` marks the ones that are translated later, not where they are
written). The other languages are gettext ``.po`` files::

    node/translations/messages.pot                        the template, made by pybabel extract
    node/translations/<locale>/LC_MESSAGES/messages.po    one per language (Tagalog is fil)

Building Silbato compiles each ``.po`` into the ``messages.mo`` beside it (setup.py:
into the wheel, or in place for ``pip install -e``); only the ``.mo`` files are read
at run time, and they are not in git. Updating the words: docs/development.md.

A compiled catalog that is missing, or older than its ``.po`` (edited since the
last install), is a ``CatalogError`` for the page, which refuses to start, while
the node logs an error and speaks and texts that language in English: an alert
is never held up by a translation.
"""

from __future__ import annotations

import functools
import gettext
import logging
from pathlib import Path

from node.errors import SilbatoError

log = logging.getLogger(__name__)

LANGUAGES = ("en", "es", "ko", "tl")
SOURCE = "en"  # the words in the code
# Each language named in itself, for the page's switch.
NAMES = {"en": "English", "es": "Español", "ko": "한국어", "tl": "Tagalog"}
# The gettext and Babel (CLDR) locale of each language: both know Tagalog as Filipino.
LOCALES = {"en": "en", "es": "es", "ko": "ko", "tl": "fil"}

DIRECTORY = Path(__file__).parent / "translations"
DOMAIN = "messages"
REINSTALL = ("the catalogs are compiled when Silbato is built: install it again "
             "(in a checkout: pip install -e .)")


class CatalogError(SilbatoError):
    """A language's compiled catalog is missing or older than its ``.po`` file."""


def N_(message: str) -> str:
    """``message`` unchanged, marked for ``pybabel extract``: it is translated where it is used."""
    return message


def po_file(language: str, directory: Path = DIRECTORY) -> Path:
    """The translators' file for ``language`` (not for English, the source)."""
    return directory / LOCALES[language] / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_file(language: str, directory: Path = DIRECTORY) -> Path:
    """The compiled catalog for ``language``, written by the build."""
    return po_file(language, directory).with_suffix(".mo")


def problem(language: str, directory: Path = DIRECTORY) -> str:
    """What is wrong with ``language``'s compiled catalog, as a sentence; empty when it is usable."""
    if language == SOURCE:
        return ""
    mo, po = mo_file(language, directory), po_file(language, directory)
    if not mo.is_file():
        return f"{mo} is missing"
    # The .po travels only in the source tree (the wheel has the .mo alone), where times are the editor's.
    if po.is_file() and po.stat().st_mtime_ns > mo.stat().st_mtime_ns:
        return f"{po} changed after it was compiled"
    return ""


def check(directory: Path = DIRECTORY) -> None:
    """Raise ``CatalogError`` unless every language's compiled catalog is usable."""
    found = [p for p in (problem(language, directory) for language in LANGUAGES) if p]
    if found:
        raise CatalogError(f"{'; '.join(found)}: {REINSTALL}")


@functools.cache
def translations(language: str, directory: Path = DIRECTORY) -> gettext.NullTranslations:
    """The catalog of ``language``; for English, or when the catalog is unusable (logged), the English words."""
    if language not in LANGUAGES:
        raise ValueError(f"{language!r} is not one of {', '.join(LANGUAGES)}")
    if language == SOURCE:
        return gettext.NullTranslations()
    if trouble := problem(language, directory):
        log.error("%s, so %s is English here: %s", trouble, language, REINSTALL)
        return gettext.NullTranslations()
    with mo_file(language, directory).open("rb") as fh:
        return gettext.GNUTranslations(fh)
