"""Every setting, declared once: name, type, default and help.

Settings load from a TOML file whose sections give dotted names (``[radio] port``
is ``radio.port``), then from ``SILBATO_*`` environment variables
(``SILBATO_RADIO_PORT``), which win. A bad file stops start-up with one line
naming the file, the key and what was expected.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from node.errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/silbato/silbato.toml")


@dataclass(frozen=True)
class Setting:
    name: str
    type: type
    default: Any
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("node.state_dir", Path, Path("/var/lib/silbato"),
            "Directory for the database, the node key and the installed roster."),
    Setting("node.key_file", str, "",
            "This node's Ed25519 private key (mode 0600). Empty: <state_dir>/node.key."),
    Setting("node.organizer_key", str, "/etc/silbato/organizer.pub",
            "The organizers' public key; only rosters signed by it are installed."),
    Setting("node.languages", str, "en,es",
            "Comma-separated languages of this node's page and announcements (en, es, ko, tl)."),
    Setting("alerts.merge_window", float, 600.0,
            "Seconds: repeated reports from the same place within this window merge into one incident."),
    Setting("alerts.expire_after", float, 4 * 3600.0,
            "Seconds: an active alert with no state change for this long becomes EXPIRED."),
    Setting("alerts.retention", float, 72 * 3600.0,
            "Seconds: ended alerts and their events older than this are purged."),
    Setting("alerts.repeat_max_interval", float, 600.0,
            "Seconds: the longest gap between re-sends of a state this node signed (backoff cap)."),
    Setting("hardware.button_pin", int, 17,
            "GPIO (BCM) of the panic button; wire it between this pin and GND."),
    Setting("hardware.hold_time", float, 2.0,
            "Seconds the panic button must be held to raise a report."),
    Setting("hardware.siren_pin", int, 27,
            "GPIO (BCM) driving the siren relay or buzzer (active high)."),
    Setting("hardware.light_pin", int, 22,
            "GPIO (BCM) of the status LED (through a 330 ohm resistor to GND)."),
    Setting("radio.port", str, "",
            "Serial device of the Meshtastic radio (prefer /dev/serial/by-id/...). Empty: no radio."),
    Setting("radio.channel", int, 0, "Meshtastic channel index the frames are sent on."),
    Setting("radio.hop_limit", int, 7, "Meshtastic hop limit for our frames (1-7)."),
    Setting("web.host", str, "0.0.0.0", "Address the neighbors' page listens on."),
    Setting("web.port", int, 8080, "TCP port of the neighbors' page."),
    Setting("log.level", str, "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR."),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", Path: "a path"}


def env_name(name: str) -> str:
    """``radio.port`` -> ``SILBATO_RADIO_PORT``."""
    return "SILBATO_" + name.replace(".", "_").upper()


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _coerce(setting: Setting, value: Any, where: str) -> Any:
    """Check a TOML value (or parse an environment string) against the setting's type."""
    want = setting.type
    expected = f"{where}: {setting.name}: expected {_TYPE_WORDS[want]}"
    if isinstance(value, str) and where.startswith("$"):
        # Environment variables are always strings; parse them.
        try:
            if want is bool:
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes")
            return want(value)
        except ValueError:
            raise ConfigError(f"{expected}, got {value!r}") from None
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if want is Path and isinstance(value, str):
        return Path(value)
    if want is int and isinstance(value, bool):
        raise ConfigError(f"{expected}, got {value!r}")
    if not isinstance(value, want):
        raise ConfigError(f"{expected}, got {value!r}")
    return value


class Config(Mapping[str, Any]):
    """The effective settings: defaults, then the file, then the environment."""

    def __init__(self, values: Mapping[str, Any], source: str = "defaults"):
        self._values = dict(values)
        self.source = source

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    @property
    def state_dir(self) -> Path:
        return Path(self["node.state_dir"])

    @property
    def key_file(self) -> Path:
        return Path(self["node.key_file"]) if self["node.key_file"] else self.state_dir / "node.key"

    @property
    def roster_file(self) -> Path:
        return self.state_dir / "roster.json"

    @property
    def db_file(self) -> Path:
        return self.state_dir / "silbato.db"

    @property
    def languages(self) -> list[str]:
        return [lang.strip() for lang in self["node.languages"].split(",") if lang.strip()]


def load(path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Load settings. ``path=None`` reads the default file if it exists.

    A path given by the user that does not exist is an error; so is an unknown
    key or a value of the wrong type, in the file or in the environment.
    """
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    source = "defaults"
    if path is None:
        explicit, file_path = False, DEFAULT_CONFIG_PATH
    else:
        explicit, file_path = True, Path(path)
    if file_path.exists():
        try:
            data = tomllib.loads(file_path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file_path}: not valid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{file_path}: cannot read: {exc.strerror}") from None
        for name, value in _flatten(data).items():
            setting = BY_NAME.get(name)
            if setting is None:
                close = difflib.get_close_matches(name, BY_NAME, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{file_path}: {name}: unknown setting{hint}")
            values[name] = _coerce(setting, value, str(file_path))
        source = str(file_path)
    elif explicit:
        raise ConfigError(f"{file_path}: config file not found")
    for setting in SETTINGS:
        var = env_name(setting.name)
        if var in env:
            values[setting.name] = _coerce(setting, env[var], "$" + var)
    unknown_env = [k for k in env if k.startswith("SILBATO_") and k not in {env_name(s.name) for s in SETTINGS}
                   and k not in _NON_SETTING_ENV]
    if unknown_env:
        raise ConfigError(f"${unknown_env[0]}: unknown setting (environment variable)")
    return from_mapping(overrides or {}, source=source, base=values)


def from_mapping(overrides: Mapping[str, Any], *, source: str = "defaults",
                 base: Mapping[str, Any] | None = None) -> Config:
    """Defaults (or ``base``) with ``overrides`` applied, checked like a file."""
    values = dict(base) if base is not None else {s.name: s.default for s in SETTINGS}
    for name, value in overrides.items():
        if name not in BY_NAME:
            raise ConfigError(f"{source}: {name}: unknown setting")
        values[name] = _coerce(BY_NAME[name], value, source)
    _validate(values, source)
    return Config(values, source)


# Environment variables with the SILBATO_ prefix that are not settings.
_NON_SETTING_ENV = {"SILBATO_REQUIRE_ALL_TESTS"}


def _validate(values: dict[str, Any], source: str) -> None:
    """Range checks that a type alone cannot express."""
    if not 1 <= values["radio.hop_limit"] <= 7:
        raise ConfigError(f"{source}: radio.hop_limit: expected 1 to 7, got {values['radio.hop_limit']}")
    for name in ("alerts.merge_window", "alerts.expire_after", "alerts.retention",
                 "alerts.repeat_max_interval", "hardware.hold_time"):
        if not 0 < values[name] < float("inf"):  # also refuses NaN
            raise ConfigError(f"{source}: {name}: expected a positive number of seconds, got {values[name]}")
    bad = [lang for lang in values["node.languages"].split(",") if lang.strip() not in ("en", "es", "ko", "tl")]
    if bad:
        raise ConfigError(f"{source}: node.languages: expected some of en, es, ko, tl, got {bad[0]!r}")
    if values["log.level"].upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{source}: log.level: expected DEBUG, INFO, WARNING or ERROR, got {values['log.level']!r}")


def render(config: Config) -> str:
    """The effective settings as TOML-like lines, for ``silbato config show``."""
    lines = [f"# effective settings (file: {config.source})"]
    section = None
    for setting in SETTINGS:
        head, key = setting.name.split(".", 1)
        if head != section:
            lines.append(f"\n[{head}]")
            section = head
        value = config[setting.name]
        shown = f'"{value}"' if isinstance(value, (str, Path)) else str(value).lower() if isinstance(value, bool) else value
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"
