"""The machine a node is installed on: where its files live, and the privileged operations.

``Layout(root)`` names every path of an installed node under ``root``::

    <root>/etc/silbato/silbato.toml          settings (from a commented template)
    <root>/var/lib/silbato/                  state: database, node key, roster (node.state_dir)
    <root>/opt/silbato/releases/<version>/   one release, with its own virtual environment
    <root>/opt/silbato/current               symlink to the running release
    <root>/etc/systemd/system/silbato-*      the units

``root`` is ``/`` on a Pi. Any other root (``--root DIR``) holds a node that lives
inside that directory: tests and trials install, update and check it like a real one,
and the settings file written there points its paths into it.

The privileged operations (creating the system user, ``chown``, ``systemctl``) go
through a ``Host``. ``SystemHost`` runs them on this machine; ``DirectoryHost``,
used for any root other than ``/``, never touches the machine: it records each
command it would have run, and reports the services as not running. Everything
else (files, the release's venv, the key) is done for real under the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Sequence

from node.errors import SilbatoError

USER = "silbato"          # the node daemon (and the purge)
WEB_USER = "silbato-web"  # the page: primary group silbato, writes only <state_dir>/db (node/statedir.py)
GATEWAY_USER = "silbato-gateway"  # the SMS gateway (systemd/silbato-gateway.service): like the page, plus gammu's spool
BRIDGE_USER = "silbato-bridge"  # the neighborhood bridge (systemd/silbato-bridge.service): like the page, with network
# gammu-smsd's user and group (Debian's gammu-smsd package creates both): the spool's group.
SMSD_GROUP = "gammu"
GROUPS = ("gpio", "dialout", "audio")  # GPIO chips, the radio's serial port, the speaker
SERVICES = ("silbato-node.service", "silbato-web.service")
TIMERS = ("silbato-purge.timer",)
# Installed with the others but enabled only on the node with the modem (docs/sms.md).
GATEWAY_SERVICE = "silbato-gateway.service"
# Installed with the others but enabled only on a block's bridge nodes (docs/neighborhood.md).
BRIDGE_SERVICE = "silbato-bridge.service"


def optional_services(cfg) -> tuple[str, ...]:
    """The services this node's settings turn on: the SMS gateway (sms.enabled), the bridge (bridge.enabled)."""
    return ((GATEWAY_SERVICE,) if cfg["sms.enabled"] else ()) + ((BRIDGE_SERVICE,) if cfg["bridge.enabled"] else ())


class HostError(SilbatoError):
    """A privileged operation (useradd, systemctl) failed."""


class Layout:
    """The paths of a node installed under ``root``."""

    def __init__(self, root: str | os.PathLike = "/"):
        self.root = Path(root).absolute()

    @property
    def is_system(self) -> bool:
        return self.root == Path("/")

    def path(self, absolute: str) -> Path:
        """``/etc/silbato`` under this root."""
        return self.root / absolute.lstrip("/")

    @property
    def etc(self) -> Path:
        return self.path("/etc/silbato")

    @property
    def config_file(self) -> Path:
        return self.etc / "silbato.toml"

    @property
    def state_dir(self) -> Path:
        """The default state directory (``node.state_dir`` may say otherwise)."""
        return self.path("/var/lib/silbato")

    @property
    def opt(self) -> Path:
        return self.path("/opt/silbato")

    @property
    def releases(self) -> Path:
        return self.opt / "releases"

    @property
    def current(self) -> Path:
        return self.opt / "current"

    @property
    def unit_dir(self) -> Path:
        return self.path("/etc/systemd/system")

    def release(self, version: str) -> Path:
        return self.releases / version

    def current_release(self) -> Path | None:
        """The release ``current`` points at, or None before the first install."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return None
        release = Path(os.path.normpath(self.opt / target))  # an absolute target stays as it is
        return release if release.is_dir() else None

    def current_version(self) -> str | None:
        release = self.current_release()
        return release.name if release else None

    def switch(self, release: Path) -> None:
        """Point ``current`` at ``release`` atomically (a new symlink renamed over the old)."""
        tmp = self.opt / ".current.new"
        tmp.unlink(missing_ok=True)
        os.symlink(os.path.relpath(release, self.opt), tmp)
        os.replace(tmp, self.current)

    def silbato(self, release: Path | None = None) -> Path:
        """The ``silbato`` command of ``release`` (default: the current one)."""
        return (release or self.current) / "venv" / "bin" / "silbato"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One install or update at a time on this node."""
        self.opt.mkdir(parents=True, exist_ok=True)
        with open(self.opt / ".lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise HostError(f"{self.opt}: another install or update is running") from None
            yield


class Host:
    """Privileged operations on the machine. See ``SystemHost`` and ``DirectoryHost``."""

    real = False

    def __init__(self, layout: Layout):
        self.layout = layout
        self.recorded: list[list[str]] = []  # the commands run (or, under a root, not run)

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess | None:
        raise NotImplementedError

    def user_exists(self, name: str) -> bool:
        raise NotImplementedError

    def group_exists(self, name: str) -> bool:
        raise NotImplementedError

    def chown(self, path: Path, user: str, group: str | None = None) -> None:
        raise NotImplementedError

    def service_state(self, unit: str) -> str:
        """``active``, ``activating``, ``inactive``, ``failed``... or ``not running`` under a root."""
        raise NotImplementedError

    def service_restarts(self, unit: str) -> int:
        """How often systemd has restarted ``unit`` since it was last started by hand."""
        raise NotImplementedError

    def systemctl(self, *args: str, check: bool = True) -> None:
        self.run(["systemctl", *args], check=check)


class SystemHost(Host):
    """This machine, as root."""

    real = True

    def run(self, argv: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess | None:
        self.recorded.append(list(argv))
        try:
            result = subprocess.run(list(argv), capture_output=True, text=True)
        except OSError as exc:
            raise HostError(f"{argv[0]}: {exc.strerror}") from None
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise HostError(f"{' '.join(argv)}: exit {result.returncode}: {detail[-1] if detail else ''}")
        return result

    def _getent(self, database: str, name: str) -> bool:
        return subprocess.run(["getent", database, name], capture_output=True).returncode == 0

    def user_exists(self, name: str) -> bool:
        return self._getent("passwd", name)

    def group_exists(self, name: str) -> bool:
        return self._getent("group", name)

    def chown(self, path: Path, user: str, group: str | None = None) -> None:
        shutil.chown(path, user, group or user)

    def service_state(self, unit: str) -> str:
        result = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
        return result.stdout.strip() or "unknown"

    def service_restarts(self, unit: str) -> int:
        result = subprocess.run(["systemctl", "show", "-p", "NRestarts", "--value", unit],
                                capture_output=True, text=True)
        return int(result.stdout.strip()) if result.stdout.strip().isdigit() else 0


class DirectoryHost(Host):
    """A node that lives in a directory: privileged commands are recorded, never run."""

    def run(self, argv: Sequence[str], *, check: bool = True) -> None:
        self.recorded.append(list(argv))
        return None

    def user_exists(self, name: str) -> bool:
        return False

    def group_exists(self, name: str) -> bool:
        return True

    def chown(self, path: Path, user: str, group: str | None = None) -> None:
        self.recorded.append(["chown", f"{user}:{group or user}", str(path)])

    def service_state(self, unit: str) -> str:
        return "not running"

    def service_restarts(self, unit: str) -> int:
        return 0

    def release_answers(self, version: str) -> str | None:
        """Under a root nothing runs as a service; instead the current release must start and
        read the node's files: its ``silbato status --json`` must answer with ``version``.
        Returns None when it does, else the reason."""
        exe = self.layout.silbato()
        try:
            result = subprocess.run([str(exe), "status", "--root", str(self.layout.root), "--json"],
                                    capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{exe}: {exc}"
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            return f"silbato status exited {result.returncode}: {lines[-1] if lines else ''}"
        try:
            answered = json.loads(result.stdout)["version"]
        except (ValueError, KeyError, TypeError):
            return "silbato status did not answer with JSON"
        return None if answered == version else f"the current release answers {answered}, not {version}"


def host_for(layout: Layout) -> Host:
    """The real machine for root ``/``; a recording stand-in for any other root."""
    return SystemHost(layout) if layout.is_system else DirectoryHost(layout)


def base_python() -> str:
    """The interpreter new release venvs are made from: the one under this venv, if any."""
    return getattr(sys, "_base_executable", None) or sys.executable
