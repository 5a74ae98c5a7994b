"""The bridge's settings, checked once: each bad one is a ``ConfigError`` naming its key."""

from __future__ import annotations

import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from node.config import Config, parse_host_port
from node.errors import ConfigError

# MQTT topic levels may hold almost anything, but '+', '#' and '/' would change what a topic means.
NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class LinkSettings:
    """Where and how the bridge connects. ``password`` is read from ``bridge.password_file``."""

    neighborhood: str
    host: str
    port: int
    client_id: str
    tls: bool = False
    ca_file: str = ""
    username: str = ""
    password: str = ""

    def __repr__(self) -> str:  # never log the password
        return (f"LinkSettings({self.neighborhood!r}, {self.host}:{self.port}, client_id={self.client_id!r}, "
                f"tls={self.tls}, username={self.username!r})")


def link_settings(cfg: Config, store=None) -> LinkSettings:
    """The bridge's settings from ``cfg``; ``store`` (the node's) names the default client id.

    Raises ``ConfigError`` naming the key: an empty ``neighborhood.name`` or ``bridge.broker``,
    a missing ``bridge.ca_file``, a ``bridge.password_file`` that is missing or readable by others.
    """
    source = cfg.source
    hood = cfg["neighborhood.name"]
    if not hood:
        raise ConfigError(f"{source}: neighborhood.name: empty; the bridge needs the neighborhood's name "
                          "(its topics are silbato/<name>/...)")
    if not NAME.match(hood):
        raise ConfigError(f"{source}: neighborhood.name: letters, digits, '.', '_' and '-' only (it is an MQTT "
                          f"topic level), got {hood!r}")
    if not cfg["bridge.broker"]:
        raise ConfigError(f"{source}: bridge.broker: empty; set the neighborhood's MQTT broker as host:port")
    try:
        host, port = parse_host_port(cfg["bridge.broker"])
    except ValueError as exc:  # load() checked it already; a Config made otherwise may not have
        raise ConfigError(f"{source}: bridge.broker: {exc}") from None
    ca_file = cfg["bridge.ca_file"]
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"{source}: bridge.ca_file: {ca_file}: no such file")
    if ca_file and not cfg["bridge.tls"]:
        raise ConfigError(f"{source}: bridge.ca_file: set, but bridge.tls is false (the file would not be used)")
    password = ""
    if cfg["bridge.password_file"]:
        password = read_password(Path(cfg["bridge.password_file"]), source)
        if not cfg["bridge.username"]:
            raise ConfigError(f"{source}: bridge.username: empty, but bridge.password_file is set")
    return LinkSettings(hood, host, port, cfg["bridge.client_id"] or default_client_id(hood, store),
                        tls=cfg["bridge.tls"], ca_file=ca_file, username=cfg["bridge.username"], password=password)


def read_password(path: Path, source: str = "settings") -> str:
    """The first line of ``path``; it must be the bridge's alone (no access for group or others)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: bridge.password_file: {path}: cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{source}: bridge.password_file: {path}: mode {stat.S_IMODE(mode):04o}, expected 0600 "
                          f"(chmod 600 {path})")
    password = text.splitlines()[0] if text.strip() else ""
    if not password:
        raise ConfigError(f"{source}: bridge.password_file: {path}: empty")
    return password


def default_client_id(hood: str, store=None) -> str:
    """``silbato-<hood>-<block>-<node id>`` once the daemon has named them in the store, else from the host."""
    if store is not None:
        block, node_id = store.meta("block"), store.meta("node_id")
        if block and node_id:
            return f"silbato-{hood}-{block}-{node_id}"
    return f"silbato-{hood}-{socket.gethostname() or os.getpid()}"
