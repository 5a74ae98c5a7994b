"""The incident bundle for legal observers: events JSON, CAP 1.2 messages that validate, a SHA-256 manifest."""

import hashlib
import io
import json
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
import xmlschema
from websupport import add_captain, app_for, everywhere, login, make_block, until

from node.protocol.alerts import Kind, State
from web.export import CAP_NS

SCHEMA = xmlschema.XMLSchema(str(Path(__file__).parent / "cap" / "CAP-v1.2.xsd"))
NS = {"cap": CAP_NS}


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    b = make_block(tmp_path_factory.mktemp("export"))
    add_captain(b, 3, "ana")
    raid = b.nodes[1].report()
    until(b, lambda: everywhere(b, raid.id, State.REPORTED))
    b.nodes[2].act("confirm", raid.id)
    until(b, lambda: everywhere(b, raid.id, State.CONFIRMED))
    b.nodes[1].act("all_clear", raid.id)
    false_alarm = b.nodes[2].report(location=102)
    until(b, lambda: everywhere(b, raid.id, State.ALL_CLEAR) and everywhere(b, false_alarm.id, State.REPORTED))
    b.nodes[2].act("cancel", false_alarm.id)
    test = b.nodes[3].report(Kind.TEST)
    until(b, lambda: everywhere(b, false_alarm.id, State.CANCELLED) and everywhere(b, test.id, State.REPORTED))
    b.ids = {"raid": raid.id, "false_alarm": false_alarm.id, "test": test.id}
    yield b
    b.stop()


@pytest.fixture(scope="module")
def captain(block):
    client = app_for(block, 3).test_client()
    assert login(client, "ana").status_code == 303
    return client


def bundle(client, alert_id) -> dict[str, bytes]:
    response = client.get(f"/api/alerts/{alert_id}/export")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    assert f'filename="incident-{alert_id}.zip"' in response.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(response.data)) as zf:
        return {name.split("/", 1)[1]: zf.read(name) for name in zf.namelist()}


def cap(files: dict[str, bytes]) -> list[ET.Element]:
    return [ET.fromstring(body) for name, body in sorted(files.items()) if name.startswith("cap/")]


def field(message: ET.Element, path: str) -> str | None:
    node = message.find(path, NS)
    return None if node is None else node.text


def test_the_bundle_holds_events_notes_cap_and_a_manifest_that_checks(captain, block):
    token = captain.get("/api/session").get_json()["csrf_token"]
    captain.post(f"/api/alerts/{block.ids['raid']}/notes", json={"text": "two vans"}, headers={"X-CSRFToken": token})
    files = bundle(captain, block.ids["raid"])
    assert set(files) >= {"incident.json", "notes.json", "SHA256SUMS", "cap/01-reported.xml",
                          "cap/02-confirmed.xml", "cap/03-all_clear.xml"}
    manifest = files["SHA256SUMS"].decode().splitlines()
    assert len(manifest) == len(files) - 1
    for line in manifest:
        digest, name = line.split("  ", 1)
        assert hashlib.sha256(files[name]).hexdigest() == digest, name
    incident = json.loads(files["incident.json"])
    assert incident["alert"]["place"] == "Building 1" and incident["alert"]["state"] == "all_clear"
    assert [(e["state"], e["signer"]) for e in incident["events"] if e["outcome"] in ("new", "changed")] == [
        ("reported", 1), ("confirmed", 2), ("all_clear", 1)]
    assert [n["text"] for n in json.loads(files["notes.json"])] == ["two vans"]


@pytest.mark.parametrize("which", ["raid", "false_alarm", "test"])
def test_every_cap_message_validates_against_the_cap_1_2_schema(captain, block, which):
    messages = [body for name, body in bundle(captain, block.ids[which]).items() if name.startswith("cap/")]
    assert messages
    for body in messages:
        SCHEMA.validate(body.decode())


def test_the_cap_mapping(captain, block):
    report, confirm, clear = cap(bundle(captain, block.ids["raid"]))
    assert [field(report, f"cap:{f}") for f in ("status", "msgType", "scope")] == ["Actual", "Alert", "Restricted"]
    assert [field(report, f"cap:info/cap:{f}") for f in ("category", "urgency", "certainty")] == [
        "Security", "Immediate", "Possible"]
    assert field(confirm, "cap:msgType") == "Update" and field(confirm, "cap:info/cap:certainty") == "Observed"
    assert field(confirm, "cap:info/cap:responseType") == "Shelter"
    assert field(clear, "cap:msgType") == "Update" and field(clear, "cap:info/cap:responseType") == "AllClear"
    # each update names the messages before it
    assert field(clear, "cap:references").count(",") == 2 * 2
    for message in (report, confirm, clear):
        area = message.findall("cap:info/cap:area/*", NS)
        assert [(a.tag, a.text) for a in area] == [(f"{{{CAP_NS}}}areaDesc", "Building 1")]  # the place, nothing else
    report_fa, cancel = cap(bundle(captain, block.ids["false_alarm"]))
    assert field(cancel, "cap:msgType") == "Cancel"
    (test,) = cap(bundle(captain, block.ids["test"]))
    assert field(test, "cap:status") == "Test"


def test_two_nodes_export_the_same_cap_identifiers(block):
    from node.store import Store
    from web.export import bundle as make_bundle

    def identifiers(i):
        store = Store(block.files.configs[i - 1].db_file, readonly=True)
        try:
            _name, body = make_bundle(store, block.ids["raid"])
        finally:
            store.close()
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            return [field(ET.fromstring(zf.read(n)), "cap:identifier") for n in sorted(zf.namelist()) if "/cap/" in n]

    assert identifiers(1) == identifiers(3) and len(identifiers(1)) == 3


def test_only_captains_export(block):
    client = app_for(block, 3).test_client()
    assert client.get(f"/api/alerts/{block.ids['raid']}/export").status_code == 401
    assert login(client, "ana").status_code == 303
    assert client.get("/api/alerts/9-9/export").status_code == 404
