"""The gateway's pure parts: what a received text asks, and what a text costs in SMS segments."""

import pytest

from node.gateway.commands import MAX_TEXT, Command, parse
from node.gateway.segments import count


@pytest.mark.parametrize("text, expected", [
    ("REPORT 101 4321", Command("REPORT", "101", "4321")),
    ("  confirm 3-41   4321 ", Command("CONFIRM", "3-41", "4321")),
    ("CLEAR 3-41 4321", Command("CLEAR", "3-41", "4321")),
    ("false 3-41 4321", Command("FALSE", "3-41", "4321")),
    ("JOIN", Command("JOIN", "en")),
    ("join KO", Command("JOIN", "ko")),
    ("JOIN xx", Command("JOIN", "en")),
    ("Stop", Command("STOP")),
    ("UNSUBSCRIBE", Command("STOP")),
    ("HELP", Command("HELP")),
    ("yes", Command("YES")),
    ("REPORT 101", Command("BAD")),              # no PIN: never a tip (it may be half a PIN)
    ("REPORT here 4321", Command("BAD")),
    ("CONFIRM 3-41 12", Command("BAD")),
    ("CONFIRM x 4321", Command("BAD")),
    ("X" * (MAX_TEXT + 1), Command("BAD")),      # oversized: not read
    ("Report12 1234", Command("BAD")),           # a mistyped command holds a PIN: never a tip
    ("CONFIRM: 3-7 1234", Command("BAD")),
    ("clear3-41 123456", Command("BAD")),
    ("FALSE-ALARM 3-41 123456", Command("BAD")),
    ("NEARBY ON", Command("NEARBY", "ON")),
    (" nearby  off ", Command("NEARBY", "OFF")),
    ("JOIN NEARBY", Command("JOIN", "en", nearby=True)),
    ("join es nearby", Command("JOIN", "es", nearby=True)),
    ("JOIN nearby ko", Command("JOIN", "ko", nearby=True)),
    ("JOIN es ko", Command("TIP", "JOIN es ko")),
    ("NEARBY", Command("TIP", "NEARBY")),
    ("Nearby vans on Oak", Command("TIP", "Nearby vans on Oak")),
    ("vans by the laundromat", Command("TIP", "vans by the laundromat")),
    ("stop the raid please", Command("TIP", "stop the raid please")),
])
def test_parse(text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize("text, encoding, units, segments", [
    ("a" * 160, "GSM-7", 160, 1),
    ("a" * 161, "GSM-7", 161, 2),
    ("a" * 306, "GSM-7", 306, 2),
    ("a" * 307, "GSM-7", 307, 3),
    ("€" * 80, "GSM-7", 160, 1),          # the extension table: two septets each
    ("€" * 81, "GSM-7", 162, 2),
    ("ñé" * 80, "GSM-7", 160, 1),         # in the basic table
    ("á" + "a" * 69, "UCS-2", 70, 1),     # not in it: the whole text is UCS-2
    ("한" * 71, "UCS-2", 71, 2),
    ("😀" * 35, "UCS-2", 70, 1),          # outside the BMP: two UTF-16 units
])
def test_segments(text, encoding, units, segments):
    seg = count(text)
    assert (seg.encoding, seg.units, seg.count) == (encoding, units, segments)


def test_every_alert_text_fits_one_segment_but_the_korean_report():
    from node import catalog
    from node.gateway.texts import segment_table

    for language in catalog.LANGUAGES:
        if language != catalog.SOURCE and catalog.problem(language):
            catalog.compile_catalog(catalog.po_file(language), catalog.mo_file(language), record_source=True)
    catalog.translations.cache_clear()
    over = {(message, language) for message, language, _enc, _units, n in segment_table() if n > 1}
    assert over == {("reported", "ko"), ("help", "ko")}, over
