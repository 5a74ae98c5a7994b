"""``silbato install`` and ``silbato uninstall``: turn a Raspberry Pi OS machine into a node, and back.

Each step says what it did, and running ``install`` again changes nothing that is
already right. The steps, in order:

1. the ``silbato`` system user, in the groups ``gpio``, ``dialout`` and ``audio``, the page's
   own user ``silbato-web`` (primary group ``silbato``, no other) and the SMS gateway's
   ``silbato-gateway`` (primary group ``silbato``, and ``gammu`` when gammu-smsd is installed) and the
   neighborhood bridge's ``silbato-bridge`` (primary group ``silbato``, no other);
2. ``/etc/silbato/silbato.toml`` from a commented template, if absent (``config_template``);
3. the state directory, its ``db/`` folder (0770, the only part the page may write) and the page's own
   directory (``node/statedir.py`` says who may touch what), and gammu-smsd's spool (``sms.spool``:
   owner ``silbato-gateway``, group ``gammu``, mode 2770: the gateway and gammu-smsd, nobody else);
4. the release, in ``/opt/silbato/releases/<version>`` with its own venv (``node.appliance.release``),
   and ``/opt/silbato/current`` pointing at it;
5. the units from the release's ``systemd/``, then ``systemctl daemon-reload``;
6. the node key, if missing;
7. the services enabled, and started once a roster is installed; ``silbato-gateway`` only when
   ``sms.enabled`` is true, ``silbato-bridge`` only when ``bridge.enabled`` is true (otherwise
   each is disabled).

Under a root other than ``/`` the privileged commands are recorded, not run (``node.appliance.host``).
"""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path
from typing import Callable

from node import config as config_mod
from node.appliance import release as release_mod
from node.errors import SilbatoError
from node import statedir
from node.appliance.host import (BRIDGE_SERVICE, BRIDGE_USER, GATEWAY_SERVICE, GATEWAY_USER, GROUPS, SERVICES,
                                 SMSD_GROUP, TIMERS, USER, WEB_USER, Host, Layout, optional_services)

Say = Callable[[str], None]

UNIT_SUFFIXES = (".service", ".timer")
# node.gateway.spool.FOLDERS, named again: nothing outside the gateway imports its code (tests/test_layout.py).
SPOOL_FOLDERS = ("inbox", "outbox", "sent", "error")

# Settings whose value is a path on the node: under a root other than /, the settings file
# that install writes points them into that root, so the node there is self-contained.
PATH_SETTINGS = ("node.state_dir", "web.state_dir", "node.organizer_key", "radio.channel_key_file", "speaker.recordings_dir",
                 "sms.spool", "sms.socket", "sms.smsd_pid", "neighborhood.organizer_key")


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def config_template(values: dict | None = None) -> str:
    """The settings file: every setting, commented out at its default, with its help.

    ``values`` are written uncommented. The template is made from ``node.config.SETTINGS``,
    so it never falls behind the code.
    """
    values = values or {}
    lines = ["# Silbato settings. Every setting is listed at its default, commented out;",
             "# remove the '#' to change one. 'silbato config show' prints the effective values,",
             "# and 'silbato doctor' checks them. Environment variables (SILBATO_RADIO_PORT...) win.",
             ""]
    sections: dict[str, list[config_mod.Setting]] = {}
    for setting in config_mod.SETTINGS:  # a TOML table may appear once: group by section, in order
        sections.setdefault(setting.name.split(".", 1)[0], []).append(setting)
    for head, settings in sections.items():
        lines += [f"[{head}]", ""]
        for setting in settings:
            key = setting.name.split(".", 1)[1]
            help = setting.help + (" Block-wide: a roster that carries it overrides this file." if setting.block else "")
            lines += [f"# {line}" for line in _wrap(help)]
            if setting.name in values:
                lines.append(f"{key} = {_toml_value(values[setting.name])}")
            else:
                lines.append(f"# {key} = {_toml_value(setting.default)}")
            lines.append("")
    return "\n".join(lines)


def _wrap(text: str, width: int = 86) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def rooted_values(layout: Layout) -> dict:
    """Path settings pointed into ``layout.root`` (empty for the real root)."""
    if layout.is_system:
        return {}
    return {name: str(layout.path(str(config_mod.BY_NAME[name].default))) for name in PATH_SETTINGS}


def unit_files(share: Path) -> list[Path]:
    folder = share / "systemd"
    return sorted(p for p in folder.iterdir() if p.suffix in UNIT_SUFFIXES) if folder.is_dir() else []


def install_units(layout: Layout, host: Host, share: Path, say: Say) -> bool:
    """Copy the units of a release into the unit directory; return whether any changed."""
    units = unit_files(share)
    if not units:
        say(f"units: none in {share}; the installed units are kept")
        return False
    layout.unit_dir.mkdir(parents=True, exist_ok=True)
    changed = []
    for unit in units:
        target = layout.unit_dir / unit.name
        if target.is_file() and filecmp.cmp(unit, target, shallow=False):
            continue
        shutil.copyfile(unit, target)
        os.chmod(target, 0o644)
        changed.append(unit.name)
    if changed:
        say(f"units: installed {', '.join(changed)} in {layout.unit_dir}")
        host.systemctl("daemon-reload")
    else:
        say("units: unchanged")
    return bool(changed)


def install(layout: Layout, host: Host, wheel: Path, *, say: Say, deps_from: Path | None = None) -> Path:
    """Install the node from ``wheel``; return the release directory. Idempotent."""
    with layout.lock():
        _user(host, say)
        _config(layout, host, say)
        cfg = config_mod.load(layout.config_file)
        _state_dir(cfg, host, say)
        sms_spool(cfg, host, say)
        release = release_mod.install(layout, wheel, deps_from=deps_from, say=say)
        if layout.current_release() != release:
            layout.switch(release)
            say(f"current: now {os.readlink(layout.current)}")
        else:
            say(f"current: already {os.readlink(layout.current)}")
        install_units(layout, host, release_mod.share_dir(release), say)
        _node_key(cfg, host, say)
        _enable(cfg, host, say)
    return release


def _user(host: Host, say: Say) -> None:
    if host.user_exists(USER):
        say(f"user: {USER} exists")
    else:
        host.run(["useradd", "--system", "--user-group", "--home-dir", "/var/lib/silbato", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "Silbato node", USER])
        say(f"user: created system user {USER}" if host.real else
            f"user: not created under {host.layout.root} (recorded: useradd --system {USER})")
    groups = [g for g in GROUPS if host.group_exists(g)]
    missing = [g for g in GROUPS if g not in groups]
    if groups:
        host.run(["usermod", "--append", "--groups", ",".join(groups), USER])
        say(f"groups: {USER} is in {', '.join(groups)}" + ("" if host.real else " (recorded)"))
    if missing:
        say(f"groups: {', '.join(missing)} not on this machine (not a Raspberry Pi?); skipped")
    if host.user_exists(WEB_USER):
        say(f"user: {WEB_USER} exists")
    else:
        host.run(["useradd", "--system", "--gid", USER, "--home-dir", "/var/lib/silbato-web", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "Silbato page", WEB_USER])
        say(f"user: created system user {WEB_USER} (the page), in group {USER} only" if host.real else
            f"user: not created under {host.layout.root} (recorded: useradd --system {WEB_USER})")
    # The SMS gateway: like the page (primary group silbato, to write db/), plus gammu-smsd's group
    # for the spool. Made on every node, so that turning sms.enabled on needs no new user.
    smsd = host.group_exists(SMSD_GROUP)
    if host.user_exists(GATEWAY_USER):
        say(f"user: {GATEWAY_USER} exists")
    else:
        host.run(["useradd", "--system", "--gid", USER, "--home-dir", "/nonexistent", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "Silbato SMS gateway", GATEWAY_USER])
        say(f"user: created system user {GATEWAY_USER} (the SMS gateway), in group {USER}" if host.real else
            f"user: not created under {host.layout.root} (recorded: useradd --system {GATEWAY_USER})")
    if smsd:
        host.run(["usermod", "--append", "--groups", SMSD_GROUP, GATEWAY_USER])
        say(f"groups: {GATEWAY_USER} is in {SMSD_GROUP} (gammu-smsd's)" + ("" if host.real else " (recorded)"))
    # The bridge: like the page (primary group silbato, to write db/), no other group. Made on every
    # node, so that turning bridge.enabled on needs no new user.
    if host.user_exists(BRIDGE_USER):
        say(f"user: {BRIDGE_USER} exists")
    else:
        host.run(["useradd", "--system", "--gid", USER, "--home-dir", "/nonexistent", "--no-create-home",
                  "--shell", "/usr/sbin/nologin", "--comment", "Silbato neighborhood bridge", BRIDGE_USER])
        say(f"user: created system user {BRIDGE_USER} (the neighborhood bridge), in group {USER} only" if host.real
            else f"user: not created under {host.layout.root} (recorded: useradd --system {BRIDGE_USER})")


def _config(layout: Layout, host: Host, say: Say) -> None:
    layout.etc.mkdir(parents=True, exist_ok=True)
    if layout.config_file.exists():
        say(f"config: kept {layout.config_file}")
        return
    tmp = layout.config_file.with_name(layout.config_file.name + ".tmp")
    tmp.write_text(config_template(rooted_values(layout)), encoding="utf-8")
    os.chmod(tmp, 0o640)  # it may hold the Wi-Fi password
    host.chown(tmp, "root", USER)
    os.replace(tmp, layout.config_file)
    say(f"config: created {layout.config_file} from the template")


def prepare_host(cfg: config_mod.Config, host: Host, say: Say) -> None:
    """The users and the state directories this release needs (``silbato update`` runs it too)."""
    _user(host, say)
    _state_dir(cfg, host, say)
    sms_spool(cfg, host, say)


def sms_spool(cfg: config_mod.Config, host: Host, say: Say) -> None:
    """gammu-smsd's files-backend folders: owner the gateway, group gammu-smsd's, mode 2770.

    gammu-smsd (as root, Debian's default, or as ``gammu``) and the gateway read, write and
    rename each other's files there; nobody else may even list them (they hold numbers until
    handled). The set-group-ID bit gives every file made inside the group ``gammu``.
    """
    root = Path(cfg["sms.spool"])
    group = SMSD_GROUP if host.group_exists(SMSD_GROUP) else USER
    for folder in (root, *(root / name for name in SPOOL_FOLDERS)):
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o2770)
        host.chown(folder, GATEWAY_USER, group)
    say(f"sms: {root} and its folders (mode 2770, {GATEWAY_USER}:{group})"
        + ("" if group == SMSD_GROUP else "; gammu-smsd is not installed: 'apt-get install gammu-smsd', then "
                                          "install again"))


def _state_dir(cfg: config_mod.Config, host: Host, say: Say) -> None:
    state = cfg.state_dir
    existed = state.is_dir()
    state.mkdir(parents=True, exist_ok=True)
    os.chmod(state, 0o750)
    host.chown(state, USER)
    say(f"state: {state} {'exists' if existed else 'created'}")
    # The database itself moves into db/ when the new daemon starts (the running one still uses it).
    statedir.prepare_db_dir(cfg, adopt=False)
    host.chown(cfg.db_dir, USER)
    statedir.share_db(cfg)
    say(f"state: {cfg.db_dir} (mode 0770: the only folder the page writes)")
    statedir.prepare_evidence_dir(cfg)
    host.chown(cfg.evidence_dir, USER)
    say(f"state: {cfg.evidence_dir} (mode 0770: sealed evidence, written by the page)")
    web = Path(cfg["web.state_dir"])
    web.mkdir(parents=True, exist_ok=True)
    os.chmod(web, 0o700)
    host.chown(web, WEB_USER, USER)
    say(f"state: {web} (mode 0700, the page's own)")


def _node_key(cfg: config_mod.Config, host: Host, say: Say) -> None:
    from node.protocol.keys import SigningKey

    if cfg.key_file.exists():
        say(f"node key: kept {cfg.key_file}")
        return
    key = SigningKey.create(cfg.key_file)
    host.chown(cfg.key_file, USER)
    say(f"node key: created {cfg.key_file}; public key: {key.public_b64}")


def _enable(cfg: config_mod.Config, host: Host, say: Say) -> None:
    host.systemctl("enable", *SERVICES, *TIMERS)
    say(f"services: enabled {', '.join(SERVICES + TIMERS)}" + ("" if host.real else " (recorded)"))
    enable_gateway(cfg, host, say)
    enable_bridge(cfg, host, say)
    if cfg.roster_file.exists() and Path(cfg["node.organizer_key"]).exists():
        host.systemctl("restart", "--no-block", *SERVICES, *optional_services(cfg))
        host.systemctl("start", *TIMERS)
        say("services: (re)starting; 'silbato doctor' shows when they are up" + ("" if host.real else " (recorded)"))
    else:
        say("services: not started until the roster is installed: copy the organizers' key to "
            f"{cfg['node.organizer_key']}, then 'silbato roster install FILE' and "
            "'systemctl start silbato-node silbato-web'")


def _enable_optional(cfg: config_mod.Config, host: Host, say: Say, what: str, service: str, setting: str,
                     after: str) -> None:
    """``service`` enabled when ``setting`` is true (``say`` adds ``after``), disabled and stopped when false."""
    recorded = "" if host.real else " (recorded)"
    if cfg[setting]:
        host.systemctl("enable", service)
        say(f"{what}: {service} enabled ({setting}); {after}{recorded}")
    else:
        host.systemctl("disable", "--now", service, check=False)
        say(f"{what}: {service} disabled ({setting} is false){recorded}")


def enable_gateway(cfg: config_mod.Config, host: Host, say: Say) -> None:
    """``silbato-gateway`` enabled when ``sms.enabled`` is true, disabled (and stopped) when false."""
    _enable_optional(cfg, host, say, "sms", GATEWAY_SERVICE, "sms.enabled",
                     "after each boot a captain runs 'silbato sms unlock'")


def enable_bridge(cfg: config_mod.Config, host: Host, say: Say) -> None:
    """``silbato-bridge`` enabled when ``bridge.enabled`` is true, disabled (and stopped) when false."""
    _enable_optional(cfg, host, say, "bridge", BRIDGE_SERVICE, "bridge.enabled",
                     f"it connects to bridge.broker ({cfg['bridge.broker'] or 'not set yet'})")


def uninstall(layout: Layout, host: Host, *, purge: bool, say: Say) -> None:
    """Stop and remove the services and releases; with ``purge``, also settings, state and user."""
    from node.appliance import wifi

    web_state = layout.path(str(config_mod.BY_NAME["web.state_dir"].default))
    sms_spool_dir = layout.path(str(config_mod.BY_NAME["sms.spool"].default))
    try:
        if layout.config_file.exists():
            cfg = config_mod.load(layout.config_file)
            state, web_state = cfg.state_dir, Path(cfg["web.state_dir"])
            sms_spool_dir = Path(cfg["sms.spool"])
        else:
            state = layout.state_dir
    except SilbatoError as exc:
        say(f"config: {exc}; assuming the default state directories")
        state = layout.state_dir
    with layout.lock():
        units = [layout.unit_dir / name for name in (*SERVICES, *TIMERS, "silbato-purge.service", GATEWAY_SERVICE,
                                                     BRIDGE_SERVICE)]
        if any(u.exists() for u in units):
            host.systemctl("disable", "--now", *TIMERS, *SERVICES, GATEWAY_SERVICE, BRIDGE_SERVICE, check=False)
            for unit in units:
                unit.unlink(missing_ok=True)
            host.systemctl("daemon-reload")
            say("services: stopped, disabled and removed" + ("" if host.real else " (systemctl recorded)"))
        else:
            say("services: none installed")
        for path in wifi.remove_all(layout, host):
            say(f"wifi: removed {path}")
        _remove(layout.opt, "releases", say)
        if not purge:
            say(f"kept {layout.etc} and {state} (the node key and alerts); 'silbato uninstall --purge' removes them")
            return
    _remove(state, "state", say)
    _remove(web_state, "page state", say)
    _remove(sms_spool_dir, "SMS spool", say)
    _remove(layout.etc, "config", say)
    for user in (BRIDGE_USER, GATEWAY_USER, WEB_USER, USER):  # the node's user last: its group is the others' primary
        if host.user_exists(user) or not host.real:
            host.run(["userdel", user], check=False)
            say(f"user: removed {user}" + ("" if host.real else " (recorded)"))


def _remove(path: Path, what: str, say: Say) -> None:
    if path.exists():
        shutil.rmtree(path)
        say(f"{what}: removed {path}")
    else:
        say(f"{what}: {path} already absent")
