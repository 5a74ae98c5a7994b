"""What an incoming text asks: pure, text in, a ``Command`` out.

Responders' commands carry their personal PIN last; a text that is none of these is a tip.
A text whose first word merely starts with a responder's verb ("Report12 1234", "CONFIRM:
3-7 1234") is BAD, not a tip: a mistyped command holds a PIN, and a tip is kept in plain text.
The price: a tip worded "Clearly ..." or "False alarm ..." gets the HELP text instead.
Case and extra spaces do not matter; ``FALSE`` is a cancel (a false alarm).
``NEARBY ON`` and ``NEARBY OFF`` (exactly those two words) ask for, or stop, texts about raids
on nearby blocks; ``JOIN`` may take ``NEARBY`` after or instead of its language (``JOIN es
NEARBY``). Any other text starting with "nearby" is a tip.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from node.catalog import LANGUAGES

MAX_TEXT = 480      # characters: three segments; anything longer is refused, not read
# The captains' action each responder command asks of the daemon (node/daemon/chores.py CAPTAIN_ACTIONS).
ACTIONS = {"REPORT": "raise", "CONFIRM": "confirm", "CLEAR": "all_clear", "FALSE": "cancel"}
_ALERT_ID = re.compile(r"^\d{1,5}-\d{1,10}$")
_PIN = re.compile(r"^\d{4,8}$")


@dataclass(frozen=True)
class Command:
    verb: str            # REPORT, CONFIRM, CLEAR, FALSE, JOIN, NEARBY, YES, STOP, HELP, TIP or BAD
    argument: str = ""   # REPORT: the location code; CONFIRM/CLEAR/FALSE: the alert id; JOIN: the language;
                         # NEARBY: ON or OFF
    pin: str = ""
    nearby: bool = False  # JOIN: texts about nearby blocks' raids too (JOIN ... NEARBY)


def parse(text: str) -> Command:
    """The command in ``text``. A malformed responder command is BAD (never a tip: it may hold a PIN)."""
    if len(text) > MAX_TEXT:
        return Command("BAD")
    words = text.split()
    if not words:
        return Command("TIP", text.strip())
    verb = words[0].upper()
    if verb in ACTIONS:
        if len(words) != 3 or not _PIN.match(words[2]):
            return Command("BAD")
        if verb == "REPORT" and not words[1].isdigit():
            return Command("BAD")
        if verb != "REPORT" and not _ALERT_ID.match(words[1]):
            return Command("BAD")
        return Command(verb, words[1], words[2])
    if verb.startswith(tuple(ACTIONS)):
        return Command("BAD")  # a mistyped responder command: it may hold a PIN
    if verb == "JOIN" and len(words) <= 3:
        rest = [w.lower() for w in words[1:]]
        nearby = "nearby" in rest
        if nearby:
            rest.remove("nearby")
        if len(rest) <= 1:
            language = rest[0] if rest else "en"
            return Command("JOIN", language if language in LANGUAGES else "en", nearby=nearby)
    if verb == "NEARBY" and len(words) == 2 and words[1].upper() in ("ON", "OFF"):
        return Command("NEARBY", words[1].upper())
    if verb in ("YES", "STOP", "HELP") and len(words) == 1:
        return Command(verb)
    if verb in ("UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPALL") and len(words) == 1:
        return Command("STOP")  # the carriers' usual opt-out words
    return Command("TIP", text.strip())
