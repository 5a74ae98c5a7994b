"""The incident bundle for legal observers: JSON, CAP 1.2, the signed frames and the sealed evidence.

::

    incident-<id>/incident.json      the alert and its event log (who signed, from where, when)
    incident-<id>/notes.json         captains' notes kept on this node
    incident-<id>/cap/NN-<state>.xml one CAP 1.2 message per change of state
    incident-<id>/frames/NN.frame    each signed transition frame, as received, in the order taken
    incident-<id>/roster.json        the signed roster whose keys signed them
    incident-<id>/organizer.pub      the organizers' public key (pin your own copy: ``silbato verify --organizer``)
    incident-<id>/evidence/head.json      the node's signed head: the frames' hashes, the chain's length and tip
    incident-<id>/evidence/manifest.jsonl the hash-chained, signed entries, one per sealed item
    incident-<id>/evidence/items/<item>.age, <item>.meta.age   the sealed items (age; the node cannot open them),
                                     but for those pulled off the node (a signed ``pulled`` entry says so)
    incident-<id>/SHA256SUMS         ``sha256sum -c`` checks every file above

``silbato verify`` checks the signed parts (``node.evidence.verify``); ``SHA256SUMS`` alone
proves nothing, since whoever edits a file can recompute it. The frames included are those
the head names (the daemon signs a new head within a second of a change).

CAP mapping: a report is ``Alert`` (``Actual``, ``Restricted``, ``Security``,
``Immediate``, ``Possible``); a confirmation an ``Update`` with ``Observed`` and
``Shelter``; all clear an ``Update`` with ``AllClear``; a false alarm ``Cancel``. A
TEST incident is ``status=Test`` throughout. ``areaDesc`` holds the place name and
nothing else; no message names a person. Expiry is local to a node and has no CAP
message. A message's identifier is the incident's id and the state (each state
happens once in an incident), so every node exports the same identifiers for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Iterator

from node.evidence import manifest, seal
from node.protocol.alerts import Alert, Kind, State
from node.store import Store

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
COPY_SIZE = 1 << 20  # bytes of a sealed item copied into the zip at a time

_INFO = {
    # state: (msgType, event, urgency, severity, certainty, responseType or None)
    State.REPORTED: ("Alert", "Raid reported", "Immediate", "Severe", "Possible", None),
    State.CONFIRMED: ("Update", "Raid confirmed", "Immediate", "Severe", "Observed", "Shelter"),
    State.ALL_CLEAR: ("Update", "All clear", "Past", "Minor", "Observed", "AllClear"),
    State.CANCELLED: ("Cancel", "False alarm: report withdrawn", "Past", "Minor", "Unlikely", None),
}


def cap_time(ts: float) -> str:
    """CAP's dateTime: seconds, an explicit offset, never ``Z``."""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _token(text: str) -> str:
    """CAP identifiers and senders may not hold spaces, commas or ``<`` ``&``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def cap_messages(alert: Alert, events: list[dict], place: str, block: str) -> list[tuple[str, bytes]]:
    """One CAP 1.2 document per accepted change of state, as ``(file name, XML bytes)``."""
    out: list[tuple[str, bytes]] = []
    sent_before: list[str] = []
    for event in events:
        state = State(event["state"])
        if event["outcome"] not in ("new", "changed") or state not in _INFO:
            continue
        msg_type, what, urgency, severity, certainty, response = _INFO[state]
        sender = f"node-{event['signer']}.{_token(block)}.silbato"
        identifier = f"silbato-{_token(block)}-{alert.id}-{state.word}"  # each state happens once
        sent = cap_time(event["received_at"])
        root = ET.Element("alert", xmlns=CAP_NS)
        for tag, text in (("identifier", identifier), ("sender", sender), ("sent", sent),
                          ("status", "Actual" if alert.kind is Kind.RAID else "Test"),
                          ("msgType", msg_type), ("scope", "Restricted"),
                          ("restriction", "The block's residents, captains and legal observers")):
            ET.SubElement(root, tag).text = text
        if sent_before:
            ET.SubElement(root, "references").text = " ".join(sent_before)
        ET.SubElement(root, "incidents").text = f"silbato-{_token(block)}-{alert.id}"
        info = ET.SubElement(root, "info")
        ET.SubElement(info, "language").text = "en-US"
        ET.SubElement(info, "category").text = "Security"
        ET.SubElement(info, "event").text = what if alert.kind is Kind.RAID else ("Test: " + what)
        if response:
            ET.SubElement(info, "responseType").text = response
        for tag, text in (("urgency", urgency), ("severity", severity), ("certainty", certainty),
                          ("senderName", f"Silbato node {event['signer']}")):
            ET.SubElement(info, tag).text = text
        area = ET.SubElement(info, "area")
        ET.SubElement(area, "areaDesc").text = place
        sent_before.append(f"{sender},{identifier},{sent}")
        body = ET.tostring(root, encoding="utf-8", xml_declaration=True)
        out.append((f"cap/{len(out) + 1:02d}-{state.word}.xml", body))
    return out


def bundle(store: Store, alert_id: str, *, block: str = "", evidence_dir: Path | None = None
           ) -> tuple[str, bytes] | None:
    """The zip for incident ``alert_id`` as ``(file name, bytes)``, or ``None`` if unknown."""
    found = stream_bundle(store, alert_id, block=block, evidence_dir=evidence_dir)
    return None if found is None else (found[0], b"".join(found[1]))


def stream_bundle(store: Store, alert_id: str, *, block: str = "", evidence_dir: Path | None = None
                  ) -> tuple[str, Iterator[bytes]] | None:
    """The zip for incident ``alert_id`` as ``(file name, chunks)``, or ``None`` if unknown.

    Sealed items are copied in ``COPY_SIZE`` pieces, so a bundle of large videos is never held whole.
    """
    alert = store.get_alert(alert_id)
    if alert is None:
        return None
    block = block or store.meta("block") or "block"
    place = store.places().get(alert.location, f"location {alert.location}")
    names = {p["node_id"]: p["name"] for p in store.peers()}
    events = store.events(alert.id)
    incident = {
        "alert": {"id": alert.id, "kind": alert.kind.word, "state": alert.state.word, "place": place,
                  "location": alert.location, "reporter": alert.reporter,
                  "reporter_name": names.get(alert.reporter), "opened_at": iso(alert.opened_at),
                  "updated_at": iso(alert.updated_at)},
        "exported_by_node": store.meta("node_id"),
        "events": [{"id": e["id"], "state": State(e["state"]).word, "outcome": e["outcome"], "reason": e["reason"],
                    "signer": e["signer"], "signer_name": names.get(e["signer"]), "source": e["source"],
                    "counter": e["counter"], "received_at": iso(e["received_at"])} for e in events],
    }
    notes = [{"captain": n["captain"], "text": n["text"], "created_at": iso(n["created_at"])}
             for n in store.notes(alert.id)]
    files = [("incident.json", _json(incident)), ("notes.json", _json(notes)),
             *cap_messages(alert, events, place, block), *_signed_files(store, alert.id)]
    chain = store.manifest(alert.id)
    items = [f"{row['item_id']}{suffix}" for row in chain if manifest.kind(json.loads(row["entry"])) == "item"
             for suffix in (seal.SUFFIX, seal.META_SUFFIX)]
    folder = f"incident-{alert.id}"
    return f"{folder}.zip", _zip(folder, files, items, Path(evidence_dir) if evidence_dir else None)


def _signed_files(store: Store, alert_id: str) -> list[tuple[str, bytes]]:
    """The frames the signed head names, the roster, the organizers' key, the head and the chain."""
    out: list[tuple[str, bytes]] = []
    head = store.manifest_head(alert_id)
    frames = {manifest.sha256(f): f for f in store.transition_frames(alert_id)}
    named = json.loads(head["head"])["frames"] if head else []
    for i, digest in enumerate(named, 1):
        if digest in frames:
            out.append((f"frames/{i:02d}.frame", frames[digest]))
    if store.meta("roster"):
        out.append(("roster.json", _json(json.loads(store.meta("roster")))))
    if store.meta("organizer_key"):
        out.append(("organizer.pub", (store.meta("organizer_key") + "\n").encode()))
    if head:
        out.append(("evidence/head.json", _json({"head": json.loads(head["head"]), "signature": head["signature"]})))
    lines = [json.dumps({"entry": json.loads(r["entry"]), "hash": r["hash"], "signature": r["signature"]},
                        sort_keys=True, ensure_ascii=False) + "\n" for r in store.manifest(alert_id)]
    if lines:
        out.append(("evidence/manifest.jsonl", "".join(lines).encode("utf-8")))
    return out


class _Chunks(io.RawIOBase):
    """What zipfile writes, handed on in pieces (a zip written to a stream that cannot seek)."""

    def __init__(self):
        self.pieces: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.pieces.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out, self.pieces = b"".join(self.pieces), []
        return out


def _zip(folder: str, files: list[tuple[str, bytes]], items: list[str], evidence_dir: Path | None) -> Iterator[bytes]:
    sums = []
    out = _Chunks()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in files:
            zf.writestr(f"{folder}/{name}", body)
            sums.append(f"{hashlib.sha256(body).hexdigest()}  {name}\n")
            yield out.take()
        for name in items:  # sealed: stored as they are (they do not compress)
            path = (evidence_dir / name) if evidence_dir else None
            if path is None or not path.is_file():
                continue  # purged, or removed from the node: verify names it
            h = hashlib.sha256()
            with open(path, "rb") as src, zf.open(zipfile.ZipInfo(f"{folder}/evidence/items/{name}"), "w",
                                                 force_zip64=True) as dst:
                while chunk := src.read(COPY_SIZE):
                    h.update(chunk)
                    dst.write(chunk)
                    yield out.take()
            sums.append(f"{h.hexdigest()}  evidence/items/{name}\n")
        zf.writestr(f"{folder}/SHA256SUMS", "".join(sums))
    yield out.take()


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _json(value) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
