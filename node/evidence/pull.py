"""Evidence off the node: ``silbato evidence pull`` on an organizer's laptop, ``release`` on the node.

For each node, over SSH as ``silbato fleet`` reaches it (``node.appliance.fleet.Ssh``):

1. ``silbato evidence held --json`` there: the incidents with sealed items still on the node;
2. ``silbato evidence bundle INCIDENT`` there, its bytes copied here to a hidden file
   ``DIR/<host>/.part-incident-<id>.zip``; a copy that stops half way is removed and nothing is
   released;
3. the copy is verified **here** (``node.evidence.verify``: frames, the signed chain, each sealed
   file's SHA-256 against its signed entry). One that does not verify is kept as
   ``incident-<id>.unverified.zip`` for the organizers to look at, and nothing is released;
   one that does becomes ``incident-<id>.zip`` (``-2``, ``-3``... if that name is taken: an
   earlier pull is never overwritten);
4. ``silbato evidence release INCIDENT ITEM...`` there, naming only the items this copy holds
   and verified. The node deletes an item only if its own sealed files still have the SHA-256
   of that item's signed entry, so it deletes exactly the bytes the organizers now hold.

The release needs no signature: it runs as root on the node (through ``sudo -n``, as
``fleet`` does), marks the item ``released`` in the store and deletes its two files. The
daemon, the only holder of the node's key, then appends a signed ``pulled`` entry to the
incident's chain (``node.daemon.evidence``), so the node's later bundles verify with the
item shown as pulled rather than removed. Pulling twice is harmless: released items are no
longer held, and a release of an item already released changes nothing.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from node.appliance.fleet import PRELUDE, Ssh, _last_json, _why
from node.evidence import manifest, seal
from node.evidence.verify import verify
from node.store import Store

log = logging.getLogger(__name__)

INCIDENT_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")
ITEM_ID = re.compile(r"^[0-9a-f]{32}$")
NODE = '$s "$exe" --config "$r/etc/silbato/silbato.toml" evidence '  # silbato on the node, as root


# -- on the node --------------------------------------------------------------------------------

def held(store: Store) -> list[dict]:
    """The incidents with sealed items still on the node: ``{"id", "items", "bytes"}`` each."""
    return [{"id": r["alert_id"], "items": r["items"], "bytes": r["bytes"] or 0} for r in store.held_evidence()]


def release(store: Store, folder: Path, incident: str, items: Sequence[str], now: float) -> dict[str, str]:
    """Delete each of ``items`` of ``incident`` whose sealed files match its signed entry; the outcome of each.

    Outcomes: ``released``, ``already released``, or ``kept: <why>`` (not an item of this
    incident, or its files are not the ones signed: the organizers' copy may not be either).
    """
    from node.daemon.evidence import _hash_plain_file

    entries = {}
    for row in store.manifest(incident):
        body = json.loads(row["entry"])
        if manifest.kind(body) == "item":
            entries[body["item"]] = body
    outcome = {}
    for item in items:
        entry = entries.get(item) if ITEM_ID.match(item) else None
        status = store.evidence_status(item) if entry else None
        if entry is None or status is None:
            outcome[item] = "kept: not an item of this incident"
            continue
        if status in ("released", "pulled"):
            outcome[item] = "already released"
            continue
        why = ""
        for suffix, digest in ((seal.SUFFIX, entry["sealed_sha256"]), (seal.META_SUFFIX, entry["meta_sha256"])):
            try:
                if _hash_plain_file(folder / f"{item}{suffix}")[1] != digest:
                    why = f"{item}{suffix} is not the file its signed entry names"
            except OSError as exc:
                why = f"{item}{suffix}: {exc.strerror or exc}"
        if why:
            log.warning("evidence %s not released: %s", item, why)
            outcome[item] = f"kept: {why}"
            continue
        with store.transaction():  # first the mark, then the files: a stop in between is finished by the daemon
            store.release_evidence(item, now)
        for suffix in (seal.SUFFIX, seal.META_SUFFIX):
            (folder / f"{item}{suffix}").unlink(missing_ok=True)
        log.info("evidence %s of incident %s released: pulled by an organizer, deleted from the node", item, incident)
        outcome[item] = "released"
    return outcome


# -- on the organizer's laptop ------------------------------------------------------------------

@dataclass
class Pulled:
    """One incident of one host: where its copy is, what verified, what the node released."""

    host: str
    incident: str
    path: Path | None = None
    verified: int = 0
    released: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def pull(hosts: Sequence[str], to: Path, *, ssh: Ssh, organizer=None) -> list[Pulled]:
    """Pull each host's held evidence into ``to/<host>/``, verify it here, then release it there."""
    results = []
    for host in hosts:
        ssh.argv(host, "")  # a bad host name is refused before anything runs
        code, lines, stderr = ssh.run(host, PRELUDE + NODE + "held --json </dev/null\n", echo=False, timeout=120)
        found = _last_json(lines)
        if code != 0 or found is None:
            results.append(Pulled(host, "-", problems=[_why(code, stderr)]))
            continue
        for incident in found.get("incidents", []):
            results.append(pull_incident(host, str(incident.get("id")), Path(to), ssh=ssh, organizer=organizer))
    return results


def pull_incident(host: str, incident: str, to: Path, *, ssh: Ssh, organizer=None) -> Pulled:
    result = Pulled(host, incident)
    if not INCIDENT_ID.match(incident):
        result.problems.append("the node named an incident that is not an incident id")
        return result
    folder = to / host
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    part = folder / f".part-incident-{incident}.zip"
    part.unlink(missing_ok=True)  # an earlier pull that stopped half way
    try:
        code, stderr = ssh.copy_out(host, PRELUDE + NODE + f"bundle {shlex.quote(incident)} </dev/null\n", part)
    except (OSError, ConnectionError) as exc:
        part.unlink(missing_ok=True)
        result.problems.append(f"the copy stopped: {exc}; nothing released")
        return result
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    if code != 0:
        part.unlink(missing_ok=True)
        result.problems.append(f"the copy failed: {_why(code, stderr)}; nothing released")
        return result
    try:
        report = verify(part, organizer)
    except Exception as exc:  # not a zip at all (EvidenceError), or worse: keep it, release nothing
        report = None
        result.problems.append(f"the copy is not a bundle: {exc}")
    if report is None or not report.ok:
        result.path = _free(folder, f"incident-{incident}", ".unverified.zip")
        os.replace(part, result.path)
        if report is not None:
            result.problems += [str(f) for f in report.findings]
        result.problems.append(f"it does not verify here: nothing released (the copy is {result.path.name})")
        return result
    result.path = _free(folder, f"incident-{incident}", ".zip")
    os.replace(part, result.path)
    items = [e["item"] for e in report.chain if manifest.kind(e) == "item" and e["item"] not in report.pulled]
    result.verified = len(items)
    if not items:
        return result
    script = PRELUDE + NODE + f"release {shlex.quote(incident)} {' '.join(map(shlex.quote, items))} </dev/null\n"
    code, lines, stderr = ssh.run(host, script, echo=False, timeout=600)
    outcome = _last_json(lines)
    if code != 0 or outcome is None:
        result.problems.append(f"the node did not release them: {_why(code, stderr)} (they stay on the node; "
                               "pull again)")
        return result
    released = outcome.get("items", {})
    result.released = sum(1 for item in items if released.get(item) in ("released", "already released"))
    result.problems += [f"item {item}: {why}" for item, why in released.items() if why.startswith("kept")]
    return result


def _free(folder: Path, stem: str, suffix: str) -> Path:
    """``folder/stem+suffix``, or ``stem-2``, ``stem-3``...: a name no earlier pull took."""
    path, n = folder / f"{stem}{suffix}", 1
    while path.exists():
        n += 1
        path = folder / f"{stem}-{n}{suffix}"
    return path


def lines(results: Sequence[Pulled]) -> list[str]:
    out = []
    for r in results:
        if r.incident == "-":
            out.append(f"[{r.host}] unreachable: {'; '.join(r.problems)}")
            continue
        where = f" -> {r.path}" if r.path else ""
        out.append(f"[{r.host}] incident {r.incident}: {r.verified} item(s) verified here, "
                   f"{r.released} released on the node{where}")
        out += [f"[{r.host}]   FAIL {p}" for p in r.problems]
    return out

