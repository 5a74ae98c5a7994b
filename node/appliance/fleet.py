"""``silbato fleet``: look after a block's nodes from a maintainer's machine, over OpenSSH.

Every command runs ``ssh HOST sh -c SCRIPT``, so ``~/.ssh/config`` (or ``--ssh-config``)
decides how each name is reached: user, port, key, jump host. On the node the script
runs ``/opt/silbato/current/venv/bin/silbato`` as root (through ``sudo -n`` when the
login is not root). A node that lives in a directory instead of ``/`` (tests, trials) is
named by ``SILBATO_ROOT``, which the SSH configuration can send with ``SetEnv`` (the
node's sshd must ``AcceptEnv SILBATO_ROOT``).

- ``update``: build the release once here (a git URL or a source tree becomes a wheel),
  then for each node stream the wheel over the SSH connection and run
  ``silbato update --json`` there. One canary node first; then the rest ``batch`` at a
  time. The first failure stops the rollout: nodes not yet started are not touched.
- ``status``: each node's version, health and active alerts.
- ``roster``: install a signed roster on each node (canary first, the same way), and
  restart its daemon so it takes the roster.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from node.errors import SilbatoError

Say = Callable[[str], None]

BATCH = 3               # nodes updated at once after the canary
CONNECT_TIMEOUT = 15    # seconds for ssh to connect
UPDATE_TIMEOUT = 1800   # seconds for one node's whole update (building a venv on a Pi Zero is slow)
COPY_CHUNK = 1 << 20    # bytes read at a time from a copy's ssh (a bundle of videos is never held whole)

# Every remote script starts here: where silbato is on the node, and how to become root.
PRELUDE = r"""set -e
r="${SILBATO_ROOT:-}"
exe="$r/opt/silbato/current/venv/bin/silbato"
if [ ! -x "$exe" ]; then echo "silbato is not installed at $exe (run 'silbato install' there)" >&2; exit 3; fi
s=""; if [ "$(id -u)" != 0 ]; then s="sudo -n"; fi
d=$(mktemp -d "${TMPDIR:-/tmp}/silbato-fleet.XXXXXX")
trap 'rm -rf "$d"' EXIT
"""


class FleetError(SilbatoError):
    """A fleet command could not start (bad host name, missing file)."""


@dataclass
class HostResult:
    host: str
    old: str | None = None
    new: str | None = None
    result: str = "skipped"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.result in ("updated", "unchanged", "installed")


class Ssh:
    """Runs a shell script on a host with the system's OpenSSH client."""

    def __init__(self, config: Path | None = None, *, say: Say = print):
        self.config = config
        self.say = say
        self._lock = threading.Lock()

    def argv(self, host: str, script: str) -> list[str]:
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise FleetError(f"{host!r}: not a host name")
        options = ["-F", str(self.config)] if self.config else []
        return ["ssh", *options, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                host, "sh", "-c", shlex.quote(script)]

    def run(self, host: str, script: str, *, stdin: bytes = b"", echo: bool = True,
            timeout: float = UPDATE_TIMEOUT) -> tuple[int, list[str], str]:
        """Run ``script`` on ``host``, feeding it ``stdin``; echo its output lines as ``[host] ...``.

        Returns ``(exit code, stdout lines, stderr)``; ssh itself failing is exit code 255.
        """
        proc = subprocess.Popen(self.argv(host, script), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        err: list[bytes] = []
        feeder = threading.Thread(target=self._feed, args=(proc, stdin), daemon=True)
        drainer = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        feeder.start()
        drainer.start()
        lines = []
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                lines.append(line)
                if echo and not line.startswith("{"):
                    with self._lock:
                        self.say(f"[{host}] {line}")
            code = proc.wait()
        finally:
            timer.cancel()
            feeder.join(timeout=10)
            drainer.join(timeout=10)
        return code, lines, b"".join(err).decode("utf-8", "replace")

    def copy_out(self, host: str, script: str, dest: Path, *, timeout: float = UPDATE_TIMEOUT) -> tuple[int, str]:
        """Run ``script`` on ``host`` and write its standard output, as bytes, to the new file ``dest``.

        Returns ``(exit code, stderr)``. Anything that stops the copy (the connection dropped,
        a full disk here) kills ssh and is raised; the caller removes ``dest``.
        """
        proc = subprocess.Popen(self.argv(host, script), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        err: list[bytes] = []
        drainer = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
        drainer.start()
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            with open(dest, "xb") as fh:
                while chunk := proc.stdout.read(COPY_CHUNK):
                    self._write(fh, chunk)
            code = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
            drainer.join(timeout=10)
        return code, b"".join(err).decode("utf-8", "replace")

    @staticmethod
    def _write(fh, chunk: bytes) -> None:
        fh.write(chunk)

    @staticmethod
    def _feed(proc: subprocess.Popen, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the remote side failed before reading it; its exit code says why


def _last_json(lines: Sequence[str]) -> dict | None:
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _why(code: int, stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1].strip() if lines else ""
    if code == 255:
        return f"ssh: {last or 'could not connect'}"
    return last or f"exit {code}"


def _rollout(hosts: Sequence[str], one: Callable[[str], HostResult], batch: int) -> list[HostResult]:
    """``one(host)`` for the canary, then ``batch`` hosts at a time; stop after a batch with a failure."""
    results = {host: HostResult(host) for host in hosts}
    waves = [list(hosts[:1])] + [list(hosts[i:i + batch]) for i in range(1, len(hosts), max(batch, 1))]
    for wave in waves:
        with ThreadPoolExecutor(max_workers=len(wave)) as pool:
            for result in pool.map(one, wave):
                results[result.host] = result
        if not all(results[h].ok for h in wave):
            break
    return [results[h] for h in hosts]


def update(hosts: Sequence[str], wheel: Path, *, ssh: Ssh, batch: int = BATCH) -> list[HostResult]:
    """Update ``hosts`` to ``wheel``: canary first, then ``batch`` at a time; stop at the first failure."""
    name = Path(wheel).name
    data = Path(wheel).read_bytes()
    script = PRELUDE + (f'cat > "$d"/{shlex.quote(name)}\n'
                        f'$s "$exe" update --root "${{r:-/}}" --from "$d"/{shlex.quote(name)} --json </dev/null\n')

    def one(host: str) -> HostResult:
        code, lines, stderr = ssh.run(host, script, stdin=data)
        outcome = _last_json(lines)
        if outcome is None:
            return HostResult(host, None, None, "failed", _why(code, stderr))
        return HostResult(host, outcome.get("old"), outcome.get("new"), outcome.get("result", "failed"),
                          outcome.get("reason", ""))

    return _rollout(hosts, one, batch)


def roster(hosts: Sequence[str], file: Path, *, ssh: Ssh, batch: int = BATCH) -> list[HostResult]:
    """Install the signed roster ``file`` on ``hosts`` (canary first) and restart their daemons."""
    data = Path(file).read_bytes()
    try:
        document = json.loads(data)
        version = document["roster"]["version"]
    except (ValueError, KeyError, TypeError):
        raise FleetError(f"{file}: not a signed roster (expected {{\"roster\": ..., \"signature\": ...}})") from None
    script = PRELUDE + ('cat > "$d/roster.json"\n'
                        '$s "$exe" --config "$r/etc/silbato/silbato.toml" roster install "$d/roster.json" </dev/null\n'
                        'if [ -z "$r" ]; then $s systemctl try-restart silbato-node.service; fi\n')

    def one(host: str) -> HostResult:
        code, lines, stderr = ssh.run(host, script, stdin=data)
        if code != 0:
            return HostResult(host, None, f"v{version}", "failed", _why(code, stderr))
        return HostResult(host, None, f"v{version}", "installed", lines[-1] if lines else "")

    return _rollout(hosts, one, batch)


def status(hosts: Sequence[str], *, ssh: Ssh) -> list[tuple[str, dict | None, str]]:
    """Each host's ``silbato status --json``, fetched in parallel: ``(host, summary or None, error)``."""
    script = PRELUDE + '$s "$exe" status --root "${r:-/}" --json </dev/null\n'

    def one(host: str) -> tuple[str, dict | None, str]:
        code, lines, stderr = ssh.run(host, script, echo=False, timeout=120)
        summary = _last_json(lines)
        return host, summary, "" if summary is not None else _why(code, stderr)

    with ThreadPoolExecutor(max_workers=min(len(hosts), 8) or 1) as pool:
        return list(pool.map(one, hosts))


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> list[str]:
    """Left-aligned columns, two spaces apart; the last column is not padded."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    out = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        out.append("  ".join(cells).rstrip())
    return out


def update_table(results: Sequence[HostResult]) -> list[str]:
    rows = []
    for r in results:
        result = r.result if r.result != "skipped" else "skipped (an earlier node failed)"
        rows.append((r.host, r.old or "-", r.new or "-", f"{result}: {r.reason}" if r.reason else result))
    return table(rows, ("HOST", "OLD", "NEW", "RESULT"))


def status_lines(found: Sequence[tuple[str, dict | None, str]]) -> list[str]:
    rows, details = [], []
    for host, summary, error in found:
        if summary is None:
            rows.append((host, "-", "unreachable", error))
            continue
        alerts = summary.get("alerts", [])
        rows.append((host, summary.get("release") or summary.get("version", "?"), summary.get("health", "?"),
                     f"{len(alerts)} active" if alerts else "none"))
        details += [f"  {host}: {a['id']} {a['kind']} {a['state']} at {a['place']}" for a in alerts]
        details += [f"  {host}: TROUBLE ({k}) {v}" for k, v in sorted(summary.get("troubles", {}).items())]
    return table(rows, ("HOST", "VERSION", "HEALTH", "ALERTS")) + details


def timed(fn: Callable[[], list[HostResult]]) -> tuple[list[HostResult], float]:
    start = time.monotonic()
    results = fn()
    return results, time.monotonic() - start
