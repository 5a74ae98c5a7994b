"""Every setting, declared once: name, type, default, help, and the bounds or choices of its value.

Settings load from a TOML file whose sections give dotted names (``[radio] port``
is ``radio.port``), then from ``SILBATO_*`` environment variables
(``SILBATO_RADIO_PORT``), which win. A bad value stops start-up with one line
naming the file (or the variable), the key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import tomli_w

from node.errors import ConfigError, RosterError
from node.protocol.airtime import PRESETS

DEFAULT_CONFIG_PATH = Path("/etc/silbato/silbato.toml")


@dataclass(frozen=True)
class Range:
    """The values a number may take: from ``low`` (or above it, if ``low_open``) to ``high``, finite."""

    low: float
    high: float = math.inf
    low_open: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        return math.isfinite(value) and above and value <= self.high  # NaN fails every comparison

    def words(self) -> str:
        """``from 1 to 65535``, ``above 0``, ``above 0 and at most 0.5``, ``0 or more``."""
        lo, hi = _number(self.low), _number(self.high)
        low = f"above {lo}" if self.low_open else f"{lo} or more"
        if self.high == math.inf:
            return low
        return f"above {lo} and at most {hi}" if self.low_open else f"from {lo} to {hi}"


def _number(value: float) -> str:
    """``31622400`` rather than ``3.16224e+07``; ``0.5`` as it is."""
    return str(int(value)) if math.isfinite(value) and value == int(value) else f"{value:g}"


def between(low: float, high: float = math.inf) -> Range:
    """``low`` to ``high``, both allowed."""
    return Range(low, high)


def above(low: float, high: float = math.inf) -> Range:
    """More than ``low`` (seconds: ``above(0)``), at most ``high``."""
    return Range(low, high, low_open=True)


GPIO = between(1, 27)  # BCM numbers of the Pi's header
# Seconds: above 0 and at most a year, so that no setting can overflow a timer or a pattern.
SECONDS = above(0, 366 * 86400.0)


@dataclass(frozen=True)
class Setting:
    """One setting. ``bounds`` (numbers) or ``choices`` (words) are checked on load, with one message."""

    name: str
    type: type
    default: Any
    help: str
    bounds: Range | None = None
    choices: tuple[str, ...] = ()
    block: bool = False  # block-wide: must agree on every node, so the signed roster may carry it (BLOCK_SETTINGS)

    @property
    def expected(self) -> str:
        """What a value must be, in words: ``an integer from 1 to 65535``, ``one of ap, lan, off``."""
        if self.choices:
            return "one of " + ", ".join(self.choices)
        words = _TYPE_WORDS[self.type]
        return f"{words} {self.bounds.words()}" if self.bounds else words


SETTINGS: tuple[Setting, ...] = (
    Setting("node.state_dir", Path, Path("/var/lib/silbato"),
            "Directory of the node daemon: its key and the installed roster; the database is in its db/ "
            "folder, the only part the page's user may write."),
    Setting("node.key_file", str, "",
            "This node's Ed25519 private key (mode 0600). Empty: <state_dir>/node.key."),
    Setting("node.organizer_key", str, "/etc/silbato/organizer.pub",
            "The organizers' public key; only rosters signed by it are installed."),
    Setting("node.languages", str, "en,es",
            "Comma-separated languages of this node's page and announcements (en, es, ko, tl)."),
    Setting("alerts.merge_window", float, 600.0,
            "Seconds: repeated reports from the same place within this window merge into one incident.",
            bounds=SECONDS, block=True),
    Setting("alerts.expire_after", float, 4 * 3600.0,
            "Seconds: an active alert with no state change for this long becomes EXPIRED.",
            bounds=SECONDS, block=True),
    Setting("alerts.retention", float, 72 * 3600.0,
            "Seconds: ended alerts and their events older than this are purged.",
            bounds=SECONDS),
    Setting("alerts.repeat_max_interval", float, 600.0,
            "Seconds: the longest gap between re-sends of a state this node signed (backoff cap).",
            bounds=SECONDS),
    Setting("hardware.button_pin", int, 17,
            "GPIO (BCM) of the panic button; wire it between this pin and GND.",
            bounds=GPIO),
    Setting("hardware.hold_time", float, 2.0,
            "Seconds the panic button must be held to raise a report.",
            bounds=above(0, 60)),
    Setting("hardware.siren_pin", int, 27,
            "GPIO (BCM) driving the siren relay or buzzer (active high).",
            bounds=GPIO),
    Setting("hardware.light_pin", int, 22,
            "GPIO (BCM) of the status LED (through a 330 ohm resistor to GND).",
            bounds=GPIO),
    Setting("hardware.siren_kind", str, "relay",
            "How the siren is wired: relay (relay module or transistor switching a siren), "
            "buzzer (active buzzer) or piezo (passive piezo, driven with tones).",
            choices=("relay", "buzzer", "piezo")),
    Setting("hardware.confirmed_duration", float, 60.0,
            "Seconds the CONFIRMED whistle pattern (three long blasts) keeps repeating.",
            bounds=above(0, 3600)),  # the pattern is unrolled into a list of steps
    Setting("hardware.quiet_hours", str, "",
            "Local time span HH:MM-HH:MM (e.g. 22:00-07:00) in which REPORTED and TEST sound softer. "
            "CONFIRMED is never softened. Empty: no quiet hours."),
    Setting("hardware.cancel_window", float, 10.0,
            "Seconds after a hold raised a report in which pressing the button again withdraws it "
            "as a false alarm. Later, withdrawing is a captain's action.",
            bounds=SECONDS),
    Setting("hardware.confirm_pin", int, 0,
            "GPIO (BCM) of the optional second button (to GND): held, it confirms another node's "
            "report or declares all clear. 0: no second button.",
            bounds=between(0, 27)),
    Setting("hardware.light_kind", str, "led",
            "Status light: led (one LED on hardware.light_pin) or rgb (an RGB LED or three LEDs "
            "on hardware.rgb_pins).",
            choices=("led", "rgb")),
    Setting("hardware.rgb_pins", str, "22,23,24",
            "GPIOs (BCM) of the red, green and blue LEDs when hardware.light_kind is rgb."),
    Setting("speaker.device", str, "",
            "ALSA device of the speaker for aplay (e.g. plughw:1,0 or default). Empty: no speaker."),
    Setting("speaker.recordings_dir", str, "/etc/silbato/recordings",
            "Folder of recorded announcements for languages espeak-ng cannot speak (tl): "
            "<lang>/<state>.wav or <lang>/<state>-<location>.wav."),
    Setting("radio.port", str, "",
            "Serial device of the Meshtastic radio (prefer /dev/serial/by-id/...). Empty: no radio."),
    Setting("radio.tcp", str, "",
            "host:port of a Meshtastic radio or meshtasticd on the network, instead of radio.port."),
    Setting("radio.channel", int, 0, "Meshtastic channel index the frames are sent on (0-7).",
            bounds=between(0, 7)),
    Setting("radio.text_alerts", bool, True,
            "Also send REPORTED, CONFIRMED and ALL CLEAR as a text message with a bell, for plain Meshtastic users. "
            "The text names the location by its code, never its place name (see radio.text_alert_places)."),
    Setting("radio.text_alert_places", bool, False,
            "Put the roster's place names in the text alerts instead of the location codes. Anyone on the "
            "channel can read them and phone apps keep them: silbato doctor warns while this is on."),
    Setting("radio.hop_limit", int, 7, "Meshtastic hop limit for our frames (1-7).",
            bounds=between(1, 7)),
    Setting("radio.preset", str, "MEDIUM_FAST",
            "The radio's Meshtastic modem preset, for sizing heartbeats to the airtime budget "
            "(SHORT_FAST, MEDIUM_FAST, LONG_FAST, ...; 'silbato radio info' shows the radio's own).",
            choices=tuple(PRESETS), block=True),
    Setting("supervision.period", float, 180.0,
            "Seconds without any sign of life before a building is shown as TROUBLE (silent) everywhere; "
            "the block uses a longer period on a preset too slow for it at the airtime budget (LONG_FAST: 590).",
            bounds=SECONDS, block=True),
    Setting("supervision.airtime_budget", float, 0.05,
            "Share of the channel that heartbeats may use, which sets how often they are sent.",
            bounds=above(0, 0.5), block=True),
    Setting("supervision.heartbeat_interval", float, 0.0,
            "Seconds between heartbeats; 0 derives it from radio.preset and supervision.airtime_budget.",
            bounds=between(0, 86400)),
    Setting("supervision.receipt_timeout", float, 120.0,
            "Seconds after an alert state after which a building that has not confirmed receiving it is missing.",
            bounds=SECONDS, block=True),
    Setting("selftest.schedule", str, "",
            "Weekly self-test, as DAY HH:MM in local time (e.g. 'Sun 12:00'); set it on one node of the block. "
            "Empty: no scheduled self-test."),
    Setting("selftest.audible", str, "never",
            "never: the self-test is silent everywhere; monthly: the month's first one sounds the test chirp.",
            choices=("never", "monthly")),
    Setting("radio.channel_key_file", str, "/etc/silbato/channel.key",
            "The block's Meshtastic channel key (base64, 16 or 32 bytes, mode 0600), used by 'silbato radio configure'."),
    Setting("web.host", str, "0.0.0.0", "Address the neighbors' page listens on."),
    Setting("web.port", int, 8080, "TCP port of the neighbors' page.",
            bounds=between(1, 65535)),
    Setting("web.state_dir", Path, Path("/var/lib/silbato-web"),
            "Directory of the page's own files (its secret, readable only by the page's user)."),
    Setting("web.session_idle", float, 1800.0,
            "Seconds: a captain's session that has not been used for this long ends (a login lasts 12 h at most).",
            bounds=SECONDS),
    Setting("web.hotline", str, "",
            "Phone number of the local rapid-response hotline, shown on the page. Empty: not shown."),
    Setting("web.live_clients", int, 200,
            "How many open pages get live updates at once (one server thread each); more poll every 15 s.",
            bounds=between(1, 2000)),
    Setting("evidence.recipients", str, "",
            "The organizers' age public keys (age1..., comma-separated) that neighbors' photos, video and "
            "statements are sealed to as they arrive. Empty: the page takes no evidence."),
    Setting("evidence.max_item", int, 200_000_000,
            "Bytes: the largest photo, video or statement one neighbor may send at once.",
            bounds=between(1024, 2**40)),
    Setting("evidence.max_total", int, 2_000_000_000,
            "Bytes: the most sealed evidence the node keeps (<state_dir>/evidence); past it the page says it is full.",
            bounds=between(1024, 2**44)),
    Setting("evidence.keep", float, 30 * 86400.0,
            "Seconds: how long sealed evidence is kept on the node (longer than alerts.retention; "
            "the node cannot open it).",
            bounds=SECONDS),
    Setting("wifi.mode", str, "off",
            "Building Wi-Fi, written by 'silbato wifi apply': ap (the node is a hotspot and its page a "
            "captive portal), lan (the node joins the building's Wi-Fi as silbato-<name>.local) or off.",
            choices=("ap", "lan", "off")),
    Setting("wifi.ssid", str, "",
            "Network name: of the hotspot (ap; empty: Silbato <block>), or of the building's Wi-Fi to join "
            "(lan; empty: keep the Wi-Fi the Pi already joins)."),
    Setting("wifi.security", str, "wpa2", "ap: wpa2 (with wifi.password) or open. lan: wpa2 or open.",
            choices=("wpa2", "open")),
    Setting("wifi.password", str, "", "WPA2 passphrase, 8 to 63 characters (keep this file 0640)."),
    Setting("wifi.interface", str, "wlan0", "The Wi-Fi interface."),
    Setting("wifi.address", str, "10.42.0.1", "ap: the node's address on its hotspot (a /24 is handed out)."),
    Setting("wifi.channel", int, 6, "ap: the 2.4 GHz channel (1-13).",
            bounds=between(1, 13)),
    Setting("wifi.name", str, "",
            "lan: the node is silbato-<name>.local. Empty: its name on the roster, in lower case (B7: silbato-b7)."),
    Setting("sms.enabled", bool, False,
            "This node is the block's SMS gateway (a modem and gammu-smsd on it): 'silbato install' and "
            "'silbato update' enable and start silbato-gateway. False: the unit stays disabled (docs/sms.md)."),
    Setting("sms.smsd_pid", Path, Path("/run/gammu-smsd.pid"),
            "The SMS gateway: gammu-smsd's PID file; when it names no running process the node shows "
            "'SMS gateway: no modem'. Empty: not checked."),
    Setting("sms.spool", Path, Path("/var/spool/silbato-sms"),
            "The SMS gateway: gammu-smsd's files-backend folders (inbox, outbox, sent, error) under this one."),
    Setting("sms.socket", Path, Path("/run/silbato-gateway/unlock.sock"),
            "The SMS gateway: the socket on which 'silbato sms unlock' hands it the passphrase."),
    Setting("sms.max_age", float, 900.0,
            "Seconds: the SMS gateway texts about an alert only if it changed this recently (a gateway "
            "started late does not text old news).", bounds=SECONDS),
    Setting("neighborhood.name", str, "",
            "The neighborhood this block belongs to (its MQTT topics are silbato/<name>/...). Empty: the "
            "block shares nothing beyond itself (docs/neighborhood.md)."),
    Setting("neighborhood.roster", str, "",
            "The installed neighborhood roster (the member blocks, signed by the neighborhood's "
            "organizers). Empty: <state_dir>/neighborhood.json."),
    Setting("neighborhood.organizer_key", str, "/etc/silbato/neighborhood.pub",
            "The neighborhood organizers' public key; only neighborhood rosters signed by it are installed."),
    Setting("neighborhood.cross", str, "confirmed,all_clear,cancelled",
            "Which alert states cross between blocks (comma-separated: reported, confirmed, all_clear, "
            "cancelled), unless the neighborhood roster carries a policy."),
    Setting("neighborhood.cross_to", str, "neighbors",
            "To which blocks alerts cross: the neighbors the neighborhood roster names, or all its blocks; "
            "unless the neighborhood roster carries a policy.", choices=("neighbors", "all")),
    Setting("neighborhood.siren", bool, False,
            "A raid confirmed nearby sounds the siren's CONFIRMED pattern. False: a short chime only."),
    Setting("bridge.enabled", bool, False,
            "This node is one of its block's bridge nodes (a network path to the neighborhood's MQTT "
            "broker): 'silbato install' and 'silbato update' enable and start silbato-bridge, and the "
            "daemon shares its block's confirmed alerts and passes on its neighbors' (docs/neighborhood.md)."),
    Setting("bridge.broker", str, "",
            "The bridge: the neighborhood's MQTT broker, host:port (1883 plain, 8883 with TLS). Empty: the "
            "bridge has nowhere to connect and shows the trouble 'neighborhood link down'."),
    Setting("bridge.tls", bool, False,
            "The bridge: connect to the broker over TLS (required when the broker is across the internet)."),
    Setting("bridge.ca_file", str, "",
            "The bridge with TLS: the certificate authority that signed the broker's certificate (PEM). "
            "Empty: the system's trusted authorities."),
    Setting("bridge.username", str, "",
            "The bridge: this block's user name on the broker (the ACL lets it publish only under its "
            "block's topics). Empty: anonymous."),
    Setting("bridge.password_file", str, "",
            "The bridge: a file (mode 0600, owned by silbato-bridge) holding this block's broker password "
            "on its first line. Empty: no password."),
    Setting("bridge.client_id", str, "",
            "The bridge's MQTT client id, fixed so the broker keeps its session across restarts. Empty: "
            "silbato-<neighborhood>-<block>-<node id> (from the daemon's store), or silbato-<host name>."),
    Setting("log.level", str, "INFO", "Logging level: DEBUG, INFO, WARNING or ERROR.",
            choices=("DEBUG", "INFO", "WARNING", "ERROR")),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
# The settings that must agree on every node (neighbours judge each other by them, and every node
# must show the same incidents and coverage). The roster carries them; see ``with_roster``.
BLOCK_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.block)

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


@dataclass(frozen=True)
class BlockSettings:
    """The block-wide settings of the installed roster, applied over this node's own (``with_roster``)."""

    version: int                 # the roster's version
    carried: dict[str, Any]      # name -> the roster's value, which is the one used
    local: "Config"              # this node's settings before the roster's were applied (file, environment)

    def disagreements(self) -> list[tuple[str, Any, Any]]:
        """``(name, local value, roster value)`` of each block-wide setting this node's file sets otherwise."""
        return [(name, self.local[name], value) for name, value in self.carried.items()
                if self.local[name] != value]

    def not_carried(self) -> list[str]:
        """The block-wide settings the roster does not carry: this node's own values are used."""
        return [name for name in BLOCK_SETTINGS if name not in self.carried]


class Config(Mapping[str, Any]):
    """The effective settings: defaults, then the file, then the environment; then, once the
    roster is read (``with_roster``), the block-wide settings it carries, kept in ``block``."""

    def __init__(self, values: Mapping[str, Any], source: str = "defaults", *, block: BlockSettings | None = None):
        self._values = dict(values)
        self.source = source
        self.block = block  # None: no roster applied (yet)

    def origin(self, name: str) -> str:
        """Where the value of ``name`` comes from: ``roster v3`` or this node's settings (``source``)."""
        if self.block is not None and name in self.block.carried:
            return f"roster v{self.block.version}"
        return self.source

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
    def db_dir(self) -> Path:
        """The database's folder: the only part of the state directory the page's user may write."""
        return self.state_dir / "db"

    @property
    def db_file(self) -> Path:
        return self.db_dir / "silbato.db"

    @property
    def evidence_dir(self) -> Path:
        """Sealed evidence: written by the page's user, chained and purged by the daemon (``node.statedir``)."""
        return self.state_dir / "evidence"

    @property
    def web_secret_file(self) -> Path:
        """The page's secret (signs its cookies), kept across restarts; ``silbato web rotate-secret``."""
        return Path(self["web.state_dir"]) / "secret_key"

    @property
    def languages(self) -> list[str]:
        return [lang.strip() for lang in self["node.languages"].split(",") if lang.strip()]


# Environment variables with the SILBATO_ prefix that are not settings, and who reads them. Any
# other SILBATO_* variable is taken for a mistyped setting and stops every command.
NON_SETTING_ENV: dict[str, str] = {
    "SILBATO_ROOT": "--root of install, update, doctor, status... (docs/appliance.md)",
    "SILBATO_REQUIRE_ALL_TESTS": "tests: a skipped test fails the run (.ci/test)",
    "SILBATO_LONG": "tests: the adversarial suite's long sizes (docs/development.md)",
    "SILBATO_SCREENSHOT_DIR": "tests: where the browser test saves the README's picture (docs/development.md)",
    "SILBATO_WEB_DATABASE": "web: the database of create_app() without settings (web/__init__.py)",
    "SILBATO_SMS_PASSPHRASE": "silbato sms: the SMS lists' passphrase, for scripts (docs/sms.md)",
}


def _unknown_env(env: Mapping[str, str]) -> None:
    """Refuse a SILBATO_* variable that is neither a setting nor in NON_SETTING_ENV, with a hint."""
    known = [env_name(s.name) for s in SETTINGS] + list(NON_SETTING_ENV)
    for var in env:
        if var.startswith("SILBATO_") and var not in known:
            close = difflib.get_close_matches(var, known, n=1)
            hint = f"; did you mean ${close[0]}?" if close else ""
            raise ConfigError(f"${var}: unknown setting (environment variable{hint})")


def load(path: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Load settings. ``path=None`` reads the default file if it exists.

    A path given by the user that does not exist is an error; so is an unknown
    key or a value of the wrong type, in the file or in the environment.
    """
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    origins: dict[str, str] = {}  # where each value that is not a default came from, for the messages
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
            origins[name] = str(file_path)
        source = str(file_path)
    elif explicit:
        raise ConfigError(f"{file_path}: config file not found")
    for setting in SETTINGS:
        var = env_name(setting.name)
        if var in env:
            values[setting.name] = _coerce(setting, env[var], "$" + var)
            origins[setting.name] = "$" + var
    _unknown_env(env)
    return from_mapping(overrides or {}, source=source, base=values, origins=origins)


def from_mapping(overrides: Mapping[str, Any], *, source: str = "defaults",
                 base: Mapping[str, Any] | None = None, origins: Mapping[str, str] | None = None) -> Config:
    """Defaults (or ``base``) with ``overrides`` applied, checked like a file.

    ``origins`` names where a value of ``base`` came from (a file, ``$SILBATO_...``), for the messages.
    """
    values = dict(base) if base is not None else {s.name: s.default for s in SETTINGS}
    origins = dict(origins or {})
    for name, value in overrides.items():
        if name not in BY_NAME:
            raise ConfigError(f"{source}: {name}: unknown setting")
        values[name] = _coerce(BY_NAME[name], value, source)
        origins[name] = source
    _validate(values, source, origins)
    return Config(values, source)


def block_settings(carried: Any, where: str = "roster") -> dict[str, Any]:
    """Check the block-wide settings a roster carries (``{"supervision.period": 240, ...}``) and return
    them with their types (an integer number of seconds becomes a float).

    Each key must be one of ``BLOCK_SETTINGS``, and each value of its type, within its bounds or
    choices. Raises ``RosterError`` naming the key: used when the roster is signed and when it is read.
    """
    if carried is None:
        return {}
    if not isinstance(carried, dict):
        raise RosterError(f"{where}: settings: expected an object such as "
                          '{"supervision.period": 180}, got ' + repr(carried))
    out = {}
    for name, value in carried.items():
        if name not in BLOCK_SETTINGS:
            close = difflib.get_close_matches(str(name), BLOCK_SETTINGS, n=1)
            what = ("not a block-wide setting (it is this node's own, in its settings file)" if name in BY_NAME
                    else "unknown setting" + (f" (did you mean {close[0]}?)" if close else ""))
            raise RosterError(f"{where}: settings: {name}: {what}; a roster may carry {', '.join(BLOCK_SETTINGS)}")
        setting = BY_NAME[name]
        try:
            typed = _coerce(setting, value, f"{where}: settings")
            _check_declared(setting, typed, f"{where}: settings", given=value)
        except ConfigError as exc:
            raise RosterError(str(exc)) from None
        out[name] = typed
    return out


def with_roster(cfg: Config, roster) -> Config:
    """``cfg`` with the block-wide settings that ``roster`` (a ``node.protocol.keys.Roster``) carries
    in place of this node's own: every node then supervises by the same period, preset and budget.

    The result's ``block`` says what came from the roster and what this node's file said; applied
    again (a restart), it starts from the same local settings. A roster that carries none (older
    rosters) leaves every value as it is. Raises ``RosterError`` naming the key of a bad value.
    """
    local = cfg.block.local if cfg.block is not None else cfg
    try:
        carried = block_settings(roster.settings, f"roster v{roster.version}")
    except RosterError as exc:
        raise RosterError(f"{exc}: this node cannot use the roster; ask the organizers to sign a new "
                          "version with a valid value") from None
    values = {name: local[name] for name in local}
    values.update(carried)
    return Config(values, local.source, block=BlockSettings(roster.version, carried, local))


def describe_block(cfg: Config) -> str:
    """One line on the block-wide settings: which the roster sets and, where it differs, what this
    node's file said (for the daemon's log, ``doctor`` and ``status``)."""
    block = cfg.block
    if block is None:
        return "no roster read: this node's own values are used for " + ", ".join(BLOCK_SETTINGS)
    if not block.carried:
        return (f"roster v{block.version} carries no block-wide settings: this node's own values are used "
                f"({cfg.source}); give every node the same {', '.join(BLOCK_SETTINGS)}")
    differ = block.disagreements()
    said = ", ".join(f"{name} {_shown(roster)} (local {_shown(local)})" for name, local, roster in differ)
    line = (f"roster v{block.version} sets {len(block.carried)} block-wide setting"
            f"{'s' if len(block.carried) != 1 else ''}")
    line += (f"; this node's own settings differ and the roster's are used: {said}" if differ
             else ", and this node's own settings agree")
    if block.not_carried():
        line += f"; not in the roster, this node's own: {', '.join(block.not_carried())}"
    return line


def _shown(value: Any) -> str:
    return _number(value) if isinstance(value, float) else str(value)


_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_weekly(value: str) -> tuple[int, int, int]:
    """``"Sun 12:00"`` -> ``(6, 12, 0)`` (weekday with Monday 0, hour, minute); raises ValueError."""
    match = re.fullmatch(r"\s*([A-Za-z]{3})[a-z]*\s+(\d{1,2}):(\d{2})\s*", value)
    if not match or match[1].lower() not in _DAYS or int(match[2]) > 23 or int(match[3]) > 59:
        raise ValueError(f"expected a weekday and a time such as 'Sun 12:00', got {value!r}")
    return _DAYS.index(match[1].lower()), int(match[2]), int(match[3])


def parse_host_port(value: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``; raises ``ValueError`` with the reason."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


def parse_quiet_hours(value: str) -> tuple[int, int] | None:
    """``"22:00-07:00"`` -> ``(1320, 420)``, minutes after local midnight; ``""`` -> ``None``.

    Raises ``ValueError`` with the reason. The span may wrap past midnight.
    """
    if not value.strip():
        return None
    match = re.fullmatch(r"\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*-\s*([01]?[0-9]|2[0-3]):([0-5][0-9])\s*", value)
    if match is None:
        raise ValueError(f"expected HH:MM-HH:MM, got {value!r}")
    start, end = int(match[1]) * 60 + int(match[2]), int(match[3]) * 60 + int(match[4])
    if start == end:
        raise ValueError(f"expected two different times, got {value!r}")
    return start, end


def parse_pins(value: str, count: int) -> tuple[int, ...]:
    """``"22,23,24"`` -> ``(22, 23, 24)``; raises ``ValueError`` unless there are ``count`` GPIO numbers."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) != count or not all(p.isdigit() and 0 < int(p) < 28 for p in parts):
        raise ValueError(f"expected {count} comma-separated GPIO numbers (1-27), got {value!r}")
    return tuple(int(p) for p in parts)


def _check_declared(setting: Setting, value: Any, source: str, *, given: Any = None) -> None:
    """The setting's declared ``bounds`` or ``choices``, with one message naming the key, the range and
    the value (``given``, as written, when it is not ``value`` as typed)."""
    if setting.choices and value not in setting.choices or setting.bounds and value not in setting.bounds:
        shown = value if given is None else given
        raise ConfigError(f"{source}: {setting.name}: expected {setting.expected}, got {shown!r}")


def _validate(values: dict[str, Any], source: str, origins: Mapping[str, str]) -> None:
    """Each setting's declared bounds or choices, then the checks a declaration cannot express."""
    values["log.level"] = values["log.level"].upper()  # as Python's logging names them; 'info' is fine
    for setting in SETTINGS:
        _check_declared(setting, values[setting.name], origins.get(setting.name, source))
    if values["radio.port"] and values["radio.tcp"]:
        raise ConfigError(f"{source}: radio.tcp: set radio.port or radio.tcp, not both")
    parsed = [("radio.tcp", lambda v: v and parse_host_port(v)), ("bridge.broker", lambda v: v and parse_host_port(v)),
              ("selftest.schedule", lambda v: v and parse_weekly(v)),
              ("hardware.quiet_hours", parse_quiet_hours), ("hardware.rgb_pins", lambda v: parse_pins(v, 3))]
    for name, parse in parsed:  # the words that have a grammar
        try:
            parse(values[name])
        except ValueError as exc:
            raise ConfigError(f"{origins.get(name, source)}: {name}: {exc}") from None
    if values["evidence.recipients"]:
        from node.evidence.seal import parse_recipients  # pyrage: loaded only when evidence is on

        try:
            parse_recipients(values["evidence.recipients"])
        except ValueError as exc:
            raise ConfigError(f"{origins.get('evidence.recipients', source)}: evidence.recipients: {exc}") from None
    from node.catalog import LANGUAGES  # declared once, there

    bad = [lang for lang in values["node.languages"].split(",") if lang.strip() not in LANGUAGES]
    if bad:
        raise ConfigError(f"{origins.get('node.languages', source)}: node.languages: expected some of {', '.join(LANGUAGES)}, got {bad[0]!r}")


def render(config: Config) -> str:
    """The effective settings as TOML, one table per section, for ``silbato config show``."""
    tables: dict[str, dict[str, Any]] = {}
    for setting in SETTINGS:  # sections in order of first mention
        head, key = setting.name.split(".", 1)
        value = config[setting.name]
        tables.setdefault(head, {})[key] = str(value) if isinstance(value, Path) else value
    block = f"# block-wide: {describe_block(config)}\n" if config.block is not None else ""
    return f"# effective settings (file: {config.source})\n{block}\n" + tomli_w.dumps(tables)
