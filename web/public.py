"""The public page (``/``): no login; works with JavaScript off by refreshing itself."""

from flask import Blueprint, current_app, render_template

from web import data

bp = Blueprint("public", __name__, template_folder="templates")

STATE_WORDS = {
    "reported": "RAID REPORTED, NOT YET CONFIRMED",
    "confirmed": "RAID CONFIRMED",
    "all_clear": "ALL CLEAR",
    "cancelled": "CANCELLED (false alarm)",
    "expired": "EXPIRED",
}


def age_words(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s ago"
    if seconds < 3600:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min ago"


@bp.get("/")
def index():
    """The block's alerts, newest and active first."""
    rows = data.alert_rows()
    active = [r for r in rows if r["active"]]
    return render_template("index.html", rows=rows, active=active, words=STATE_WORDS, age_words=age_words,
                           troubles=data.store().troubles(), node_name=current_app.config["NODE_NAME"])
