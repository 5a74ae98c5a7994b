"""The public page (``/``): no login; live through JavaScript, and refreshing itself without it.

Also the captive portal: the connectivity checks that Android, iOS, macOS, Windows and
Firefox fetch when they join a Wi-Fi network are redirected to the page, so joining
the node's access point opens it (the access point's DNS must answer every name with
the node's address; see the README).
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, redirect, render_template, request

from web import i18n, live

bp = Blueprint("public", __name__, template_folder="templates")

# Connectivity-check paths: Android, iOS/macOS, Windows, Firefox.
CAPTIVE_CHECKS = ("/generate_204", "/gen_204", "/hotspot-detect.html", "/library/test/success.html",
                  "/connecttest.txt", "/ncsi.txt", "/redirect", "/canonical.html", "/success.txt")


def page(snapshot: live.Snapshot, now: float) -> str:
    """The public page for ``snapshot``, cached per language and per half minute (its ages)."""
    key = ("page", i18n.lang(), int(now // 30))
    return snapshot.rendered(key, lambda: render_template("index.html", doc=snapshot.doc, version=snapshot.version,
                                                          now=now))


@bp.get("/")
def index():
    """The block's status, alerts, buildings and the know-your-rights card."""
    snapshot = live.current()
    now = current_app.config["CLOCK"]()
    response = Response(page(snapshot, now), mimetype="text/html")
    # Revalidated every time; 304 while nothing changed (a phone without JavaScript reloads often).
    response.set_etag(f"{snapshot.version}-{i18n.lang()}-{int(now // 30)}")
    response.cache_control.no_cache = True
    response.vary.add("Cookie")
    response.vary.add("Accept-Language")
    return response.make_conditional(request)


def _to_page():
    """A connectivity check from a phone that just joined: show it the page."""
    return redirect("/", code=302)


for _path in CAPTIVE_CHECKS:
    bp.add_url_rule(_path, f"captive_{_path.strip('/').replace('/', '_').replace('.', '_')}", _to_page)
