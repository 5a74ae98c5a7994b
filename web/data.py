"""The web's view of the node's store, shaped for the page and the API.

Everything is read through a read-only connection. The only writes are a captain's
request for the node daemon and a captain's note, through a connection that SQLite
itself allows to write the web's tables only (``node.store.WEB_TABLES``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import NoReturn

from flask import abort, current_app, g, has_app_context

from node.protocol import coverage
from node.protocol.alerts import State, parse_alert_id
from node.protocol.neighborhood import NEARBY_FOR
from node.errors import StoreError, TransitionError
from node.store import REQUEST_TTL, WEB_TABLES, Store
from web.security import NotRunning

# What a captain can ask the node to do.
ACTIONS = ("raise", "test", "confirm", "all_clear", "cancel")
NOTE_MAX = 280  # characters: a short note, not a report
HISTORY = 20    # ended alerts on the page (the API lists more)
MAX_ID = 2**63 - 1  # SQLite's largest integer: a row id beyond it would overflow, not just be missing


def store_unavailable(exc: Exception) -> NoReturn:
    """Abort with 503: ``NotRunning`` while the node daemon has made no database yet (logged
    once), else the database cannot be read now (logged each time)."""
    path = Path(current_app.config["DATABASE"])
    if not path.exists():
        if not current_app.extensions.get("silbato.told_not_running"):
            current_app.extensions["silbato.told_not_running"] = True
            current_app.logger.warning("%s does not exist yet: is silbato-node running? The page says "
                                       "the node is not running until it does", path)
        raise NotRunning()
    current_app.logger.error("store unavailable: %s", exc)
    abort(503, "the node's database is not available yet")


def _open(key: str, **kwargs) -> Store:
    if key not in g:
        try:
            setattr(g, key, Store(current_app.config["DATABASE"], **kwargs))
        except StoreError as exc:
            store_unavailable(exc)
    return getattr(g, key)


def store() -> Store:
    """The request's read-only store (closed when the request ends)."""
    return _open("store", readonly=True)


def writer() -> Store:
    """The request's store for the web's own tables (captains, requests, notes)."""
    return _open("writer", writes=WEB_TABLES)


def close_store(_exc=None) -> None:
    for key in ("store", "writer"):
        s = g.pop(key, None)
        if s is not None:
            s.close()


def node_time() -> float:
    """The node's clock (``CLOCK``: ``time.time`` on a node, virtual time in the sim)."""
    return current_app.config["CLOCK"]()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def this_node(s: Store) -> int | None:
    value = s.meta("node_id")
    return int(value) if value else None


def alert_rows(now: float | None = None, s: Store | None = None, limit: int = 200) -> list[dict]:
    """Active alerts first, then recent ones, with place names, times (ISO and seconds) and ages.

    ``buildings``/``sounded``: how many buildings' receipts say they hold (and sounded) the
    alert's current state (``None`` before any receipt); ``of``: the roster's size;
    ``missing``: the names of buildings without a receipt once ``RECEIPT_TIMEOUT`` seconds
    have passed since the state; ``coverage``: all that as one English sentence.
    """
    s = s or store()
    now = node_time() if now is None else now
    timeout = current_app.config.get("RECEIPT_TIMEOUT", 120.0) if has_app_context() else 120.0
    timeout = float(s.meta("receipt_timeout") or timeout)  # the daemon's: the roster's, when it carries one
    places = s.places()
    peers = s.peers()
    names = {p["node_id"]: p["name"] for p in peers}
    rows = []
    for a in s.alerts(limit):
        received, sounded = s.coverage(a.id, a.state)
        view = coverage.describe(a.state.word, received, sounded, names, late=now - a.updated_at >= timeout)
        rows.append({
            "id": a.id, "kind": a.kind.word, "state": a.state.word, "active": a.active,
            "place": places.get(a.location, f"location {a.location}"), "location": a.location,
            "origin": a.reporter, "origin_name": names.get(a.reporter, str(a.reporter)),
            "received_at": iso(a.opened_at), "updated_at": iso(a.updated_at),
            "received_ts": a.opened_at, "updated_ts": a.updated_at,
            "age_seconds": max(0, int(now - a.opened_at)),
            "buildings": len(received) or None, "sounded": len(sounded) if received else None, "of": len(peers),
            "missing": view["missing"] if received else [], "coverage": view["summary"] if received else None,
        })
    return rows


def node_rows(s: Store, now: float, silent_after: float) -> list[dict]:
    """The block's buildings with their health: ``ok``, ``trouble``, ``silent``, ``unreachable`` or ``waiting``.

    This node's health is its own TROUBLE lines; another building's is the daemon's
    supervision verdict (``peers.status``). ``unreachable`` (out of reach): its news stopped
    at another building, named by ``through`` / ``through_name`` (this node, while its radio
    is away or freshly back), which is the one shown silent. ``waiting`` (for first contact): the daemon has
    not judged it since it started (``unknown``), or it was never heard. With no verdict
    at all (no daemon has judged yet), a building heard once is silent after ``silent_after`` seconds.
    """
    me = this_node(s)
    own_troubles = s.troubles()
    rows = []
    peers = s.peers()
    names = {p["node_id"]: p["name"] for p in peers}
    for p in peers:
        heard = p["last_heard"]
        verdict = p.get("status")
        if p["node_id"] == me:
            health = "trouble" if own_troubles else "ok"
        elif verdict in ("ok", "trouble", "silent"):
            health = verdict
        elif verdict == "unreachable":
            health = "unreachable"
        elif verdict == "unknown" or heard is None:  # just started, or never heard: not silent, not yet
            health = "waiting"
        elif now - heard > silent_after:  # no daemon has judged it: the page's own fallback
            health = "silent"
        elif p.get("remote_troubles") or p["troubles"]:
            health = "trouble"
        else:
            health = "ok"
        rows.append({"id": p["node_id"], "name": p["name"], "place": p["place"], "location": p["location"],
                     "health": health, "this_node": p["node_id"] == me,
                     "through": p.get("through") if health == "unreachable" else None,
                     "through_name": names.get(p.get("through"), str(p.get("through")))
                     if health == "unreachable" else None,
                     "last_heard": iso(heard), "last_heard_ts": heard})
    return rows


def banner(rows: list[dict]) -> dict:
    """The status banner: ``quiet``, ``reported``, ``confirmed`` or ``all_clear``, with places and since when.

    A confirmed raid anywhere wins over a report; a TEST never changes the banner (``test``
    says one is running). ALL CLEAR shows while the latest raid ended with it, until purged.
    """
    raids = [r for r in rows if r["kind"] == "raid"]
    test = any(r["kind"] == "test" and r["active"] for r in rows)
    for state in ("confirmed", "reported"):
        hits = sorted((r for r in raids if r["state"] == state), key=lambda r: r["updated_ts"], reverse=True)
        if hits:
            return {"state": state, "places": list(dict.fromkeys(r["place"] for r in hits)),
                    "since": min(r["updated_ts"] for r in hits), "test": test}
    ended = sorted((r for r in raids if not r["active"]), key=lambda r: r["updated_ts"], reverse=True)
    if ended and ended[0]["state"] == "all_clear":
        return {"state": "all_clear", "places": [ended[0]["place"]], "since": ended[0]["updated_ts"], "test": test}
    return {"state": "quiet", "places": [], "since": None, "test": test}


def nearby_rows(s: Store, now: float) -> list[dict]:
    """Raids on other blocks of the neighborhood (NEARBY), until their ALL CLEAR or CANCELLED, or 2 h."""
    return [{"block": r["block"], "area": r["area"], "place": r["place"], "state": State(r["state"]).word,
             "alert": f"{r['reporter']}-{r['counter']}", "received_at": iso(r["received_at"]),
             "received_ts": r["received_at"]} for r in s.nearby(now, NEARBY_FOR)]


def state_document(s: Store, now: float, silent_after: float) -> dict:
    """Everything the page shows, as one JSON-able document."""
    rows = alert_rows(now, s)
    active = [r for r in rows if r["active"]]
    ended = [r for r in rows if not r["active"]][:HISTORY]
    return {"banner": banner(rows), "alerts": active + ended, "nodes": node_rows(s, now, silent_after),
            "troubles": s.troubles(), "nearby": nearby_rows(s, now), "now": now}


def digest(doc: dict) -> str:
    """A version for ``doc`` that changes when what the page shows changes, not as time passes."""
    stable = {
        "banner": doc["banner"], "troubles": doc["troubles"],
        "nearby": [(n["block"], n["alert"], n["state"]) for n in doc.get("nearby", [])],
        "alerts": [(r["id"], r["state"], r["place"], r["updated_ts"], r["buildings"]) for r in doc["alerts"]],
        "nodes": [(n["id"], n["name"], n["place"], n["health"], n["through"],
                   n["health"] != "ok" and n["last_heard_ts"])
                  for n in doc["nodes"]],
    }
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:16]


# -- captains' requests and notes ---------------------------------------------------------------

def request_row(r: dict, now: float) -> dict:
    """A request as the console and the API show it; ``status`` is one of
    ``pending``, ``no_answer`` (the node daemon did not pick it up), ``queued`` (signed,
    waiting for the radio), ``sent`` (handed to the radio: sent to the block) or ``refused``."""
    status = r["status"]
    if status == "pending" and now - r["created_at"] > REQUEST_TTL:
        status = "no_answer"
    elif status == "signed":
        status = "sent" if r["frame_sent_at"] is not None else "queued"
    return {"id": r["id"], "action": r["action"], "alert": r["result_alert_id"] or r["alert_id"] or None,
            "location": r["location"], "captain": r["captain"], "status": status, "reason": r["reason"] or "",
            "created_at": iso(r["created_at"]), "created_ts": r["created_at"], "done_at": iso(r["done_at"])}


def submit(action: str, captain: str, *, alert_id: str = "", location: int | None = None) -> int:
    """Check and write a captain's request for the node daemon; returns its id.

    Aborts with 400 for a malformed request and 409 for one about an alert or place this
    node does not know. Whether it may be done is the daemon's to decide.
    """
    if action not in ACTIONS:
        abort(400, f"unknown action; expected one of {', '.join(ACTIONS)}")
    s = store()
    if action in ("raise", "test"):
        if location is None:
            abort(400, "a report needs a place (location)")
        if location not in s.places():
            abort(409, "that place is not on the roster")
        alert_id = ""
    else:
        try:
            parse_alert_id(alert_id)
        except TransitionError:
            abort(400, "not an alert id")
        if s.get_alert(alert_id) is None:
            abort(409, "this node does not hold that alert")
        location = None
    try:
        request_id = writer().add_request(action, captain=captain, now=node_time(), alert_id=alert_id,
                                          location=location)
    except StoreError as exc:
        current_app.logger.error("could not write a request: %s", exc)
        abort(503, "the node's database is busy; try again")
    nudge = current_app.config.get("ON_REQUEST")
    if nudge is not None:
        nudge()  # the sim wakes its node; a real daemon polls
    return request_id


def add_note(alert_id: str, captain: str, text: str) -> int:
    """Keep a captain's note on an incident, on this node only (never sent on air)."""
    text = " ".join(text.split())
    if not text:
        abort(400, "the note is empty")
    if len(text) > NOTE_MAX:
        abort(400, f"a note holds at most {NOTE_MAX} characters")
    if store().get_alert(alert_id) is None:
        abort(404, "no such alert")
    try:
        return writer().add_note(alert_id, captain, text, node_time())
    except StoreError as exc:
        current_app.logger.error("could not write a note: %s", exc)
        abort(503, "the node's database is busy; try again")
