"""The JSON API (``/api``), described by ``/api/openapi.json``.

Public: alerts, one alert with its events, the buildings, this node's health and
troubles. Captains (a session from ``/captain/login``, and the CSRF token from
``GET /api/session`` in an ``X-CSRFToken`` header on every POST): requests for the
node daemon, notes, and the incident export. The live stream is in ``web.live``.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify, request, stream_with_context, url_for
from flask_wtf.csrf import generate_csrf

from node import __version__
from node.protocol.alerts import State
from web import auth, data, evidence, export, live
from web.openapi import document

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/alerts")
def alerts():
    """Active and recent alerts as a JSON list."""
    return jsonify(data.alert_rows())


def _alert_or_404(alert_id: str) -> dict:
    s = data.store()
    incident = s.resolve(alert_id)
    row = next((r for r in data.alert_rows(s=s) if r["id"] == incident), None)
    if row is None:
        abort(404, "no such alert")
    return row


@bp.get("/alerts/<alert_id>")
def alert(alert_id: str):
    """One alert with its event log: every state, who signed it, from where, when."""
    row = _alert_or_404(alert_id)
    events = [{"state": State(e["state"]).word, "outcome": e["outcome"], "reason": e["reason"],
               "signer": e["signer"], "source": e["source"], "received_at": data.iso(e["received_at"])}
              for e in data.store().events(row["id"])]
    return jsonify({**row, "events": events})


@bp.get("/nodes")
def nodes():
    """The block's buildings and their health: ok, trouble, silent, out of reach (unreachable) or waiting."""
    snapshot = live.current()
    return jsonify(snapshot.doc["nodes"])


@bp.get("/health")
def health():
    """This node's health: ``ok`` or ``trouble``, its TROUBLE lines, Silbato's version, and its live clients."""
    snapshot = live.current()
    troubles = snapshot.doc["troubles"]
    hub = live.live()
    return jsonify({"status": "trouble" if troubles else "ok", "troubles": troubles,
                    "banner": snapshot.doc["banner"]["state"], "version": __version__,
                    "live_version": snapshot.version, "live_clients": hub.clients, "live_slots": hub.slots})


@bp.get("/nearby")
def nearby():
    """Raids on other blocks of the neighborhood, as this block's bridge nodes passed them on (NEARBY)."""
    return jsonify(data.nearby_rows(data.store(), data.node_time()))


@bp.get("/troubles")
def troubles():
    """This node's own TROUBLE lines (radio, storage) as a JSON object."""
    return jsonify(data.store().troubles())


@bp.get("/session")
def session_info():
    """Who is logged in, and the CSRF token a captain sends with every POST."""
    captain = auth.current_captain()
    if captain is None:
        return jsonify({"captain": None, "csrf_token": None})
    return jsonify({"captain": captain, "csrf_token": generate_csrf()})


@bp.post("/requests")
@auth.captain_required
def create_request():
    """Ask the node to raise, test, confirm, clear or cancel; 202 with the request to watch."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    action, alert_id, location = body.get("action"), body.get("alert", ""), body.get("location")
    if not isinstance(action, str) or not isinstance(alert_id, str) or not (
            location is None or (isinstance(location, int) and not isinstance(location, bool))):
        abort(400, "action and alert are strings, location an integer")
    request_id = data.submit(action, auth.current_captain(), alert_id=alert_id, location=location)
    response = jsonify(_request_or_404(request_id))
    response.status_code = 202
    response.headers["Location"] = url_for("api.get_request", request_id=request_id)
    return response


def _request_or_404(request_id: int) -> dict:
    row = data.store().get_request(request_id)
    if row is None:
        abort(404, "no such request")
    return data.request_row(row, data.node_time())


@bp.get("/requests")
@auth.captain_required
def list_requests():
    """The newest captains' requests on this node, newest first."""
    now = data.node_time()
    return jsonify([data.request_row(r, now) for r in data.store().requests(20)])


@bp.get(f"/requests/<int(max={data.MAX_ID}):request_id>")  # a larger id is no such request
@auth.captain_required
def get_request(request_id: int):
    """One request: pending, sent, queued (waiting for the radio), refused (with the reason) or no_answer."""
    return jsonify(_request_or_404(request_id))


@bp.get("/alerts/<alert_id>/notes")
@auth.captain_required
def notes(alert_id: str):
    """Captains' notes on an incident (kept on this node only)."""
    row = _alert_or_404(alert_id)
    return jsonify([{"captain": n["captain"], "text": n["text"], "created_at": data.iso(n["created_at"])}
                    for n in data.store().notes(row["id"])])


@bp.post("/alerts/<alert_id>/notes")
@auth.captain_required
def add_note(alert_id: str):
    """Keep a short note on an incident; it never goes on air."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("text"), str):
        abort(400, "expected a JSON object with a text")
    _alert_or_404(alert_id)
    note_id = data.add_note(alert_id, auth.current_captain(), body["text"])
    return jsonify({"id": note_id}), 201


@bp.get("/alerts/<alert_id>/export")
@auth.captain_required
def export_incident(alert_id: str):
    """The incident bundle for legal observers: events, CAP 1.2, signed frames, sealed evidence; zipped, streamed."""
    result = export.stream_bundle(data.store(), alert_id, evidence_dir=evidence.evidence_dir())
    if result is None:
        abort(404, "no such alert")
    name, body = result
    return Response(stream_with_context(body), mimetype="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


@bp.get("/openapi.json")
def openapi():
    """This API, described in OpenAPI 3."""
    return jsonify(document(current_app.config["NODE_NAME"] or "Silbato"))
