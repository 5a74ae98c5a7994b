"""How many SMS a text costs: GSM-7 (160 characters, 153 per part) or UCS-2 (70, 67 per part).

A text is sent in GSM 03.38's 7-bit alphabet when every character is in it; the extension
table's characters (``^{}\\[~]|€`` and form feed) take two septets each. Any other character
(Korean, most accents outside the basic table) makes the whole text UCS-2, counted in UTF-16
code units. Pure: text in, a count out.
"""

from __future__ import annotations

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")


@dataclass(frozen=True)
class Segments:
    encoding: str  # "GSM-7" or "UCS-2"
    units: int     # septets (GSM-7) or UTF-16 code units (UCS-2)
    count: int     # SMS parts


def count(text: str) -> Segments:
    """The encoding, length and number of SMS parts of ``text``."""
    if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text):
        units = sum(2 if c in GSM7_EXTENSION else 1 for c in text)
        return Segments("GSM-7", units, 1 if units <= 160 else -(-units // 153))
    units = len(text.encode("utf-16-le")) // 2
    return Segments("UCS-2", units, 1 if units <= 70 else -(-units // 67))
