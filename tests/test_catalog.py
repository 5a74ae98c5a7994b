"""The one message catalog: compiled at build time, current, and the same words for the page, speech and radio."""

import gettext
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path

import pytest
from appliance import build_release
from babel.messages.pofile import read_po

from node import catalog
from node.catalog import LANGUAGES, CatalogError
from node.hardware.speech import sentence
from node.protocol.alerts import State
from node.radio.link import text_alert

ROOT = Path(__file__).parent.parent
TRANSLATED = [lang for lang in LANGUAGES if lang != catalog.SOURCE]


@pytest.mark.parametrize("lang", TRANSLATED)
def test_the_compiled_catalogs_match_the_po_files(lang):
    assert catalog.problem(lang) == ""
    with catalog.po_file(lang).open("rb") as fh:
        po = {m.id: m.string for m in read_po(fh) if m.id and m.string and not m.fuzzy}
    with catalog.mo_file(lang).open("rb") as fh:
        mo = {k: v for k, v in gettext.GNUTranslations(fh)._catalog.items() if k}
    assert mo == po, f"{catalog.mo_file(lang)} is stale: {catalog.REINSTALL}"


def test_the_language_list_is_declared_once():
    literal = re.compile(r"""["']en["'],\s*["']es["'],\s*["']ko["'],\s*["']tl["']""")
    found = [str(p.relative_to(ROOT)) for folder in ("node", "web") for p in (ROOT / folder).rglob("*.py")
             if literal.search(p.read_text())]
    assert found == ["node/catalog.py"]


def compiled(directory: Path, lang: str) -> Path:
    """A copy of ``lang``'s .po in ``directory``, compiled in place as ``pip install -e`` does."""
    po = catalog.po_file(lang, directory)
    po.parent.mkdir(parents=True)
    shutil.copy(catalog.po_file(lang), po)
    catalog.compile_catalog(po, catalog.mo_file(lang, directory), record_source=True)
    return po


def test_a_missing_catalog_is_english_and_logged_and_the_page_still_serves(tmp_path, caplog):
    (tmp_path / "fil" / "LC_MESSAGES").mkdir(parents=True)
    assert "messages.mo is missing" in catalog.problem("tl", tmp_path)
    with caplog.at_level(logging.ERROR, logger="node.catalog"):
        words = catalog.translations("tl", tmp_path).gettext("ALL CLEAR at %(place)s.")
    assert words == "ALL CLEAR at %(place)s."
    assert "tl is English here" in caplog.text and "pip install -e ." in caplog.text
    assert any(re.search(r"messages.mo is missing.*pip install -e \.", p) for p in catalog.problems(tmp_path))


def test_a_po_file_edited_after_the_build_is_stale_by_its_content_not_its_time(tmp_path, caplog):
    for lang in TRANSLATED:
        compiled(tmp_path, lang)
    assert catalog.problems(tmp_path) == []
    assert catalog.translations("es", tmp_path).gettext("ALL CLEAR at %(place)s.") == "TODO DESPEJADO en %(place)s."
    po = catalog.po_file("ko", tmp_path)
    # Times lie (a checkout, an unpacked archive, a Pi with no clock): a newer time alone is not stale.
    later = catalog.mo_file("ko", tmp_path).stat().st_mtime_ns + 1_000_000_000
    os.utime(po, ns=(later, later))
    assert catalog.problem("ko", tmp_path) == ""
    with po.open("a", encoding="utf-8") as fh:
        fh.write('\nmsgid "A word added since the build"\nmsgstr "빌드 후에 추가된 말"\n')
    assert catalog.problem("ko", tmp_path) == f"{po} changed after it was compiled"
    assert [p for p in catalog.problems(tmp_path) if "ko/LC_MESSAGES/messages.po changed after it was compiled" in p]
    # Still used: words are looked up by their English msgid, so a stale catalog is never wrong, only behind.
    with caplog.at_level(logging.ERROR, logger="node.catalog"):
        assert catalog.translations("ko", tmp_path).gettext("ALL CLEAR at %(place)s.") == "상황 종료: %(place)s."
        assert catalog.translations("ko", tmp_path).gettext("A word added since the build") == \
            "A word added since the build"
    assert "its newest words are English here" in caplog.text


def test_a_broken_po_file_stops_the_build_naming_the_message(tmp_path):
    po = compiled(tmp_path, "es")
    po.write_text(po.read_text(encoding="utf-8").replace("TODO DESPEJADO en %(place)s.", "TODO DESPEJADO en %(lugar)s."),
                  encoding="utf-8")
    with pytest.raises(CatalogError, match=r"ALL CLEAR at %\(place\)s"):
        catalog.compile_catalog(po, catalog.mo_file("es", tmp_path))


def test_only_the_languages_silbato_speaks():
    with pytest.raises(ValueError, match="'fr' is not one of en, es, ko, tl"):
        catalog.translations("fr")


# -- the node's words, as they were before they joined the catalog ---------------------------------

SPOKEN = {
    "en": {State.REPORTED: "Alert: immigration agents reported at Building 1. Do not open the door.",
           State.CONFIRMED: "Confirmed alert: immigration agents at Building 1. Do not open the door. Stay inside."},
    "es": {State.REPORTED: "Alerta: agentes de inmigración reportados en Building 1. No abra la puerta.",
           State.CONFIRMED: "Alerta confirmada: agentes de inmigración en Building 1. No abra la puerta. "
                            "Quédense adentro."},
    "ko": {State.REPORTED: "경보: Building 1에서 이민 단속 요원이 신고되었습니다. 문을 열지 마세요.",
           State.CONFIRMED: "확인된 경보: Building 1에 이민 단속 요원이 있습니다. 문을 열지 마세요. 안에 계세요."},
    "tl": {State.REPORTED: "Babala: may iniulat na ahente ng imigrasyon sa Building 1. Huwag buksan ang pinto.",
           State.CONFIRMED: "Kumpirmadong babala: may ahente ng imigrasyon sa Building 1. Huwag buksan ang pinto. "
                            "Manatili sa loob."},
}

TEXTS = {  # the default: the location's code, never its place name
    "en": {"reported": "RAID REPORTED at location 101, not yet confirmed.",
           "confirmed": "RAID CONFIRMED at location 101. Do not open the door.",
           "all_clear": "ALL CLEAR at location 101."},
    "es": {"reported": "REDADA REPORTADA en la ubicación 101, aún sin confirmar.",
           "confirmed": "REDADA CONFIRMADA en la ubicación 101. No abra la puerta.",
           "all_clear": "TODO DESPEJADO en la ubicación 101."},
    "ko": {"reported": "단속 신고: 위치 101, 아직 확인되지 않음.",
           "confirmed": "단속 확인: 위치 101. 문을 열지 마세요.",
           "all_clear": "상황 종료: 위치 101."},
    "tl": {"reported": "MAY ULAT NG RAID sa lokasyon 101, hindi pa kumpirmado.",
           "confirmed": "KUMPIRMADONG RAID sa lokasyon 101. Huwag buksan ang pinto.",
           "all_clear": "LIGTAS NA sa lokasyon 101."},
}

TEXTS_WITH_PLACES = {  # radio.text_alert_places
    "en": {"reported": "RAID REPORTED at Building 1, not yet confirmed.",
           "confirmed": "RAID CONFIRMED at Building 1. Do not open the door.",
           "all_clear": "ALL CLEAR at Building 1."},
    "es": {"reported": "REDADA REPORTADA en Building 1, aún sin confirmar.",
           "confirmed": "REDADA CONFIRMADA en Building 1. No abra la puerta.",
           "all_clear": "TODO DESPEJADO en Building 1."},
    "ko": {"reported": "단속 신고: Building 1, 아직 확인되지 않음.",
           "confirmed": "단속 확인: Building 1. 문을 열지 마세요.",
           "all_clear": "상황 종료: Building 1."},
    "tl": {"reported": "MAY ULAT NG RAID sa Building 1, hindi pa kumpirmado.",
           "confirmed": "KUMPIRMADONG RAID sa Building 1. Huwag buksan ang pinto.",
           "all_clear": "LIGTAS NA sa Building 1."},
}

@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_announcements_come_from_the_catalog(lang):
    for state, words in SPOKEN[lang].items():
        assert sentence(lang, state, "Building 1") == words


@pytest.mark.parametrize("lang", LANGUAGES)
def test_the_text_alerts_come_from_the_catalog(lang):
    for state, words in TEXTS[lang].items():
        assert text_alert(state, 101, "7-42", lang) == f"\a SILBATO 7-42: {words}"
    for state, words in TEXTS_WITH_PLACES[lang].items():
        assert text_alert(state, 101, "7-42", lang, place="Building 1") == f"\a SILBATO 7-42: {words}"
    assert text_alert("cancelled", 101, "7-42", lang) is None


def test_a_place_name_is_only_ever_data():
    place = "50% {off} %(place)s %(location)s"
    assert text_alert("all_clear", 101, "7-42", "es", place=place) == f"\a SILBATO 7-42: TODO DESPEJADO en {place}."
    assert sentence("es", State.REPORTED, place).startswith(f"Alerta: agentes de inmigración reportados en {place}.")
    assert text_alert("all_clear", 101, "7-42", "fr") == "\a SILBATO 7-42: ALL CLEAR at location 101."


# -- the build ------------------------------------------------------------------------------------

def test_a_release_wheel_carries_the_compiled_catalog_and_not_its_sources(tmp_path):
    wheel = build_release(tmp_path, "99.2.0")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        for lang in TRANSLATED:
            mo = catalog.mo_file(lang).relative_to(ROOT).as_posix()
            assert mo in names
            assert zf.read(mo) == catalog.mo_file(lang).read_bytes()
    assert not [n for n in names if n.endswith((".po", ".pot"))]
