"""The incident bundle for legal observers: a zip of JSON, CAP 1.2 messages and a SHA-256 manifest.

::

    incident-<id>/incident.json      the alert and its event log (who signed, from where, when)
    incident-<id>/notes.json         captains' notes kept on this node
    incident-<id>/cap/NN-<state>.xml one CAP 1.2 message per change of state
    incident-<id>/SHA256SUMS         ``sha256sum -c`` checks every file above

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

from node.protocol.alerts import Alert, Kind, State
from node.store import Store

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"

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


def bundle(store: Store, alert_id: str, *, block: str = "") -> tuple[str, bytes] | None:
    """The zip for incident ``alert_id`` as ``(file name, bytes)``, or ``None`` if unknown."""
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
             *cap_messages(alert, events, place, block)]
    manifest = "".join(f"{hashlib.sha256(body).hexdigest()}  {name}\n" for name, body in files)
    folder = f"incident-{alert.id}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in [*files, ("SHA256SUMS", manifest.encode())]:
            zf.writestr(f"{folder}/{name}", body)
    return f"{folder}.zip", buffer.getvalue()


def iso(ts: float | None) -> str | None:
    return None if ts is None else dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def _json(value) -> bytes:
    return (json.dumps(value, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
