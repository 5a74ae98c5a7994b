"""Bell text alerts: codes only on air unless the operator opts in to place names, and doctor says so."""

import pytest

from node.appliance.doctor import WARN, Doctor
from node.appliance.host import DirectoryHost, Layout
from node.catalog import LANGUAGES
from node.radio.link import TEXT_ALERTS, text_alert
from node.sim import provision
from node.store import Store

LONGEST_ID = f"{2**16 - 1}-{2**32 - 1}"
TEXT_LIMIT = 200  # bytes: a Meshtastic text message holds a little more (228); keep a margin


@pytest.mark.parametrize("lang", LANGUAGES)
def test_a_text_alert_names_the_location_by_its_code_and_fits_one_message(lang):
    for state in TEXT_ALERTS:
        text = text_alert(state, 65535, LONGEST_ID, lang)
        assert "65535" in text and LONGEST_ID in text
        assert len(text.encode()) <= TEXT_LIMIT


def test_a_place_typed_with_a_family_name_is_not_on_air_unless_asked():
    place = "apt 4B Reyes"
    assert place not in text_alert("confirmed", 104, "3-17", "en")
    assert text_alert("confirmed", 104, "3-17", "en", place=place) == (
        "\a SILBATO 3-17: RAID CONFIRMED at apt 4B Reyes. Do not open the door.")


@pytest.fixture
def settings(tmp_path):
    """A provisioned node's settings file, and a /dev with a GPIO chip."""
    cfg = provision(tmp_path / "block", 2).configs[0]
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n')
    Store(cfg.db_file).close()
    (tmp_path / "dev").mkdir()
    return toml


def radio_findings(toml):
    doctor = Doctor(DirectoryHost(Layout(toml.parent)), config_path=toml, dev=toml.parent / "dev")
    return [r for r in doctor.run() if r.check == "radio"]


def test_doctor_warns_while_place_names_go_on_air(settings):
    base = settings.read_text()
    assert not [r for r in radio_findings(settings) if "text_alert_places" in r.detail]
    settings.write_text(base + "[radio]\ntext_alert_places = true\n")
    (warning,) = [r for r in radio_findings(settings) if "text_alert_places" in r.detail]
    assert warning.status == WARN and "place names" in warning.detail
    settings.write_text(base + "[radio]\ntext_alert_places = true\ntext_alerts = false\n")  # no texts at all
    assert not [r for r in radio_findings(settings) if "text_alert_places" in r.detail]
