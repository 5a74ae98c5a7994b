"""The OpenAPI 3 document of ``/api`` (served at ``/api/openapi.json``)."""

from __future__ import annotations

from node import __version__
from node.catalog import LANGUAGES
from web.data import ACTIONS, MAX_ID, NOTE_MAX

STATES = ["reported", "confirmed", "all_clear", "cancelled", "expired"]
BANNERS = ["quiet", "reported", "confirmed", "all_clear"]
REQUEST_STATUSES = ["pending", "sent", "queued", "refused", "no_answer"]


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


_S = {"type": "string"}
_I = {"type": "integer"}
_N = {"type": "number"}
_B = {"type": "boolean"}
_T = {"type": "string", "format": "date-time"}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict, required: list[str] | None = None) -> dict:
    return {"type": "object", "properties": properties, "required": required or list(properties)}


SCHEMAS = {
    "Error": _object({"error": _S}),
    "Alert": _object({
        "id": {"type": "string", "example": "1-7"}, "kind": {"type": "string", "enum": ["raid", "test"]},
        "state": {"type": "string", "enum": STATES}, "active": _B, "place": _S, "location": _I,
        "origin": {**_I, "description": "node id of the reporter"}, "origin_name": _S,
        "received_at": _T, "updated_at": _T, "received_ts": _N, "updated_ts": _N, "age_seconds": _I,
        "buildings": _nullable({**_I, "description": "buildings whose receipts say they hold its current state"}),
        "of": {**_I, "description": "buildings on the roster"},
    }),
    "Event": _object({"state": {"type": "string", "enum": STATES}, "outcome": _S, "reason": _S,
                      "signer": _I, "source": {"type": "string", "enum": ["air", "local"]}, "received_at": _T}),
    "Node": _object({"id": _I, "name": _S, "place": _S, "location": _I,
                     "health": {"type": "string", "enum": ["ok", "trouble", "silent", "unreachable", "waiting"]}, "this_node": _B,
                     "through": _nullable(_I), "through_name": _nullable(_S),
                     "last_heard": _nullable(_T), "last_heard_ts": _nullable(_N)}),
    "Nearby": _object({
        "block": {**_S, "description": "the other block's name (its code when no neighborhood roster is installed)"},
        "area": {**_S, "description": "that block's public description, from the neighborhood roster"},
        "place": {**_S, "description": "the place there, where this node holds that block's roster; else its area"},
        "state": {"type": "string", "enum": ["reported", "confirmed"]},
        "alert": {**_S, "description": "the alert's id on its block"}, "received_at": _T, "received_ts": _N}),
    "Troubles": {"type": "object", "additionalProperties": _S, "description": "subsystem: TROUBLE sentence"},
    "Health": _object({"status": {"type": "string", "enum": ["ok", "trouble"]}, "troubles": _ref("Troubles"),
                       "banner": {"type": "string", "enum": BANNERS},
                       "version": {**_S, "description": "Silbato's version on this node", "example": __version__},
                       "live_version": {**_S, "description": "the live document's version (see /api/live)"},
                       "live_clients": _I, "live_slots": _I}),
    "Session": _object({"captain": _nullable(_S), "csrf_token": _nullable(_S)}),
    "Live": _object({"version": _S, "state": {"type": "string", "enum": BANNERS}, "now": _N,
                     "html": {**_S, "description": "the page's live region, in the reader's language"}}),
    "Request": _object({
        "id": _I, "action": {"type": "string", "enum": list(ACTIONS)}, "alert": _nullable(_S),
        "location": _nullable(_I), "captain": _S, "status": {"type": "string", "enum": REQUEST_STATUSES},
        "reason": _S, "created_at": _T, "created_ts": _N, "done_at": _nullable(_T)}),
    "NewRequest": {"type": "object", "required": ["action"], "properties": {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "alert": {**_S, "description": "the alert to confirm, clear or cancel"},
        "location": _nullable({**_I, "description": "the place to raise or test, a location code"})}},
    "Note": _object({"captain": _S, "text": _S, "created_at": _T}),
    "NewNote": {"type": "object", "required": ["text"],
                "properties": {"text": {"type": "string", "minLength": 1, "maxLength": NOTE_MAX}}},
    "Created": _object({"id": _I}),
}

_LANG = {"name": "lang", "in": "query", "required": False, "schema": {"type": "string", "example": LANGUAGES[0]},
         "description": f"the reader's language, one of {', '.join(LANGUAGES)}; another is ignored "
                        "(default: the lang cookie, then Accept-Language)"}
_ALERT_ID = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, responses: dict, *, captain: bool = False, body: dict | None = None,
        parameters: list | None = None) -> dict:
    op: dict = {"summary": summary, "responses": {
        **responses, "default": _json(_ref("Error"), "an error: 400, 401, 403 (CSRF), 404, 409, 429 or 503")}}
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    if captain:
        op["security"] = [{"session": [], "csrf": []}] if body is not None else [{"session": []}]
    return op


def document(title: str = "Silbato") -> dict:
    paths = {
        "/api/alerts": {"get": _op("Active alerts, then the history", {
            "200": _json({"type": "array", "items": _ref("Alert")})})},
        "/api/alerts/{alert_id}": {"get": _op("One alert with its event log", {
            "200": _json({"allOf": [_ref("Alert"), {"type": "object", "required": ["events"], "properties": {
                "events": {"type": "array", "items": _ref("Event")}}}]})}, parameters=[_ALERT_ID])},
        "/api/nodes": {"get": _op("The block's buildings and their health", {
            "200": _json({"type": "array", "items": _ref("Node")})})},
        "/api/health": {"get": _op("This node's health", {"200": _json(_ref("Health"))})},
        "/api/nearby": {"get": _op("Raids on other blocks of the neighborhood, until cleared or 2 h", {
            "200": _json({"type": "array", "items": _ref("Nearby")})})},
        "/api/troubles": {"get": _op("This node's TROUBLE lines", {"200": _json(_ref("Troubles"))})},
        "/api/live": {"get": _op("The page's live document (for polling; 304 while unchanged)", {
            "200": _json(_ref("Live")), "304": {"description": "not changed since the ETag sent"}},
            parameters=[_LANG])},
        "/api/events": {"get": _op(
            "Server-sent events: an event 'state' with the live document now and on every change", {
                "200": {"description": "an event stream; each event's data is a Live document",
                        "content": {"text/event-stream": {"schema": {
                            "type": "object", "required": ["event", "id", "data"], "properties": {
                                "event": {"type": "string", "enum": ["state"]}, "id": _S,
                                "data": {**_S, "description": "a Live document as JSON"}}}}}}},
            parameters=[_LANG])},
        "/api/session": {"get": _op("Who is logged in, and the CSRF token for POSTs", {
            "200": _json(_ref("Session"))})},
        "/api/requests": {
            "get": _op("Captains' recent requests", {"200": _json({"type": "array", "items": _ref("Request")})},
                       captain=True),
            "post": _op("Ask the node daemon to raise, test, confirm, all clear or cancel", {
                "202": _json(_ref("Request"), "written; watch its status")}, captain=True, body=_ref("NewRequest")),
        },
        "/api/requests/{request_id}": {"get": _op("One request and its outcome", {"200": _json(_ref("Request"))},
                                                  captain=True, parameters=[
            {"name": "request_id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}])},
        "/api/alerts/{alert_id}/notes": {
            "get": _op("Captains' notes on an incident", {"200": _json({"type": "array", "items": _ref("Note")})},
                       captain=True, parameters=[_ALERT_ID]),
            "post": _op("Keep a note on an incident (never sent on air)", {"201": _json(_ref("Created"))},
                        captain=True, body=_ref("NewNote"), parameters=[_ALERT_ID]),
        },
        "/api/alerts/{alert_id}/export": {"get": _op(
            "The incident bundle: events JSON, CAP 1.2 messages, SHA256SUMS (zip)", {
                "200": {"description": "a zip file", "content": {"application/zip": {
                    "schema": {"type": "string", "format": "binary"}}}}}, captain=True, parameters=[_ALERT_ID])},
        "/api/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})})},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": f"{title}: the node's API", "version": "1",
                 "description": "Alerts, buildings and health are public. Captains log in at /captain/login; "
                                "every POST also needs the CSRF token from GET /api/session in X-CSRFToken."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "session": {"type": "apiKey", "in": "cookie", "name": "silbato_session"},
            "csrf": {"type": "apiKey", "in": "header", "name": "X-CSRFToken"}}},
    }
