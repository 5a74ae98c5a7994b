"""Settings: defaults, then the TOML file, then SILBATO_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from node import config
from node.config import SETTINGS, ConfigError, load, render


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def no_default_file(tmp_path, monkeypatch) -> Path:
    missing = tmp_path / "absent" / "silbato.toml"
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", missing)
    return missing


def test_defaults_match_the_declared_settings(no_default_file):
    cfg = load(env={})
    assert cfg.source == "defaults"
    assert set(cfg) == {s.name for s in SETTINGS}
    for setting in SETTINGS:
        assert cfg[setting.name] == setting.default, setting.name


def test_default_paths_derive_from_state_dir(no_default_file):
    cfg = load(env={})
    assert cfg.key_file == Path("/var/lib/silbato/node.key")
    assert cfg.db_file == Path("/var/lib/silbato/db/silbato.db")
    assert cfg.roster_file == Path("/var/lib/silbato/roster.json")
    assert cfg.languages == ["en", "es"]


def test_toml_sections_give_dotted_names(tmp_path):
    path = write(tmp_path / "s.toml", '[radio]\nport = "/dev/ttyACM0"\nhop_limit = 3\n'
                                      '[node]\nstate_dir = "/srv/silbato"\n')
    cfg = load(path, env={})
    assert cfg["radio.port"] == "/dev/ttyACM0"
    assert cfg["radio.hop_limit"] == 3
    assert cfg["node.state_dir"] == Path("/srv/silbato")
    assert cfg.source == str(path)


def test_integer_in_file_becomes_float_for_seconds(tmp_path):
    cfg = load(write(tmp_path / "s.toml", "[alerts]\nmerge_window = 30\n"), env={})
    assert cfg["alerts.merge_window"] == 30.0
    assert type(cfg["alerts.merge_window"]) is float


def test_environment_wins_over_the_file(tmp_path):
    path = write(tmp_path / "s.toml", '[radio]\nport = "/dev/from-file"\n')
    cfg = load(path, env={"SILBATO_RADIO_PORT": "/dev/from-env"})
    assert cfg["radio.port"] == "/dev/from-env"


def test_os_environ_is_read_when_no_env_given(tmp_path, monkeypatch):
    for name in [k for k in os.environ if k.startswith("SILBATO_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("SILBATO_RADIO_PORT", "/dev/from-env")
    path = write(tmp_path / "s.toml", '[radio]\nport = "/dev/from-file"\n')
    assert load(path)["radio.port"] == "/dev/from-env"


def test_environment_integers_are_parsed(no_default_file):
    cfg = load(env={"SILBATO_RADIO_HOP_LIMIT": "4", "SILBATO_ALERTS_RETENTION": "3600"})
    assert cfg["radio.hop_limit"] == 4
    assert cfg["alerts.retention"] == 3600.0


def test_unknown_key_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path / "s.toml", '[radio]\nprot = "/dev/ttyACM0"\n')
    with pytest.raises(ConfigError) as exc:
        load(path, env={})
    message = str(exc.value)
    assert str(path) in message
    assert "radio.prot" in message
    assert "did you mean radio.port?" in message


def test_unknown_key_without_close_match_has_no_hint(tmp_path):
    path = write(tmp_path / "s.toml", "[zzz]\nqqqqqq = 1\n")
    with pytest.raises(ConfigError, match="zzz.qqqqqq: unknown setting$"):
        load(path, env={})


def test_wrong_type_names_file_key_and_expected_type(tmp_path):
    path = write(tmp_path / "s.toml", '[web]\nport = "eighty"\n')
    with pytest.raises(ConfigError) as exc:
        load(path, env={})
    message = str(exc.value)
    assert str(path) in message
    assert "web.port" in message
    assert "expected an integer" in message
    assert "'eighty'" in message


def test_boolean_is_not_an_integer(tmp_path):
    path = write(tmp_path / "s.toml", "[radio]\nchannel = true\n")
    with pytest.raises(ConfigError, match="radio.channel: expected an integer"):
        load(path, env={})


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path / "s.toml", "[radio\nport = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML") as exc:
        load(path, env={})
    assert str(path) in str(exc.value)


def test_missing_explicit_file_is_an_error(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="config file not found") as exc:
        load(path, env={})
    assert str(path) in str(exc.value)


def test_missing_default_file_is_fine(no_default_file):
    assert not no_default_file.exists()
    assert load(env={}).source == "defaults"


def test_default_file_is_read_when_present(tmp_path, monkeypatch):
    path = write(tmp_path / "silbato.toml", "[web]\nport = 9090\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", path)
    cfg = load(env={})
    assert cfg["web.port"] == 9090
    assert cfg.source == str(path)


def test_environment_bad_int_names_the_variable(no_default_file):
    with pytest.raises(ConfigError) as exc:
        load(env={"SILBATO_WEB_PORT": "eighty"})
    message = str(exc.value)
    assert "$SILBATO_WEB_PORT" in message
    assert "web.port" in message
    assert "expected an integer" in message


def test_unknown_silbato_environment_variable_is_an_error_with_a_hint(no_default_file):
    with pytest.raises(ConfigError, match=r"\$SILBATO_RADIO_PROT: unknown setting .*did you mean \$SILBATO_RADIO_PORT\?"):
        load(env={"SILBATO_RADIO_PROT": "/dev/ttyACM0"})
    with pytest.raises(ConfigError, match=r"\$SILBATO_SCREENSHOTS_DIR: .*did you mean \$SILBATO_SCREENSHOT_DIR\?"):
        load(env={"SILBATO_SCREENSHOTS_DIR": "docs"})


REPO = Path(__file__).resolve().parent.parent


def named_silbato_variables() -> set[str]:
    """Every SILBATO_* variable the docs, the CI scripts, the units and the code name (not the tests' typos)."""
    import re

    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / ".ci").iterdir(),
             *(REPO / "systemd").iterdir(), *(REPO / "node").rglob("*.py"), *(REPO / "web").rglob("*.py"),
             *(REPO / "tests").rglob("*.py")]
    found = set()
    for path in files:
        if path.is_file() and path.name != "test_config.py":  # this file names typos on purpose
            found |= set(re.findall(r"\bSILBATO_[A-Z][A-Z_]*[A-Z]\b", path.read_text(encoding="utf-8")))
    return found


def test_the_scan_finds_the_documented_test_variables():
    assert {"SILBATO_LONG", "SILBATO_SCREENSHOT_DIR", "SILBATO_ROOT", "SILBATO_RADIO_PORT"} <= named_silbato_variables()


@pytest.mark.parametrize("variable", sorted(named_silbato_variables()))
def test_every_named_silbato_variable_is_a_setting_or_known(no_default_file, variable):
    """Exporting SILBATO_LONG=1 (or any variable the docs name) must not stop every command."""
    is_setting = variable in {config.env_name(s.name) for s in SETTINGS}
    assert is_setting or variable in config.NON_SETTING_ENV, f"{variable} is neither a setting nor known"
    if not is_setting:
        load(env={variable: "1"})  # accepted


@pytest.mark.parametrize("hop_limit", [1, 7])
def test_hop_limit_edges_are_accepted(no_default_file, hop_limit):
    assert load(env={"SILBATO_RADIO_HOP_LIMIT": str(hop_limit)})["radio.hop_limit"] == hop_limit


@pytest.mark.parametrize("hop_limit", [0, 8])
def test_hop_limit_out_of_range_is_refused(tmp_path, hop_limit):
    path = write(tmp_path / "s.toml", f"[radio]\nhop_limit = {hop_limit}\n")
    with pytest.raises(ConfigError, match=f"{path}: radio.hop_limit: expected an integer from 1 to 7, got {hop_limit}$"):
        load(path, env={})


BAD_VALUES = [  # (setting, a value of the right type out of its bounds or choices, the range in the message)
    ("web.port", 99999, "an integer from 1 to 65535"), ("web.port", 0, "from 1 to 65535"),
    ("web.port", -1, "from 1 to 65535"), ("web.live_clients", 0, "from 1 to 2000"),
    ("web.session_idle", 0.0, "a number above 0 and at most 31622400"),
    ("radio.channel", 8, "from 0 to 7"), ("radio.channel", -1, "from 0 to 7"), ("radio.hop_limit", 0, "from 1 to 7"),
    ("radio.preset", "FAST", "one of SHORT_TURBO, SHORT_FAST"),
    ("wifi.channel", 14, "from 1 to 13"), ("wifi.mode", "hotspot", "one of ap, lan, off"),
    ("wifi.security", "wep", "one of wpa2, open"),
    ("log.level", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
    ("alerts.merge_window", 0.0, "a number above 0"), ("alerts.expire_after", -5.0, "above 0"),
    ("alerts.retention", float("inf"), "above 0"), ("alerts.repeat_max_interval", float("nan"), "above 0"),
    ("hardware.hold_time", 61.0, "a number above 0 and at most 60"), ("hardware.cancel_window", 0.0, "above 0"),
    ("hardware.confirmed_duration", -1.0, "above 0"), ("hardware.button_pin", 0, "from 1 to 27"),
    ("hardware.siren_pin", 28, "from 1 to 27"), ("hardware.light_pin", 40, "from 1 to 27"),
    ("hardware.confirm_pin", -1, "from 0 to 27"), ("hardware.siren_kind", "horn", "one of relay, buzzer, piezo"),
    ("hardware.light_kind", "neon", "one of led, rgb"),
    ("supervision.period", 0.0, "above 0"), ("supervision.receipt_timeout", 0.0, "above 0"),
    ("supervision.airtime_budget", 0.6, "above 0 and at most 0.5"), ("supervision.airtime_budget", 0.0, "above 0"),
    ("supervision.heartbeat_interval", -1.0, "a number from 0 to 86400"),
    ("hardware.confirmed_duration", 1e9, "at most 3600"), ("alerts.retention", 1e300, "at most"),
    ("selftest.audible", "weekly", "one of never, monthly"),
]


@pytest.mark.parametrize("name, value, expected", BAD_VALUES, ids=lambda v: str(v))
def test_a_value_out_of_its_declared_bounds_names_the_key_the_range_and_the_value(name, value, expected):
    with pytest.raises(ConfigError, match="^test: " + name.replace(".", r"\.") + ": expected .*" + expected) as exc:
        config.from_mapping({name: value}, source="test")
    assert str(exc.value).endswith(f"got {value!r}")


@pytest.mark.parametrize("text", ["99999", "0", "-1", "http"])
def test_a_bad_port_in_the_environment_is_one_line_naming_the_variable(no_default_file, text):
    with pytest.raises(ConfigError, match=r"^\$SILBATO_WEB_PORT: web\.port: expected an integer"):
        load(env={"SILBATO_WEB_PORT": text})


def test_every_number_declares_its_bounds():
    unbounded = [s.name for s in SETTINGS if s.type in (int, float) and s.bounds is None]
    assert not unbounded, f"declare bounds for {unbounded}"


@pytest.mark.parametrize("name, value", [("web.port", 1), ("web.port", 65535), ("radio.channel", 0),
                                         ("supervision.heartbeat_interval", 0.0), ("hardware.confirm_pin", 0),
                                         ("supervision.airtime_budget", 0.5), ("hardware.hold_time", 0.05)])
def test_the_edges_of_the_bounds_are_accepted(name, value):
    assert config.from_mapping({name: value})[name] == value


def test_the_log_level_is_taken_in_any_case(no_default_file):
    assert load(env={"SILBATO_LOG_LEVEL": "debug"})["log.level"] == "DEBUG"


def test_known_languages_are_accepted(tmp_path):
    cfg = load(write(tmp_path / "s.toml", '[node]\nlanguages = "ko, tl"\n'), env={})
    assert cfg.languages == ["ko", "tl"]


def test_unknown_language_is_refused(tmp_path):
    path = write(tmp_path / "s.toml", '[node]\nlanguages = "en,fr"\n')
    with pytest.raises(ConfigError, match="node.languages: .*got 'fr'"):
        load(path, env={})


def test_non_positive_seconds_are_refused(tmp_path):
    path = write(tmp_path / "s.toml", "[alerts]\nexpire_after = 0\n")
    with pytest.raises(ConfigError, match="alerts.expire_after: expected a number above 0 and at most 31622400, got 0.0"):
        load(path, env={})


def test_nan_seconds_are_refused(tmp_path):
    path = write(tmp_path / "s.toml", "[alerts]\nexpire_after = nan\n")
    with pytest.raises(ConfigError):
        load(path, env={})


def test_unknown_log_level_is_refused(no_default_file):
    with pytest.raises(ConfigError, match="log.level"):
        load(env={"SILBATO_LOG_LEVEL": "LOUD"})


def test_render_names_every_setting(no_default_file):
    text = render(load(env={}))
    for setting in SETTINGS:
        section, key = setting.name.split(".", 1)
        assert f"[{section}]" in text
        assert f"\n{key} = " in text, setting.name


def test_render_round_trips_through_load(tmp_path):
    source = write(tmp_path / "in.toml", '[radio]\nport = "/dev/ttyACM0"\nhop_limit = 2\n'
                                         '[hardware]\nhold_time = 1.5\n')
    cfg = load(source, env={})
    again = load(write(tmp_path / "out.toml", render(cfg)), env={})
    assert dict(again) == dict(cfg)


def test_render_quotes_a_value_with_a_quote_and_a_backslash(tmp_path):
    import tomllib

    awkward = 'C:\\radio "B7"\\'  # C:\radio "B7"\ : a quote and backslashes, one at the end
    cfg = config.from_mapping({"wifi.ssid": awkward, "web.hotline": '\\"'})
    parsed = tomllib.loads(render(cfg))
    assert parsed["wifi"]["ssid"] == awkward and parsed["web"]["hotline"] == '\\"'
    again = load(write(tmp_path / "out.toml", render(cfg)), env={})
    assert dict(again) == dict(cfg)
