"""Looking for planted phone numbers in the raw bytes of files: the SMS gateway's privacy canary.

``found(roots, numbers)`` reads every file under ``roots`` (database, -wal and -shm included),
decodes its bytes as Latin-1 and as UTF-16 (both byte orders and alignments: gammu-smsd writes
UTF-16), drops the separators people put in numbers (spaces, dashes, dots, brackets), and
reports each file in which a number's national digits (the last 10: a substring of its +E.164
and digits-only forms) appear; file names count too. ``in_text`` does the same for strings
(logs, frames).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

_SEPARATORS = re.compile(r"[\s().\-]")
_DIGITS = re.compile(r"[0-9]{10,}")


def national(number: str) -> str:
    """The last 10 digits of ``number``: inside its +E.164, digits-only and national forms."""
    return re.sub(r"\D", "", number)[-10:]


def formats(number: str) -> list[str]:
    """``number`` as people write it: +E.164, digits only, national, and national with separators."""
    digits = re.sub(r"\D", "", number)
    n = digits[-10:]
    return [f"+{digits}", digits, n, f"({n[:3]}) {n[3:6]}-{n[6:]}", f"{n[:3]}-{n[3:6]}-{n[6:]}", f"{n[:3]} {n[3:6]} {n[6:]}"]


def _windows(text: str) -> set[str]:
    found = set()
    for run in _DIGITS.findall(_SEPARATORS.sub("", text)):
        found.update(run[i:i + 10] for i in range(len(run) - 9))
    return found


def in_text(text: str, numbers: Iterable[str]) -> set[str]:
    """The ``numbers`` whose national digits appear in ``text``."""
    wanted = {national(n): n for n in numbers}
    return {wanted[w] for w in _windows(text) & wanted.keys()}


def in_bytes(data: bytes, numbers: Iterable[str]) -> set[str]:
    wanted = {national(n): n for n in numbers}
    hits: set[str] = set()
    for variant in (data, data[1:]):
        for encoding in ("latin-1", "utf-16-le", "utf-16-be"):
            usable = variant[:len(variant) - len(variant) % 2] if encoding != "latin-1" else variant
            hits |= _windows(usable.decode(encoding, errors="replace")) & wanted.keys()
    return {wanted[w] for w in hits}


def found(roots: Iterable[Path], numbers: Iterable[str]) -> dict[str, set[str]]:
    """{path: the numbers found in its name or bytes} for every file under ``roots`` that has any."""
    numbers = list(numbers)
    hits: dict[str, set[str]] = {}
    for root in roots:
        for path in [Path(root), *Path(root).rglob("*")] if Path(root).exists() else []:
            numbers_here = in_text(str(path), numbers)
            if path.is_file() and not path.is_symlink():
                numbers_here |= in_bytes(path.read_bytes(), numbers)
            if numbers_here:
                hits[str(path)] = numbers_here
    return hits
