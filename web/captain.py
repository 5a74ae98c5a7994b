"""The captains' console (``/captain``): log in, then raise, confirm, clear, cancel, test and take notes.

Every action is a form post with a CSRF token that writes a *request* for the node
daemon (``web.data.submit``, shared with the JSON API). The console then shows the
request as waiting, then "sent to the block" once the daemon has signed it and the
radio has taken it, or "refused" with the daemon's reason. Notes stay on this node.
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from node.protocol.alerts import State
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
