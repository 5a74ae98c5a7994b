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

In a source checkout the build also records the SHA-256 of each ``.po`` beside its
``.mo`` (``messages.mo.sha256``), so a ``.po`` edited since the last install is
noticed by its content, whatever the files' times say. Neither a missing nor a
stale catalog holds anything up: each is logged as an error naming the fix (the
page, the node, ``silbato doctor``). A missing catalog is English; a stale one is
still used, since gettext looks words up by their English ``msgid``: it cannot show
a wrong translation, only leave the newest words in English.
"""

from __future__ import annotations

import functools
import gettext
import hashlib
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
    """A language's compiled catalog is missing, or its ``.po`` file changed since it was compiled."""


def N_(message: str) -> str:
    """``message`` unchanged, marked for ``pybabel extract``: it is translated where it is used."""
    return message


def po_file(language: str, directory: Path = DIRECTORY) -> Path:
    """The translators' file for ``language`` (not for English, the source)."""
    return directory / LOCALES[language] / "LC_MESSAGES" / f"{DOMAIN}.po"


def mo_file(language: str, directory: Path = DIRECTORY) -> Path:
    """The compiled catalog for ``language``, written by the build."""
    return po_file(language, directory).with_suffix(".mo")


def source_file(language: str, directory: Path = DIRECTORY) -> Path:
    """Where the build records the SHA-256 of the ``.po`` it compiled (source trees only)."""
    mo = mo_file(language, directory)
    return mo.with_name(mo.name + ".sha256")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def compile_catalog(po: Path, mo: Path, *, record_source: bool = False) -> None:
    """Compile ``po`` into ``mo`` (the build calls this: setup.py). With ``record_source``, also
    write the ``.po``'s SHA-256 beside ``mo``. A syntax error, or a translation whose
    placeholders differ from its ``msgid``'s, raises ``CatalogError`` naming the file and message."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import PoFileError, read_po

    try:
        with po.open("rb") as fh:
            parsed = read_po(fh, abort_invalid=True)
    except PoFileError as exc:
        raise CatalogError(f"{po}: {exc}") from None
    errors = [f"{po}: {message.id!r}: {error}" for message, found in parsed.check() for error in found]
    if errors:
        raise CatalogError("\n".join(errors))
    mo.parent.mkdir(parents=True, exist_ok=True)
    tmp = mo.with_name(mo.name + ".tmp")
    with tmp.open("wb") as fh:
        write_mo(fh, parsed)
    tmp.replace(mo)
    if record_source:
        mo.with_name(mo.name + ".sha256").write_text(_digest(po) + "\n", encoding="ascii")


def problem(language: str, directory: Path = DIRECTORY) -> str:
    """What is wrong with ``language``'s compiled catalog, as a sentence; empty when it is usable."""
    if language == SOURCE:
        return ""
    mo, po = mo_file(language, directory), po_file(language, directory)
    if not mo.is_file():
        return f"{mo} is missing"
    # The .po travels only in the source tree (a wheel has the .mo alone): compare contents, since
    # file times lie after a checkout, an unpacked archive or on a Pi whose clock is not set.
    if po.is_file():
        recorded = source_file(language, directory)
        if not recorded.is_file() or recorded.read_text(encoding="ascii").strip() != _digest(po):
            return f"{po} changed after it was compiled"
    return ""


def problems(directory: Path = DIRECTORY) -> list[str]:
    """What is wrong with each language's compiled catalog, one sentence each, ending with the fix."""
    return [f"{found}: {REINSTALL}" for found in (problem(language, directory) for language in LANGUAGES) if found]


@functools.cache
def translations(language: str, directory: Path = DIRECTORY) -> gettext.NullTranslations:
    """The catalog of ``language``: the English words for English, or when it is missing (logged);
    a stale one (logged) is still used, its newest words in English."""
    if language not in LANGUAGES:
        raise ValueError(f"{language!r} is not one of {', '.join(LANGUAGES)}")
    if language == SOURCE:
        return gettext.NullTranslations()
    trouble = problem(language, directory)
    if not mo_file(language, directory).is_file():
        log.error("%s, so %s is English here: %s", trouble, language, REINSTALL)
        return gettext.NullTranslations()
    if trouble:
        log.error("%s, so its newest words are English here: %s", trouble, REINSTALL)
    with mo_file(language, directory).open("rb") as fh:
        return gettext.GNUTranslations(fh)
