"""Building Wi-Fi: ``silbato wifi apply`` writes the files for ``wifi.mode`` from the templates
in ``firmware_config/wifi/``.

- ``ap``: the node is a hotspot. A NetworkManager profile (``method=shared``, so NM runs
  dnsmasq for DHCP and DNS), a dnsmasq rule that answers every name with the node's
  address and offers the page as the captive portal (DHCP option 114), and a sysctl so
  the page may listen on port 80 without a capability. Joining the Wi-Fi opens the page.
- ``lan``: the node joins the building's Wi-Fi (a NetworkManager profile when
  ``wifi.ssid`` is set; otherwise the Pi keeps the network it already joins), takes the
  host name ``silbato-<name>`` and announces its page through avahi, so neighbors open
  ``http://silbato-<name>.local:<web.port>/``.
- ``off``: the files written for either mode are removed.

Files go under the layout's root; the commands that make NetworkManager, avahi and the
kernel take them (``nmcli``, ``hostnamectl``, ``sysctl``) run through the ``Host``, so
under ``--root`` they are recorded and this machine's network is never touched.
"""

from __future__ import annotations

import os
import re
import string
import uuid
from pathlib import Path
from typing import Callable

from node.appliance import release as release_mod
from node.appliance.host import Host, Layout
from node.config import Config
from node.errors import ConfigError, SilbatoError

Say = Callable[[str], None]

HOTSPOT = "silbato-hotspot"
LAN = "silbato-lan"


def files(layout: Layout) -> dict[str, Path]:
    """Every file ``wifi apply`` may write, by template name."""
    return {
        "silbato-hotspot.nmconnection": layout.path(f"/etc/NetworkManager/system-connections/{HOTSPOT}.nmconnection"),
        "silbato-dns.conf": layout.path("/etc/NetworkManager/dnsmasq-shared.d/silbato.conf"),
        "60-silbato-web.conf": layout.path("/etc/sysctl.d/60-silbato-web.conf"),
        "silbato-lan.nmconnection": layout.path(f"/etc/NetworkManager/system-connections/{LAN}.nmconnection"),
        "silbato-avahi.service": layout.path("/etc/avahi/services/silbato.service"),
    }


MODE_FILES = {
    "ap": ("silbato-hotspot.nmconnection", "silbato-dns.conf", "60-silbato-web.conf"),
    "lan": ("silbato-lan.nmconnection", "silbato-avahi.service"),
    "off": (),
}


def check_settings(cfg: Config) -> None:
    """The wifi.* settings, checked before anything is written."""
    mode, security, password = cfg["wifi.mode"], cfg["wifi.security"], cfg["wifi.password"]
    if mode not in MODE_FILES:
        raise ConfigError(f"{cfg.source}: wifi.mode: expected ap, lan or off, got {mode!r}")
    if security not in ("wpa2", "open"):
        raise ConfigError(f"{cfg.source}: wifi.security: expected wpa2 or open, got {security!r}")
    needs_password = security == "wpa2" and (mode == "ap" or (mode == "lan" and cfg["wifi.ssid"]))
    if needs_password and not (8 <= len(password) <= 63 and password.isprintable() and password.isascii()):
        raise ConfigError(f"{cfg.source}: wifi.password: WPA2 needs 8 to 63 printable ASCII characters "
                          "(or set wifi.security = \"open\")")
    ssid = cfg["wifi.ssid"]
    if len(ssid.encode("utf-8")) > 32 or any(c in ssid for c in "\n\r;") or ssid != ssid.strip():
        raise ConfigError(f"{cfg.source}: wifi.ssid: at most 32 bytes, no ';', no line breaks, "
                          f"no spaces at either end: {ssid!r}")
    if not re.fullmatch(r"10\.\d{1,3}\.\d{1,3}\.1|192\.168\.\d{1,3}\.1|172\.(1[6-9]|2\d|3[01])\.\d{1,3}\.1",
                        cfg["wifi.address"]):
        raise ConfigError(f"{cfg.source}: wifi.address: expected a private address ending in .1, "
                          f"such as 10.42.0.1, got {cfg['wifi.address']!r}")
    if not 1 <= cfg["wifi.channel"] <= 13:
        raise ConfigError(f"{cfg.source}: wifi.channel: expected 1 to 13, got {cfg['wifi.channel']}")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,15}", cfg["wifi.interface"]):
        raise ConfigError(f"{cfg.source}: wifi.interface: not an interface name: {cfg['wifi.interface']!r}")
    if cfg["wifi.name"] and not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?", cfg["wifi.name"]):
        raise ConfigError(f"{cfg.source}: wifi.name: lower-case letters, digits and '-', got {cfg['wifi.name']!r}")


def node_name(cfg: Config) -> str:
    """``wifi.name``, or this node's name on the roster in lower case, or ``node``."""
    if cfg["wifi.name"]:
        return cfg["wifi.name"]
    from node.protocol.keys import load_identity

    try:
        me = load_identity(cfg, revoked_ok=True).me
    except (SilbatoError, OSError):
        return "node"
    return re.sub(r"[^a-z0-9-]+", "-", me.name.lower()).strip("-") or "node"


def _block(cfg: Config) -> str:
    from node.protocol.keys import load_roster

    try:
        return load_roster(cfg).block
    except (SilbatoError, OSError):
        return ""


def _security(cfg: Config) -> str:
    if cfg["wifi.security"] == "open":
        return ""
    return ("\n[wifi-security]\nkey-mgmt=wpa-psk\nproto=rsn\npairwise=ccmp\ngroup=ccmp\n"
            f"psk={cfg['wifi.password']}\n")


def render(cfg: Config, share: Path | None = None) -> dict[str, str]:
    """The files of ``wifi.mode``, by template name, filled in from the settings."""
    check_settings(cfg)
    mode = cfg["wifi.mode"]
    templates = (share or release_mod.share_dir()) / "firmware_config" / "wifi"
    hostname = f"silbato-{node_name(cfg)}" if mode == "lan" else ""
    ssid = cfg["wifi.ssid"] or (f"Silbato {_block(cfg)}".strip() if mode == "ap" else "")
    values = {
        "ssid": ssid, "interface": cfg["wifi.interface"], "address": cfg["wifi.address"],
        "channel": str(cfg["wifi.channel"]), "security": _security(cfg), "port": str(cfg["web.port"]),
        "hostname": hostname, "uuid": "",
    }
    out = {}
    for name in MODE_FILES[mode]:
        if name == "silbato-lan.nmconnection" and not cfg["wifi.ssid"]:
            continue  # keep the Wi-Fi the Pi already joins
        profile = HOTSPOT if "hotspot" in name else LAN
        values["uuid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"silbato:{profile}"))  # stable: same file each time
        out[name] = string.Template((templates / name).read_text(encoding="utf-8")).substitute(values)
    return out


def apply(layout: Layout, host: Host, cfg: Config, *, say: Say, share: Path | None = None) -> list[str]:
    """Write the files of ``wifi.mode``, remove those of the other modes, and reload. Returns warnings."""
    rendered = render(cfg, share)
    targets = files(layout)
    mode = cfg["wifi.mode"]
    changed = False
    for name, text in rendered.items():
        path = targets[name]
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            say(f"wifi: {path} unchanged")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600 if name.endswith(".nmconnection") else 0o644)
            fh.write(text)
        os.replace(tmp, path)
        changed = True
        say(f"wifi: wrote {path}")
    for path in remove_all(layout, host, keep=rendered):
        changed = True
        say(f"wifi: removed {path}")
    warnings = []
    if mode == "lan":
        hostname = f"silbato-{node_name(cfg)}"
        if _set_hostname(layout, hostname):
            changed = True
            say(f"wifi: host name is now {hostname} (reachable as {hostname}.local)")
        host.run(["hostnamectl", "hostname", hostname], check=False)
    if changed or not host.real:
        host.run(["nmcli", "connection", "reload"], check=False)
        if mode == "ap":
            host.run(["sysctl", "-p", str(targets["60-silbato-web.conf"])], check=False)
            host.run(["nmcli", "connection", "up", HOTSPOT], check=False)
        elif mode == "lan":
            if "silbato-lan.nmconnection" in rendered:
                host.run(["nmcli", "connection", "up", LAN], check=False)
            host.run(["systemctl", "restart", "avahi-daemon"], check=False)
        if not host.real:
            say(f"wifi: nmcli and friends recorded, not run, under {layout.root}")
    if mode == "ap" and cfg["web.port"] != 80:
        warnings.append(f"web.port is {cfg['web.port']}: set it to 80 so joining the Wi-Fi opens the page")
    if mode == "ap" and cfg["wifi.security"] == "open":
        warnings.append("the hotspot is open: anyone nearby can join it and read the page (alerts are public anyway)")
    return warnings


def _set_hostname(layout: Layout, hostname: str) -> bool:
    """Write ``/etc/hostname`` and the ``127.0.1.1`` line of ``/etc/hosts``; return whether either changed."""
    changed = False
    path = layout.path("/etc/hostname")
    if not path.is_file() or path.read_text().strip() != hostname:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(hostname + "\n")
        changed = True
    hosts = layout.path("/etc/hosts")
    lines = hosts.read_text().splitlines() if hosts.is_file() else ["127.0.0.1\tlocalhost"]
    wanted = f"127.0.1.1\t{hostname}"
    new = [wanted if line.split()[:1] == ["127.0.1.1"] else line for line in lines]
    if wanted not in new:
        new.append(wanted)
    if new != lines:
        hosts.write_text("\n".join(new) + "\n")
        changed = True
    return changed


def remove_all(layout: Layout, host: Host, *, keep: dict[str, str] | None = None) -> list[Path]:
    """Remove the Wi-Fi files Silbato wrote, except those in ``keep``; return what was removed."""
    removed = []
    for name, path in files(layout).items():
        if keep is not None and name in keep:
            continue
        if path.exists():
            path.unlink()
            removed.append(path)
    if removed and host.real and keep is None:
        host.run(["nmcli", "connection", "reload"], check=False)
    return removed
