"""Receipt bitmaps and the coverage view (node.coverage)."""

from node.protocol.coverage import View, from_bitmap, to_bitmap

MEMBERS = [3, 5, 8, 13, 21, 34, 55, 89, 144]


def test_bitmaps_round_trip_in_roster_order():
    bitmap = to_bitmap({5, 89, 144, 999}, MEMBERS)   # 999 is not on the roster
    assert len(bitmap) == 2 and from_bitmap(bitmap, MEMBERS) == {5, 89, 144}
    assert from_bitmap(b"", MEMBERS) == set()


def test_the_view_names_who_is_missing():
    view = View("confirmed", received={3, 5, 8}, sounded={3, 5})
    assert view.missing(MEMBERS[:5]) == [13, 21]
    assert view.summary(5, ["B13", "B21"]) == "CONFIRMED: 3 of 5 buildings received, 2 sounded; missing: B13, B21"
    assert View("all_clear", {1}, {1}).summary(1, []) == "ALL CLEAR: 1 of 1 buildings received, 1 sounded"
