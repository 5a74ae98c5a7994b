"""The words of the gateway's texts, in each subscriber's language (the one message catalog).

Every alert text names the alert by its id (what a responder's reply quotes), the place by
its name from the roster, and carries the know-your-rights line: do not open the door
without a warrant signed by a judge. The English is kept to one GSM-7 segment (160
characters) with a 30-character place; ``docs/sms.md`` has each language's counts
(``python -m node.gateway.texts``).

A raid on a nearby block (``NEARBY_TEXTS``, to subscribers who texted ``NEARBY ON``) is named
by the block's name and public area from the neighborhood roster, never a place name, and
carries the same line; one segment while block and area together are at most 31 characters
(Korean; 55 in English).
"""

from __future__ import annotations

from node import catalog
from node.catalog import N_
from node.protocol.alerts import State

ALERT_TEXTS = {
    State.REPORTED: N_("Silbato %(id)s: possible raid at %(place)s. Go see. Reply CONFIRM %(id)s PIN "
                       "or FALSE %(id)s PIN. Don't open the door without a judge's warrant."),
    State.CONFIRMED: N_("Silbato %(id)s: RAID CONFIRMED at %(place)s. Stay inside. Don't open the door without "
                        "a judge's warrant. Reply STOP to end texts."),
    State.ALL_CLEAR: N_("Silbato %(id)s: ALL CLEAR at %(place)s. The raid is over. Never open the door without "
                        "a judge's warrant."),
    State.CANCELLED: N_("Silbato %(id)s: FALSE ALARM at %(place)s, no raid. Never open the door without "
                        "a judge's warrant."),
}
# A raid on another block of the neighborhood (node/store.py's ``nearby``): ``where`` is
# "block, area" (or the block alone when its area is unknown).
NEARBY_TEXTS = {
    State.CONFIRMED: N_("Silbato: raid confirmed nearby: %(where)s. Don't open the door without a judge's "
                        "warrant. NEARBY OFF to end these."),
    State.ALL_CLEAR: N_("Silbato: all clear nearby: %(where)s. The raid is over. Never open the door without "
                        "a judge's warrant."),
    State.CANCELLED: N_("Silbato: false alarm nearby: %(where)s, no raid. Never open the door without "
                        "a judge's warrant."),
}
REPLIES = {
    "help": N_("Silbato: JOIN (or JOIN es/ko/tl) for raid alerts, NEARBY ON for raids on nearby blocks, "
               "STOP to end. Responders: REPORT place PIN, CONFIRM/CLEAR/FALSE id PIN."),
    "join": N_("Silbato: reply YES to get this block's raid alerts. Reply STOP at any time to end them."),
    "welcome": N_("Silbato: you will get this block's raid alerts. Reply STOP to end them."),
    "welcome_nearby": N_("Silbato: you will get raid alerts for this block and nearby blocks. Reply STOP "
                         "to end them."),
    "nearby_on": N_("Silbato: you will also get texts about raids on nearby blocks. Text NEARBY OFF to end them."),
    "nearby_off": N_("Silbato: no more texts about nearby blocks. This block's alerts go on."),
    "stopped": N_("Silbato: you will get no more texts from us."),
    "test": N_("Silbato: a test text from your block's SMS gateway."),
}

# To a responder whose texted command became a request for the node (the PIN is never repeated).
# "passed to the node", not "done": the daemon may still refuse it (an expired or self-confirmed request).
ACK = N_("Silbato: %(command)s %(argument)s received and passed to the node.")


def _gettext(language: str, words: str) -> str:
    return catalog.translations(language if language in catalog.LANGUAGES else catalog.SOURCE).gettext(words)


def alert_text(state: State, alert_id: str, place: str, language: str) -> str | None:
    """The text for an alert in ``state`` at ``place``, or None for a state that sends none."""
    words = ALERT_TEXTS.get(state)
    return None if words is None else _gettext(language, words) % {"id": alert_id, "place": place}


def nearby_text(state: State, block: str, area: str, language: str) -> str | None:
    """The text for a raid on the nearby ``block`` (its public ``area``) in ``state``, or None for a
    state that sends none (REPORTED)."""
    words = NEARBY_TEXTS.get(state)
    return None if words is None else _gettext(language, words) % {"where": f"{block}, {area}" if area else block}


def reply_text(kind: str, language: str) -> str:
    """One of ``REPLIES`` (help, join, welcome, stopped, nearby_on, ...) in ``language``."""
    return _gettext(language, REPLIES[kind])


def ack_text(command: str, argument: str, language: str) -> str:
    """The acknowledgement of a responder's command (``CONFIRM``, ``3-41``) in ``language``."""
    return _gettext(language, ACK) % {"command": command, "argument": argument}


def segment_table(place: str = "Building 12, 1400 Elm Street", alert_id: str = "3-41",
                  block: str = "elm-st", area: str = "Elm St 100-300") -> list[tuple]:
    """(message, language, encoding, units, segments) for every text, as docs/sms.md reports them."""
    from node.gateway.segments import count

    rows = []
    for language in catalog.LANGUAGES:
        for state in ALERT_TEXTS:
            seg = count(alert_text(state, alert_id, place, language))
            rows.append((state.word, language, seg.encoding, seg.units, seg.count))
        for state in NEARBY_TEXTS:
            seg = count(nearby_text(state, block, area, language))
            rows.append((f"nearby {state.word}", language, seg.encoding, seg.units, seg.count))
        for kind in REPLIES:
            seg = count(reply_text(kind, language))
            rows.append((kind, language, seg.encoding, seg.units, seg.count))
        seg = count(ack_text("CONFIRM", alert_id, language))
        rows.append(("ack", language, seg.encoding, seg.units, seg.count))
    return rows


if __name__ == "__main__":
    for row in segment_table():
        print("| {} | {} | {} | {} | {} |".format(*row))
