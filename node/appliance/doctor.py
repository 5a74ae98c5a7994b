"""``silbato doctor``: is this node fit to raise the alarm? One PASS, WARN or FAIL line per finding.

Checks, in order (each a function registered with ``@check``):

==========  ==============================================================================
config      the settings file parses and every value is valid (Wi-Fi settings too)
key         the node key exists, has mode 0600 and loads
separation  the page's user cannot read the node key or the channel key, nor write the state directory
roster      signed by the organizers' key, lists this node's key unrevoked; WARN after 30 days
block       the roster's block-wide settings are valid; WARN when this node's own differ (the
            roster's are used) or when the roster carries none (this node's own are used)
radio       configured and present; firmware 2.6.11 or newer, a private channel key, MQTT off;
            WARN while radio.text_alert_places puts place names on air
gpio        /dev/gpiochip* present and no GPIO given two jobs
database    opens, ``integrity_check`` ok, WAL journal, ``synchronous=FULL``, ``secure_delete``
clock       after this release was written (no RTC and no network leave it in the past)
disk        free space under the state directory
services    silbato-node, silbato-web and the purge timer are active
gateway     with ``sms.enabled``: silbato-gateway active, unlocked, the modem seen, no backlog
            (its state in the database); without it, the unit is not left enabled
bridge      with ``bridge.enabled``: its settings valid, silbato-bridge active, the link to the
            neighborhood's broker up (its state in the database); without it, the unit is not left enabled
==========  ==============================================================================

``exit_code`` is 0 when nothing FAILs (warnings allowed) and 1 otherwise.

While silbato-node runs it owns the radio, so the radio check reads the TROUBLE lines the
daemon keeps in the database; when it is stopped, the doctor opens the radio itself.
Everything the checks touch outside the files (the clock, the disk, ``/dev``, the
services, the radio) comes through ``Doctor``'s fields, which tests replace.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from node import config as config_mod
from node import statedir
from node.appliance.host import BRIDGE_SERVICE, GATEWAY_SERVICE, SERVICES, TIMERS, USER, WEB_USER, Host
from node.errors import SilbatoError
from node.radio.interface import probe

PASS, WARN, FAIL = "PASS", "WARN", "FAIL"

ROSTER_MAX_AGE = 30 * 86400.0      # seconds: a roster older than this gets a WARN
CLOCK_FLOOR = 1_735_689_600.0      # 2025-01-01 UTC: any clock before this code was written is wrong
CLOCK_CEILING = 4_102_444_800.0    # 2100-01-01 UTC
DISK_FAIL = 100 * 2**20            # bytes free below which the node cannot be trusted to store alerts
DISK_WARN = 500 * 2**20


@dataclass(frozen=True)
class Result:
    status: str   # PASS, WARN or FAIL
    check: str    # the check's name, such as "roster"
    detail: str   # one sentence

    def line(self) -> str:
        return f"{self.status} {self.check}: {self.detail}"


@dataclass
class Doctor:
    """What the checks look at. ``config_path=None`` is the default settings file."""

    host: Host
    config_path: Path | None = None
    db: Path | None = None                      # check this database instead of the node's
    clock: Callable[[], float] = time.time
    dev: Path = Path("/dev")
    disk_usage: Callable[[Path], tuple] = shutil.disk_usage
    probe_radio: Callable[[config_mod.Config], tuple[dict, dict[str, str]]] = probe  # opens the radio
    catalog_dir: Path | None = None             # the message catalog's folder (default: this release's)
    cfg: config_mod.Config | None = field(default=None, init=False)

    def run(self) -> list[Result]:
        results: list[Result] = []
        for name, fn in CHECKS:
            try:
                results.extend(fn(self))
            except Exception as exc:  # a check that crashes is a finding, not the end of the doctor
                results.append(Result(FAIL, name, f"the check itself failed: {type(exc).__name__}: {exc}"))
        return results


Check = Callable[[Doctor], Iterator[Result]]
CHECKS: list[tuple[str, Check]] = []


def check(name: str) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        CHECKS.append((name, fn))
        return fn
    return register


def exit_code(results: list[Result]) -> int:
    return 1 if any(r.status == FAIL for r in results) else 0


def summary(results: list[Result]) -> str:
    counts = {s: sum(r.status == s for r in results) for s in (PASS, WARN, FAIL)}
    verdict = "not fit" if counts[FAIL] else "fit"
    return f"doctor: {verdict} ({counts[PASS]} passed, {counts[WARN]} warnings, {counts[FAIL]} failed)"


def _needs_config(doctor: Doctor, name: str) -> Iterator[Result]:
    if doctor.cfg is None:
        yield Result(WARN, name, "not checked: the settings are invalid")


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:.0f} days" if days >= 2 else f"{seconds / 3600:.0f} hours"


# -- the checks ---------------------------------------------------------------------------

@check("config")
def check_config(doctor: Doctor) -> Iterator[Result]:
    from node.appliance import wifi

    try:
        cfg = config_mod.load(doctor.config_path)
    except SilbatoError as exc:
        yield Result(FAIL, "config", str(exc))
        return
    try:
        if cfg["wifi.mode"] != "off":
            wifi.check_settings(cfg)
    except SilbatoError as exc:
        yield Result(FAIL, "config", str(exc))
        return
    doctor.cfg = cfg
    yield Result(PASS, "config", f"{cfg.source}: valid")


@check("key")
def check_key(doctor: Doctor) -> Iterator[Result]:
    from node.protocol.keys import SigningKey

    if doctor.cfg is None:
        yield from _needs_config(doctor, "key")
        return
    path = doctor.cfg.key_file
    try:
        key = SigningKey.load(path)
    except SilbatoError as exc:
        yield Result(FAIL, "key", str(exc))
        return
    yield Result(PASS, "key", f"{path}: mode 0600, public key {key.public_b64[:12]}...")


def _web_identity(doctor: Doctor) -> tuple[int, set[int]] | None:
    """The page's user's uid and groups, on a node where it exists (not under ``--root``)."""
    import grp
    import pwd

    if not doctor.host.real:
        return None
    try:
        user = pwd.getpwnam(WEB_USER)
    except KeyError:
        return None
    return user.pw_uid, {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if WEB_USER in g.gr_mem}


@check("separation")
def check_separation(doctor: Doctor) -> Iterator[Result]:
    """The page runs as its own user (``node/statedir.py``): a flaw in it must not become the node."""
    if doctor.cfg is None:
        yield from _needs_config(doctor, "separation")
        return
    cfg = doctor.cfg
    web = _web_identity(doctor)
    problems = []
    for what, path in (("the node key", cfg.key_file), ("the channel key", Path(cfg["radio.channel_key_file"]))):
        if not path.exists():
            continue
        mode = path.stat().st_mode & 0o777
        if web is not None and statedir.readable_by(path, *web):
            problems.append(f"{WEB_USER} can read {what} {path} (mode {mode:o}): chmod 600 it, owned by "
                            f"{USER if path == cfg.key_file else 'root'}")
        elif mode & statedir.SECRET_MODES:
            problems.append(f"{what} {path} has mode {mode:o}: chmod 600 it")
    if cfg.state_dir.exists() and cfg.state_dir.stat().st_mode & 0o022:
        problems.append(f"{cfg.state_dir} is writable by its group or others: chmod 750 it "
                        "(the page could ask for a wipe or replace the roster)")
    for problem in problems:
        yield Result(FAIL, "separation", problem)
    if problems:
        return
    odd = [p.name for p in (cfg.db_dir.iterdir() if cfg.db_dir.is_dir() else ())
           if p.is_symlink() or not p.is_file()]
    if odd:
        yield Result(FAIL, "separation", f"{cfg.db_dir} holds what is not a plain file: {', '.join(sorted(odd))} "
                                         "(the page's user may write there: look into it, then remove them)")
        return
    if cfg.db_dir.exists() and cfg.db_dir.stat().st_mode & 0o7777 != statedir.DB_DIR_MODE:
        yield Result(WARN, "separation", f"{cfg.db_dir} has mode {cfg.db_dir.stat().st_mode & 0o7777:o}, "
                                         f"not {statedir.DB_DIR_MODE:o}: the page may not be able to write "
                                         "captains' requests (silbato-node sets it when it starts)")
        return
    who = WEB_USER if web is not None else "the page's user (not checkable here)"
    yield Result(PASS, "separation", f"{who} cannot read the node key or the channel key, and writes only {cfg.db_dir}")


@check("roster")
def check_roster(doctor: Doctor) -> Iterator[Result]:
    from node.protocol.keys import SigningKey, load_roster

    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "roster")
        return
    try:
        roster = load_roster(cfg)
    except SilbatoError as exc:
        yield Result(FAIL, "roster", str(exc))
        return
    described = f"v{roster.version} of block {roster.block!r}, {len(roster.members)} nodes, signed by the organizers"
    try:  # not keys.load_identity: this says which of missing and revoked it is, about the roster just shown
        me = roster.find_key(SigningKey.load(cfg.key_file).public_raw)
    except SilbatoError:
        me = None
    if me is None or me.revoked:
        yield Result(FAIL, "roster", f"{described}, but this node's key is {'revoked' if me else 'not'} on it")
        return
    age = doctor.clock() - cfg.roster_file.stat().st_mtime
    if age > ROSTER_MAX_AGE:
        yield Result(WARN, "roster", f"{described}; installed {_days(age)} ago: ask the organizers for the latest")
    else:
        yield Result(PASS, "roster", f"{described}; this node is {me.name} at location {me.location}")


@check("block")
def check_block(doctor: Doctor) -> Iterator[Result]:
    """The block-wide settings (``config.BLOCK_SETTINGS``): carried by the roster, or this node's own."""
    from node.protocol.keys import load_roster

    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "block")
        return
    try:
        roster = load_roster(cfg)
    except SilbatoError:
        yield Result(WARN, "block", "not checked: no valid roster (see the roster finding)")
        return
    try:
        effective = config_mod.with_roster(cfg, roster)
    except SilbatoError as exc:
        yield Result(FAIL, "block", str(exc))
        return
    line = config_mod.describe_block(effective)
    if not effective.block.carried:
        yield Result(WARN, "block", f"{line}; ask the organizers to put them in the roster")
    elif effective.block.disagreements():
        yield Result(WARN, "block", f"{line}; make this node's settings file agree (or leave them out)")
    else:
        yield Result(PASS, "block", line)


@check("radio")
def check_radio(doctor: Doctor) -> Iterator[Result]:
    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "radio")
        return
    if cfg["radio.text_alerts"] and cfg["radio.text_alert_places"]:
        yield Result(WARN, "radio", "radio.text_alert_places is on: the text alerts carry the roster's "
                                    "place names, which anyone on the channel can read and phone apps keep; "
                                    "set it to false to send location codes only")
    port, tcp = cfg["radio.port"], cfg["radio.tcp"]
    if not (port or tcp):
        yield Result(FAIL, "radio", "no radio configured: set radio.port to /dev/serial/by-id/...")
        return
    if port and not os.path.exists(port):
        yield Result(FAIL, "radio", f"no radio at {port}: check the USB cable")
        return
    where = port or f"tcp {tcp}"
    if doctor.host.service_state("silbato-node.service") == "active":
        troubles = _daemon_troubles(doctor, cfg)
        if troubles is None:
            yield Result(WARN, "radio", f"present at {where}; the daemon's view is unavailable")
            return
        radio = {k: v for k, v in troubles.items() if k.startswith("radio")}
        for sentence in radio.values():
            yield Result(FAIL, "radio", sentence)
        if not radio:
            yield Result(PASS, "radio", f"present at {where}; silbato-node finds it healthy")
        return
    try:
        info, troubles = doctor.probe_radio(cfg)
    except SilbatoError as exc:
        yield Result(FAIL, "radio", str(exc))
        return
    for sentence in troubles.values():
        yield Result(FAIL, "radio", sentence)
    if not troubles:
        yield Result(PASS, "radio", f"present at {where}: firmware {info.get('firmware')}, "
                                    f"channel key {info.get('channel_key')}, MQTT {info.get('mqtt')}")


def _daemon_troubles(doctor: Doctor, cfg: config_mod.Config) -> dict[str, str] | None:
    from node.store import Store

    try:
        with Store(doctor.db or cfg.db_file, readonly=True) as store:
            return store.troubles()
    except (SilbatoError, sqlite3.Error):
        return None


@check("gpio")
def check_gpio(doctor: Doctor) -> Iterator[Result]:
    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "gpio")
        return
    chips = sorted(doctor.dev.glob("gpiochip*"))
    if not chips:
        yield Result(FAIL, "gpio", f"no {doctor.dev}/gpiochip*: not a Raspberry Pi, or GPIO is not enabled")
        return
    used: dict[int, list[str]] = {}
    jobs = [("panic button", cfg["hardware.button_pin"]), ("siren", cfg["hardware.siren_pin"])]
    if cfg["hardware.confirm_pin"]:
        jobs.append(("confirm button", cfg["hardware.confirm_pin"]))
    if cfg["hardware.light_kind"] == "rgb":
        red, green, blue = config_mod.parse_pins(cfg["hardware.rgb_pins"], 3)
        jobs += [("red light", red), ("green light", green), ("blue light", blue)]
    else:
        jobs.append(("light", cfg["hardware.light_pin"]))
    for job, pin in jobs:
        used.setdefault(pin, []).append(job)
    clashes = {pin: names for pin, names in used.items() if len(names) > 1}
    for pin, names in sorted(clashes.items()):
        yield Result(FAIL, "gpio", f"GPIO{pin} is given two jobs: {' and '.join(names)}")
    if not clashes:
        pins = ", ".join(f"{job} GPIO{pin}" for job, pin in jobs)
        yield Result(PASS, "gpio", f"{', '.join(c.name for c in chips)}; {pins}")


@check("database")
def check_database(doctor: Doctor) -> Iterator[Result]:
    from node.store import Store, migrations

    cfg = doctor.cfg
    if cfg is None and doctor.db is None:
        yield from _needs_config(doctor, "database")
        return
    path = doctor.db or cfg.db_file
    if not path.exists():
        yield Result(WARN, "database", f"{path} does not exist yet; silbato-node creates it when it starts")
        return
    try:
        # Opened the way the web process opens it: the store's own pragmas, and no write allowed.
        store = Store(path, writes=())
    except SilbatoError as exc:
        yield Result(FAIL, "database", str(exc))
        return
    try:
        integrity = [row[0] for row in store.db.execute("PRAGMA integrity_check").fetchall()]
        journal = store.pragma("journal_mode")
        synchronous = store.pragma("synchronous")
        secure = store.pragma("secure_delete")
        pending = [m.name for m in migrations.pending(store.db)]
    except sqlite3.Error as exc:
        yield Result(FAIL, "database", f"{path}: {exc}")
        return
    finally:
        store.close()
    if integrity != ["ok"]:
        yield Result(FAIL, "database", f"{path}: integrity_check: {'; '.join(integrity[:3])}")
        return
    problems = []
    if str(journal).lower() != "wal":
        problems.append(f"journal_mode is {journal}, not wal")
    if synchronous != 2:
        problems.append(f"synchronous is {synchronous}, not FULL (2)")
    if secure != 1:
        problems.append("secure_delete is off")
    for problem in problems:
        yield Result(FAIL, "database", f"{path}: {problem}")
    if problems:
        return
    if pending:
        yield Result(WARN, "database", f"{path}: integrity ok; {len(pending)} migrations pending "
                                       f"({', '.join(pending)}), applied when silbato-node starts")
    else:
        yield Result(PASS, "database", f"{path}: integrity ok, WAL, synchronous=FULL, secure_delete on")


@check("clock")
def check_clock(doctor: Doctor) -> Iterator[Result]:
    now = doctor.clock()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(max(now, 0)))
    if not CLOCK_FLOOR <= now < CLOCK_CEILING:
        yield Result(FAIL, "clock", f"the clock says {stamp}, which cannot be right: alerts still work, "
                                    "but their times are wrong; connect the node to a network once, or set the date")
        return
    if doctor.host.real:
        try:
            synced = subprocess.run(["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            synced = ""  # no timedatectl: nothing more to say
        if synced == "no":
            yield Result(WARN, "clock", f"{stamp}, not synchronised over the network (normal with no internet)")
            return
    yield Result(PASS, "clock", stamp)


@check("languages")
def check_languages(doctor: Doctor) -> Iterator[Result]:
    """The compiled message catalog: a missing language speaks and shows English; the alert path never waits on it."""
    from node import catalog

    found = catalog.problems(doctor.catalog_dir or catalog.DIRECTORY)
    for problem in found:
        yield Result(WARN, "languages", problem)
    if not found:
        yield Result(PASS, "languages", f"{', '.join(catalog.LANGUAGES)}: compiled catalogs current")


@check("disk")
def check_disk(doctor: Doctor) -> Iterator[Result]:
    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "disk")
        return
    where = cfg.state_dir
    while not where.exists() and where != where.parent:
        where = where.parent
    usage = doctor.disk_usage(where)
    total, free = usage[0], usage[2]
    detail = f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB under {where}"
    if free < DISK_FAIL:
        yield Result(FAIL, "disk", f"only {free / 2**20:.0f} MiB free under {where}: alerts may not be stored")
    elif free < DISK_WARN or free < total * 0.05:
        yield Result(WARN, "disk", detail)
    else:
        yield Result(PASS, "disk", detail)


@check("services")
def check_services(doctor: Doctor) -> Iterator[Result]:
    for unit in (*SERVICES, *TIMERS):
        state = doctor.host.service_state(unit)
        if state == "active":
            yield Result(PASS, "services", f"{unit} is active")
        elif state == "not running":
            yield Result(WARN, "services", f"{unit}: not checked under {doctor.host.layout.root} (no systemd there)")
        else:
            yield Result(FAIL, "services", f"{unit} is {state}: see journalctl -u {unit}")


def _gateway_state(doctor: Doctor, cfg: config_mod.Config) -> dict[str, str] | None:
    from node.store import Store

    try:
        with Store(doctor.db or cfg.db_file, readonly=True) as store:
            if not store.db["sms_state"].exists():
                return {}
            state = {r["key"]: r["value"] for r in store.db.query(
                "SELECT key, value FROM sms_state WHERE key IN ('state', 'trouble')")}
            state["queued"] = str(store.db.execute(
                "SELECT count(*) FROM sms_queue WHERE status = 'queued'").fetchone()[0])
            return state
    except (SilbatoError, sqlite3.Error):
        return None


def _not_this_nodes_job(name: str, service: str, setting: str, unit: str) -> Result:
    """An optional service on a node whose ``setting`` is false: fine, unless it runs anyway."""
    if unit in ("active", "activating"):
        return Result(WARN, name, f"{service} is {unit} but {setting} is false: 'silbato install' disables it")
    return Result(PASS, name, f"not this node's job ({setting} is false)")


@check("gateway")
def check_gateway(doctor: Doctor) -> Iterator[Result]:
    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "gateway")
        return
    unit = doctor.host.service_state(GATEWAY_SERVICE)
    if not cfg["sms.enabled"]:
        yield _not_this_nodes_job("gateway", GATEWAY_SERVICE, "sms.enabled", unit)
        return
    if unit == "not running":
        yield Result(WARN, "gateway", f"{GATEWAY_SERVICE}: not checked under {doctor.host.layout.root} "
                                      "(no systemd there)")
    elif unit != "active":
        yield Result(FAIL, "gateway", f"{GATEWAY_SERVICE} is {unit}: see journalctl -u {GATEWAY_SERVICE}")
        return
    state = _gateway_state(doctor, cfg)
    if state is None:
        yield Result(WARN, "gateway", "its state is unreadable (the database does not open)")
        return
    running, trouble, queued = state.get("state"), state.get("trouble", ""), state.get("queued", "0")
    if running is None:
        yield Result(WARN, "gateway", "has not started yet (no state in the database)")
    elif running == "locked":
        yield Result(WARN, "gateway", f"locked: texts wait ({queued} queued) until a captain runs 'silbato sms unlock'")
    elif trouble:
        status = FAIL if "no modem" in trouble else WARN
        yield Result(status, "gateway", f"SMS gateway: {trouble}")
    else:
        yield Result(PASS, "gateway", f"running, unlocked, the modem seen, {queued} texts queued")


def _bridge_state(doctor: Doctor, cfg: config_mod.Config) -> dict[str, str] | None:
    from node.store import Store

    try:
        with Store(doctor.db or cfg.db_file, readonly=True) as store:
            if not store.db["bridge_state"].exists():
                return {}
            return {r["key"]: r["value"] for r in store.db.query("SELECT key, value FROM bridge_state")}
    except (SilbatoError, sqlite3.Error):
        return None


@check("bridge")
def check_bridge(doctor: Doctor) -> Iterator[Result]:
    cfg = doctor.cfg
    if cfg is None:
        yield from _needs_config(doctor, "bridge")
        return
    unit = doctor.host.service_state(BRIDGE_SERVICE)
    if not cfg["bridge.enabled"]:
        yield _not_this_nodes_job("bridge", BRIDGE_SERVICE, "bridge.enabled", unit)
        return
    # The settings' own words (no network here: whether the broker answers is the link's state below).
    for name in ("neighborhood.name", "bridge.broker"):
        if not cfg[name]:
            yield Result(FAIL, "bridge", f"{name} is empty: the bridge has nowhere to connect (docs/neighborhood.md)")
            return
    if cfg["bridge.password_file"]:
        path = Path(cfg["bridge.password_file"])
        if not path.exists():
            yield Result(FAIL, "bridge", f"bridge.password_file: {path}: no such file")
            return
        if path.stat().st_mode & 0o077:
            yield Result(FAIL, "bridge", f"bridge.password_file: {path}: mode {path.stat().st_mode & 0o777:04o}, "
                                         f"expected 0600 (chmod 600 {path})")
            return
    if unit == "not running":
        yield Result(WARN, "bridge", f"{BRIDGE_SERVICE}: not checked under {doctor.host.layout.root} "
                                     "(no systemd there)")
    elif unit != "active":
        yield Result(FAIL, "bridge", f"{BRIDGE_SERVICE} is {unit}: see journalctl -u {BRIDGE_SERVICE}")
        return
    state = _bridge_state(doctor, cfg)
    if state is None:
        yield Result(WARN, "bridge", "its state is unreadable (the database does not open)")
    elif not state.get("link"):
        yield Result(WARN, "bridge", "has not started yet (no link state in the database)")
    elif state.get("trouble"):
        yield Result(FAIL, "bridge", state["trouble"])
    elif state["link"] != "up":
        yield Result(WARN, "bridge", f"the link to {cfg['bridge.broker']} is down (for less than 30 s)")
    else:
        yield Result(PASS, "bridge", f"the link to {cfg['bridge.broker']} is up")
