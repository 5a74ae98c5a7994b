"""``silbato status``: a short summary of this node, for a person (text) or for ``fleet status`` (JSON).

Version, uptime, the services, the radio, the health, the active alerts and the TROUBLE
lines. It reads the database read-only and never opens the radio or the GPIO, so it is
safe while the daemon runs. The health is ``down`` when no daemon runs: neither the
systemd unit nor a ``silbato run`` started by hand (known by the pid it recorded).
Alerts are shown by id, kind, state and place name: no person is named.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from node import __version__
from node.protocol import supervision
from node.config import Config
from node.errors import SilbatoError
from node.appliance.host import SERVICES, Host


def _uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _with_roster(cfg: Config) -> tuple[Config, str]:
    """The settings with the roster's block-wide ones applied, and a line on them (the daemon's view)."""
    from node import config as config_mod
    from node.protocol.keys import load_roster

    try:
        effective = config_mod.with_roster(cfg, load_roster(cfg))
    except SilbatoError as exc:
        return cfg, f"this node's own (the roster cannot be used: {exc})"
    return effective, config_mod.describe_block(effective)


def collect(cfg: Config, host: Host) -> dict[str, Any]:
    """The summary as a JSON-ready dict. Preset and supervision period are the block's, as the daemon uses them."""
    cfg, block = _with_roster(cfg)
    out: dict[str, Any] = {
        "block_settings": block,
        "block_disagreements": {name: {"local": local, "roster": roster}
                                for name, local, roster in (cfg.block.disagreements() if cfg.block else [])},
        "version": __version__,
        "release": host.layout.current_version(),
        "uptime": _uptime(),
        "services": {unit: host.service_state(unit) for unit in SERVICES},
        "alerts": [], "troubles": {}, "radio": "unknown", "daemon_since": None,
        "preset": cfg["radio.preset"], "supervision_period_set": cfg["supervision.period"],
        "supervision_period": supervision.effective_period(cfg["supervision.period"], cfg["radio.preset"],
                                                           cfg["supervision.airtime_budget"]),
    }
    if cfg.db_file.exists():  # absent before the daemon's first start
        out.update(_from_store(cfg.db_file))
    radio = [message for key, message in out["troubles"].items() if key.startswith("radio")]
    out["radio"] = "; ".join(radio) if radio else ("configured" if cfg["radio.port"] or cfg["radio.tcp"] else
                                                   "none configured")
    out["daemon"] = _daemon(host, out["services"].get("silbato-node.service"), out.pop("daemon_pid", None),
                            out["daemon_since"])
    out["health"] = "down" if out["daemon"] == "not running" else "trouble" if out["troubles"] else "ok"
    return out


def _daemon(host: Host, unit_state: str | None, pid: int | None, since: float | None) -> str:
    """How silbato-node runs: ``running under systemd``, ``running, not under systemd (pid N)`` or ``not running``.

    A daemon started by hand (``silbato run``, or under ``--root``) is known by the pid it
    recorded at its start, if that process still runs and is no younger than that start.
    """
    if host.real and unit_state == "active":
        return "running under systemd"
    if pid and since and _runs_since(pid, since):
        return f"running, not under systemd (pid {pid})"
    return "not running"


def _runs_since(pid: int, since: float) -> bool:
    """Whether process ``pid`` exists and started no later than ``since`` (Unix time): not a reused pid."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        pass  # another user's process (the node's user): it exists
    except (OSError, OverflowError, ValueError):
        return False
    try:  # /proc/<pid>/stat field 22: start time in clock ticks after boot; /proc/stat btime: the boot
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, ValueError, IndexError, StopIteration):
        return True  # no /proc to ask: the pid alone must do
    return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 5  # btime is whole seconds


def _from_store(path: Path) -> dict[str, Any]:
    """Active alerts, troubles and the daemon's start time, read-only."""
    from node.protocol.alerts import Kind
    from node.store import Store

    try:
        store = Store(path, readonly=True)
    except SilbatoError as exc:
        return {"troubles": {"storage": f"cannot read the database: {exc}"}}
    try:
        places = store.places()
        since, pid = store.meta("daemon_started_at"), store.meta("daemon_pid")
        return {
            "alerts": [{"id": a.id, "kind": "raid" if a.kind is Kind.RAID else "test", "state": a.state.word,
                        "place": places.get(a.location, f"location {a.location}"), "since": a.opened_at}
                       for a in store.active_alerts()],
            "troubles": store.troubles(),
            "daemon_since": float(since) if since else None,
            "daemon_pid": int(pid) if pid and pid.isdigit() else None,
        }
    except Exception as exc:  # an old or damaged schema: say so rather than crash the summary
        return {"troubles": {"storage": f"cannot read the database: {exc}"}}
    finally:
        store.close()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    minutes = int(seconds // 60)
    days, minutes = divmod(minutes, 1440)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d {hours}h {minutes}m" if days else f"{hours}h {minutes}m"


def _health(summary: dict[str, Any]) -> str:
    """``ok: silbato-node running under systemd``, ``down: silbato-node not running``..."""
    return f"{summary['health']}: silbato-node {summary['daemon']}" if "daemon" in summary else summary["health"]


def lines(summary: dict[str, Any], *, clock=time.time) -> list[str]:
    """The summary for a person, one fact per line."""
    release = summary["release"] or "not installed"
    since = summary["daemon_since"]
    ran = _duration(clock() - since) if since else "never started"
    if since and summary.get("daemon") == "not running":
        ran = f"not running (last started {ran} ago)"
    out = [f"version   {summary['version']} (release {release})",
           f"uptime    system {_duration(summary['uptime'])}; silbato-node {ran}",
           "services  " + ", ".join(f"{unit.removesuffix('.service')} {state}"
                                    for unit, state in summary["services"].items()),
           f"radio     {summary['radio']}",
           f"watch     a silent building shows TROUBLE after {summary['supervision_period']:.0f} s"
           + (f" (supervision.period is {summary['supervision_period_set']:.0f} s: too short for "
              f"{summary['preset']} at the airtime budget)"
              if summary["supervision_period"] > summary["supervision_period_set"] else ""),
           f"block     {summary['block_settings']}",
           f"health    {_health(summary)}"]
    alerts = summary["alerts"]
    out.append(f"alerts    {len(alerts)} active" if alerts else "alerts    none active")
    for a in alerts:
        out.append(f"  {a['id']:10s} {a['kind']:4s} {a['state']:10s} {a['place']}")
    for subsystem, message in sorted(summary["troubles"].items()):
        out.append(f"TROUBLE ({subsystem}) {message}")
    return out
