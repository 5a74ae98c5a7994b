"""``silbato update --from SOURCE``: move this node to another release, or stay on the old one.

1. install the new release beside the old (``node.appliance.release``);
2. apply its migrations to a copy of the database (``silbato migrate --db COPY`` with the new code);
3. run ``silbato doctor`` with the new code, on that copy;
4. install its units, switch ``current`` and restart the services;
5. wait up to ``HEALTH_TIMEOUT`` seconds for both services to be active and healthy;
6. otherwise switch back, restart the old release, and report why.

Step 3 refuses the release when its doctor FAILs a check that the running release's
doctor passes. A FAIL both share (an unplugged radio, say) is the node's, not the
release's, and does not hold the update back; ``silbato doctor`` still shows it.

The live database is never migrated here: the new ``silbato-node`` does that when it
starts, and a rollback leaves it as it is (migrations only add), so no alert stored in
between is lost. The last ``KEEP`` releases stay installed for the next rollback.

``Outcome`` is what ``silbato update --json`` prints last, and what ``silbato fleet update``
reads from each node.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from node.appliance import doctor as doctor_mod
from node.appliance import install as install_mod
from node.appliance import release as release_mod
from node.config import Config
from node.appliance.host import SERVICES, DirectoryHost, Host, Layout, optional_services

Say = Callable[[str], None]

HEALTH_TIMEOUT = 60.0   # seconds for both services to come up healthy after the switch
HEALTH_SETTLE = 5.0     # seconds they must stay healthy (no restart) to count
HEALTH_POLL = 1.0       # seconds between looks
KEEP = 3                # releases kept installed, the current one included


@dataclass
class Outcome:
    old: str | None
    new: str | None
    result: str          # updated, unchanged, rolled back, failed
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.result in ("updated", "unchanged")

    def json(self) -> str:
        return json.dumps(asdict(self))


def _tail(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in (result.stderr + "\n" + result.stdout).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit {result.returncode}"


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of the live database (SQLite's backup API; the daemon may be writing)."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    src = sqlite3.connect(f"file:{urllib.parse.quote(str(Path(source).absolute()))}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


class Updater:
    """One update of the node at ``layout``. ``health_timeout`` and ``sleep`` are for tests."""

    def __init__(self, layout: Layout, host: Host, cfg: Config, *, config_path: Path | None, say: Say,
                 health_timeout: float = HEALTH_TIMEOUT, settle: float = HEALTH_SETTLE,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.layout, self.host, self.cfg = layout, host, cfg
        self.config_path = config_path
        self.say = say
        # Under a root nothing runs on its own afterwards, so one good answer is enough.
        self.health_timeout, self.settle = health_timeout, settle if host.real else 0.0
        self.sleep, self.clock = sleep, clock

    def _config_args(self) -> list[str]:
        return ["--config", str(self.config_path)] if self.config_path else []

    def run(self, wheel: Path, *, force: bool = False) -> Outcome:
        """Update to ``wheel``. Never raises for a bad release: the outcome says what happened."""
        with self.layout.lock():
            old_release = self.layout.current_release()
            old = old_release.name if old_release else None
            new = release_mod.wheel_version(wheel)
            if new == old and not force:
                self.say(f"already at {new}; nothing to do")
                return Outcome(old, new, "unchanged")
            existed = release_mod.is_complete(self.layout.release(new))
            try:
                release = release_mod.install(self.layout, wheel, say=self.say)
            except release_mod.ReleaseError as exc:
                return Outcome(old, new, "failed", str(exc))
            reason = self._trial(release, new)
            if reason:
                self._discard(release, existed)
                self.say(f"rolled back: {reason}; still on {old}")
                return Outcome(old, new, "rolled back", reason)
            return self._switch(old_release, release, existed)

    # -- steps 2 and 3: the new code on a copy of the database -----------------------------

    def _trial(self, release: Path, new: str) -> str:
        """Migrations and doctor with the new release; return why it is refused, or ''."""
        exe = str(self.layout.silbato(release))
        live = self.cfg.db_file
        copy = self.cfg.state_dir / f".update-{new}.db"
        try:
            if live.exists():
                copy_database(live, copy)
                result = subprocess.run([exe, *self._config_args(), "migrate", "--db", str(copy)],
                                        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
                if result.returncode != 0:
                    return f"migrations failed on a copy of the database: {_tail(result)}"
                self.say(f"migrations: {result.stdout.strip().splitlines()[-1] if result.stdout.strip() else 'ok'} "
                         "(on a copy of the database)")
            else:
                self.say("migrations: no database yet")
            return self._doctor(exe, copy if live.exists() else None, new)
        except (OSError, sqlite3.Error, subprocess.TimeoutExpired) as exc:
            return f"trying the new release failed: {exc}"
        finally:
            _remove_database(copy)

    def _doctor(self, exe: str, db: Path | None, new: str) -> str:
        baseline = doctor_mod.Doctor(self.host, config_path=self.config_path).run()
        failing_now = {r.check for r in baseline if r.status == doctor_mod.FAIL}
        argv = [exe, *self._config_args(), "doctor", "--root", str(self.layout.root), "--json"]
        if db is not None:
            argv += ["--db", str(db)]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
        try:
            found = [doctor_mod.Result(**r) for r in json.loads(result.stdout)]
        except (ValueError, TypeError):
            return f"doctor with {new} did not run: {_tail(result)}"
        new_fails = [r for r in found if r.status == doctor_mod.FAIL and r.check not in failing_now]
        for r in found:
            if r.status != doctor_mod.PASS:
                self.say(f"doctor ({new}): {r.line()}" +
                         ("   (fails with the current release too)" if r.check in failing_now and
                          r.status == doctor_mod.FAIL else ""))
        if new_fails:
            return f"doctor with {new}: " + "; ".join(r.line() for r in new_fails)
        self.say(f"doctor ({new}): no new failure")
        return ""

    def _discard(self, release: Path, existed: bool) -> None:
        if not existed and release != self.layout.current_release():
            shutil.rmtree(release, ignore_errors=True)

    # -- steps 4 to 6: switch, wait, and maybe switch back --------------------------------

    def _switch(self, old_release: Path | None, release: Path, existed: bool) -> Outcome:
        old, new = (old_release.name if old_release else None), release.name
        install_mod.prepare_host(self.cfg, self.host, self.say)   # the page's user and db/, if an older install lacks them
        install_mod.install_units(self.layout, self.host, release_mod.share_dir(release), self.say)
        install_mod.enable_gateway(self.cfg, self.host, self.say)   # sms.enabled may have changed
        install_mod.enable_bridge(self.cfg, self.host, self.say)    # so may bridge.enabled
        self.layout.switch(release)
        self.say(f"current: {old} -> {new}")
        self._restart()
        reason = self.wait_healthy(new)
        if not reason:
            self.say(f"healthy on {new}")
            self._prune(keep={release, old_release})
            return Outcome(old, new, "updated")
        self.say(f"not healthy on {new}: {reason}")
        if old_release is None:
            return Outcome(old, new, "failed", reason)
        install_mod.install_units(self.layout, self.host, release_mod.share_dir(old_release), self.say)
        self.layout.switch(old_release)
        self.say(f"current: {new} -> {old} (rolled back)")
        self._restart()
        again = self.wait_healthy(old)
        self.say(f"healthy again on {old}" if not again else f"the old release is not healthy either: {again}")
        self._discard(release, existed)
        return Outcome(old, new, "rolled back", reason)

    def _restart(self) -> None:
        # --no-block: a node that never sends READY=1 would hold systemctl for TimeoutStartSec;
        # the health wait below is the one that counts.
        self.host.systemctl("restart", "--no-block", *SERVICES, *optional_services(self.cfg), check=False)
        self.say("services: restarted" + ("" if self.host.real else " (recorded; nothing runs under --root)"))

    def health(self, version: str, restarts: dict[str, int]) -> str:
        """Why the node is not healthy on ``version`` now, or '' when it is."""
        if isinstance(self.host, DirectoryHost):
            return self.host.release_answers(version) or ""
        for unit in SERVICES:
            state = self.host.service_state(unit)
            if state != "active":
                return f"{unit} is {state}"
            if self.host.service_restarts(unit) > restarts.get(unit, 0):
                return f"{unit} restarted by systemd (crashed or missed its watchdog)"
        return _web_answers(self.cfg)

    def wait_healthy(self, version: str) -> str:
        """Wait up to ``health_timeout`` for ``health`` to hold for ``settle`` seconds; '' or the reason."""
        restarts = {unit: self.host.service_restarts(unit) for unit in SERVICES}
        deadline = self.clock() + self.health_timeout
        healthy_since = None
        reason = "no answer"
        while True:
            reason = self.health(version, restarts)
            now = self.clock()
            if reason:
                healthy_since = None
                if "restarted by systemd" in reason:
                    return reason
            elif healthy_since is None:
                healthy_since = now
            if healthy_since is not None and now - healthy_since >= self.settle:
                return ""
            if now >= deadline:
                return reason or f"not healthy for {self.settle:.0f} s in a row"
            self.sleep(HEALTH_POLL)

    def _prune(self, keep: set[Path | None]) -> None:
        releases = sorted((p for p in self.layout.releases.iterdir() if p.is_dir()),
                          key=lambda p: p.stat().st_mtime, reverse=True)
        kept = [p for p in releases if p in keep]
        for release in releases:
            if release in keep:
                continue
            if len(kept) < KEEP and release_mod.is_complete(release):
                kept.append(release)
                continue
            shutil.rmtree(release, ignore_errors=True)
            self.say(f"removed old release {release.name}")


def _web_answers(cfg: Config) -> str:
    """The page answers ``/api/health`` on this node."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if cfg["web.host"] in ("0.0.0.0", "::", "") else cfg["web.host"]
    url = f"http://{host}:{cfg['web.port']}/api/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return "" if response.status == 200 else f"{url} answered {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"{url}: {getattr(exc, 'reason', exc)}"
