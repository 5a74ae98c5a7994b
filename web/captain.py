"""The captains' console (``/captain``): log in, then raise, confirm, clear, cancel, test and take notes.

``/captain/texts`` (on the SMS gateway's node): the tips texted to the hotline, each with a
reply box, and the responders by handle and masked number. The page cannot read a number:
a reply is a row in ``sms_replies`` that the gateway, which alone holds the key, texts.
Wiping the lists takes two buttons (``/captain/texts/wipe``, then its confirm) and is a row in
``sms_wipes`` that the gateway acts on within a second (the page cannot reach the spool).

Every action is a form post with a CSRF token that writes a *request* for the node
daemon (``web.data.submit``, shared with the JSON API). The console then shows the
request as waiting, then "sent to the block" once the daemon has signed it and the
radio has taken it, or "refused" with the daemon's reason. Notes stay on this node.
"""

from __future__ import annotations

import sqlite3

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from node.protocol.alerts import State
from node.errors import StoreError
from web import auth, data, live

bp = Blueprint("captain", __name__, url_prefix="/captain", template_folder="templates")


def throttle() -> auth.Throttle:
    return current_app.extensions["silbato.throttle"]


@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; throttled per account and per address."""
    error, status = None, 200
    if request.method == "POST":
        name = request.form.get("name", "").strip()
        password = request.form.get("password", "")
        address = request.remote_addr or "?"
        trusted = auth.device_trusts(name)
        wait = throttle().retry_after(name, address, trusted)
        if wait:
            response = Response(render_template("captain/login.html", error="throttled",
                                                minutes=int(wait // 60) + 1, next=request.form.get("next")),
                                status=429, mimetype="text/html")
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        row = auth.check(data.store(), name, password)
        if row is not None:
            auth.log_in(row)
            response = redirect(auth.safe_next(request.form.get("next")), code=303)
            auth.device_cookie(response, row["name"])
            return response
        throttle().failed(name, address, trusted)
        error, status = "wrong", 401
    return render_template("captain/login.html", error=error, next=request.args.get("next") or
                           request.form.get("next")), status


@bp.post("/logout")
def logout():
    """End the session on the node too (the device cookie stays, so this browser is still known)."""
    auth.log_out()
    return redirect(url_for("public.index"), code=303)


def _actions_context() -> dict:
    s = data.store()
    now = data.node_time()
    captain = auth.current_captain()
    rows = data.alert_rows(now, s)
    active = [r for r in rows if r["active"]]
    for r in active:
        r["own_report"] = s.captain_reported(captain, r["id"])
    requests = [data.request_row(r, now) for r in s.requests(10)]
    places = sorted(((p["location"], p["place"]) for p in s.peers()), key=lambda p: p[1])
    me = data.this_node(s)
    home = next((p["location"] for p in s.peers() if p["node_id"] == me), None)
    return {"active": active, "requests": requests, "places": places, "home": home, "captain": captain,
            "now": now, "pending": _look_again(requests)}


def _look_again(requests: list[dict]) -> int:
    """Seconds after which the console looks at its requests again (0: it need not): soon while one
    waits for the daemon, less often while a signed one waits for the radio (it may be unplugged)."""
    statuses = {r["status"] for r in requests}
    return 1 if "pending" in statuses else 2 if "queued" in statuses else 0


@bp.get("")
@auth.captain_required
def console():
    """The live page plus the captain's actions and the recent requests."""
    snapshot = live.current()
    return render_template("captain/console.html", doc=snapshot.doc, version=snapshot.version,
                           **_actions_context())


@bp.get("/actions")
@auth.captain_required
def actions():
    """The actions and requests part of the console, for the page's script to swap in."""
    return render_template("captain/_actions.html", **_actions_context())


@bp.post("/act")
@auth.captain_required
def act():
    """A form post: raise, test, confirm, all clear or cancel, written as a request for the daemon."""
    action = request.form.get("action", "")
    location = request.form.get("location", "")
    # isascii: "²".isdigit() is true, but int("²") fails
    request_id = data.submit(action, auth.current_captain(), alert_id=request.form.get("alert", ""),
                             location=int(location) if location.isascii() and location.isdigit() else None)
    return redirect(url_for("captain.console", req=request_id, _anchor="requests"), code=303)


@bp.get("/alerts/<alert_id>")
@auth.captain_required
def alert(alert_id: str):
    """One incident: its event log, its notes, a note form and the export for legal observers."""
    s = data.store()
    now = data.node_time()
    row = next((r for r in data.alert_rows(now, s) if r["id"] == s.resolve(alert_id)), None)
    if row is None:
        abort(404, "no such alert")
    names = {p["node_id"]: p["name"] for p in s.peers()}
    events = [{**e, "state_word": State(e["state"]).word} for e in s.events(row["id"])]
    return render_template("captain/alert.html", alert=row, events=events, notes=s.notes(row["id"]),
                           names=names, now=now, note_max=data.NOTE_MAX)


@bp.post("/alerts/<alert_id>/notes")
@auth.captain_required
def add_note(alert_id: str):
    """Keep a short note on the incident, on this node only."""
    data.add_note(alert_id, auth.current_captain(), request.form.get("text", ""))
    return redirect(url_for("captain.alert", alert_id=alert_id, _anchor="notes"), code=303)


# -- texts: the SMS gateway's tips and responders ------------------------------------------------

REPLY_MAX = 300   # characters: two text messages at most in GSM-7


def _texts_context() -> dict:
    s = data.store()
    db = s.db
    if not db["sms_state"].exists() or db.execute("SELECT count(*) FROM sms_state WHERE key = 'state'").fetchone()[0] == 0:
        return {"gateway": None}
    state = db.execute("SELECT value FROM sms_state WHERE key = 'state'").fetchone()[0]
    tips = list(db.query("SELECT id, text, received_at FROM sms_tips ORDER BY id DESC LIMIT 50"))
    replies: dict[int, list[dict]] = {}
    for r in db.query("SELECT id, tip_id, text, captain, created_at, status FROM sms_replies ORDER BY id"):
        replies.setdefault(r["tip_id"], []).append(r)
    responders = list(db.query("SELECT handle, masked, language FROM sms_subscribers WHERE list = 'responder' "
                               "ORDER BY id"))
    return {"gateway": state, "tips": tips, "replies": replies, "responders": responders,
            "now": data.node_time(), "reply_max": REPLY_MAX}


@bp.get("/texts")
@auth.captain_required
def texts():
    """Tips texted to the hotline, with a reply box each, and the responders (numbers masked)."""
    return render_template("captain/texts.html", **_texts_context())


@bp.post("/texts/<int:tip_id>/reply")
@auth.captain_required
def reply(tip_id: int):
    """Ask the gateway to text a reply to a tip's sender; the page never sees the number."""
    text = " ".join(request.form.get("text", "").split())
    if not text:
        abort(400, "the reply is empty")
    if len(text) > REPLY_MAX:
        abort(400, f"a reply holds at most {REPLY_MAX} characters")
    s = data.store()
    if not s.db["sms_tips"].exists() or s.db.execute("SELECT 1 FROM sms_tips WHERE id = ?", [tip_id]).fetchone() is None:
        abort(404, "no such tip")
    w = data.writer()
    try:
        with w.transaction():
            w.db.execute("INSERT INTO sms_replies (tip_id, text, captain, created_at, status) "
                         "VALUES (?, ?, ?, ?, 'pending')", [tip_id, text, auth.current_captain(), data.node_time()])
    except (StoreError, sqlite3.Error) as exc:
        current_app.logger.error("could not write a reply to a tip: %s", exc)
        abort(503, "the node's database is busy; try again")
    current_app.logger.info("captain %s replied to tip %d (the gateway sends it)", auth.current_captain(), tip_id)
    return redirect(url_for("captain.texts", _anchor=f"tip-{tip_id}"), code=303)


@bp.get("/texts/wipe")
@auth.captain_required
def wipe_texts_confirm():
    """The second button of the SMS wipe: what it destroys, and the button that does it."""
    if _texts_context()["gateway"] is None:
        abort(404, "this node is not the SMS gateway")
    return render_template("captain/texts_wipe.html")


@bp.post("/texts/wipe")
@auth.captain_required
def wipe_texts():
    """Ask the gateway to destroy the lists, their key, the queue, tips and gammu-smsd's spool."""
    if _texts_context()["gateway"] is None:
        abort(404, "this node is not the SMS gateway")
    w = data.writer()
    try:
        with w.transaction():
            w.db.execute("INSERT INTO sms_wipes (captain, created_at) VALUES (?, ?)",
                         [auth.current_captain(), data.node_time()])
    except (StoreError, sqlite3.Error) as exc:
        current_app.logger.error("could not write a wipe request for the SMS lists: %s", exc)
        abort(503, "the node's database is busy; try again")
    current_app.logger.warning("captain %s asked to wipe the SMS lists (the gateway does it)", auth.current_captain())
    return redirect(url_for("captain.texts", wiped=1), code=303)
