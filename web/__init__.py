"""The neighbors' page and the captains' console: a Flask app over the node's store.

``web`` never imports ``node.radio``, ``node.hardware`` or ``node.daemon``: the page
process holds no signing key and no device. It reads the store, and writes only
captains' requests (which the node daemon signs and acts on), notes and nothing else.

Blueprints, one per area: ``public`` (the page, the captive portal), ``captain`` (the
console), ``api`` (JSON), ``live`` (server-sent events and polling).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Any, Mapping

from flask import Flask, has_request_context, request
from flask.json.provider import DefaultJSONProvider
from flask_wtf.csrf import CSRFProtect

from node.protocol import supervision

STATIC = Path(__file__).parent / "static"


def settings(config) -> dict[str, Any]:
    """The app's settings from a node's ``node.config.Config`` (``silbato web`` and ``silbato sim``)."""
    return {"DATABASE": str(config.db_file), "LANGUAGES": config.languages, "HOTLINE": config["web.hotline"],
            "LIVE_CLIENTS": config["web.live_clients"], "SESSION_IDLE": config["web.session_idle"],
            # the daemon's supervision says which buildings are silent; this is the fallback before it has
            # on a node, loopback is a maintainer's tool or an attacker on the node: limit it too
            "EXEMPT_LOOPBACK": False,
            "SILENT_AFTER": 3 * supervision.effective_period(config["supervision.period"], config["radio.preset"],
                                                             config["supervision.airtime_budget"]),
            "RECEIPT_TIMEOUT": config["supervision.receipt_timeout"],
            # neighbors' evidence, sealed as it streams in (web/evidence.py)
            "EVIDENCE_DIR": str(config.evidence_dir), "EVIDENCE_RECIPIENTS": config["evidence.recipients"],
            "EVIDENCE_MAX_ITEM": config["evidence.max_item"], "EVIDENCE_MAX_TOTAL": config["evidence.max_total"]}


class JSONProvider(DefaultJSONProvider):
    """Flask's JSON, where a body nested too deep for Python's parser is malformed JSON (400), not a 500."""

    def loads(self, s, **kwargs):
        try:
            return super().loads(s, **kwargs)
        except RecursionError as exc:
            raise ValueError("JSON nested too deeply") from exc


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app from defaults, then ``test_config`` (``SILBATO_WEB_DATABASE`` sets DATABASE).

    - ``DATABASE``: the node's SQLite file; ``NODE_NAME``: overrides the name shown (default:
      this node's roster name); ``LANGUAGES``: the node's languages, the first is the default;
      ``HOTLINE``: the phone number shown; ``SILENT_AFTER``: seconds before a building that the
      daemon's supervision has not judged yet is shown silent; ``RECEIPT_TIMEOUT``: seconds after
      an alert state before buildings without a receipt are listed missing;
    - ``LIVE_CLIENTS``: live streams at once; ``STREAM_SECONDS``: about how long one lasts;
      ``KEEPALIVE``: seconds between keep-alive comments; ``LIVE_POLL``: seconds between
      database checks; ``REFRESH``: seconds between reloads of a page without JavaScript;
    - ``CLOCK``: the node's clock (virtual in the sim); ``ON_REQUEST``: called after a
      captain's request is written (the sim wakes its node; a node daemon polls);
    - ``RATE_LIMIT``: (requests, seconds) per client address, or ``None``; ``EXEMPT_LOOPBACK``:
      whether 127.0.0.1 is exempt (the sim's pages; ``settings()`` for a node says no);
    - ``SECRET_KEY``: signs the session and device cookies; ``silbato web`` reads it from
      ``web.state_dir`` (``web.security.load_secret``), else it is new at every start;
    - ``SESSION_IDLE``: seconds unused before a captain's session ends (``web.session_idle``);
      ``PERMANENT_SESSION_LIFETIME``: the longest a login lasts (12 h);
    - ``EVIDENCE_RECIPIENTS``: the organizers' age keys (empty: no evidence taken); ``EVIDENCE_DIR``
      (default: ``evidence/`` beside the database's folder), ``EVIDENCE_MAX_ITEM``, ``EVIDENCE_MAX_TOTAL``
      (bytes); ``UPLOAD_LIMIT``: (uploads, seconds) per address; ``MAX_FORM_BODY``: bytes of the
      form without JavaScript (default the server's ``MAX_BODY``); ``UPLOAD_IDLE``: seconds before an
      upload in pieces with no new piece is abandoned, on ``UPLOAD_CLOCK`` (monotonic seconds).
    """
    app = Flask(__name__)
    app.json = JSONProvider(app)
    app.config.from_mapping(
        DATABASE=os.environ.get("SILBATO_WEB_DATABASE", ""), NODE_NAME=None, LANGUAGES=["en", "es"],
        HOTLINE="", LIVE_CLIENTS=200, SILENT_AFTER=3600.0, RECEIPT_TIMEOUT=120.0, STREAM_SECONDS=300.0, KEEPALIVE=20.0,
        LIVE_POLL=0.1, REFRESH=15, CLOCK=time.time, ON_REQUEST=None, RATE_LIMIT=(120, 60.0), EXEMPT_LOOPBACK=True,
        SECRET_KEY=secrets.token_bytes(32), SESSION_IDLE=1800.0, SESSION_COOKIE_NAME="silbato_session",
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax", PERMANENT_SESSION_LIFETIME=12 * 3600,
        WTF_CSRF_TIME_LIMIT=None,  # a token lives as long as the session: no surprise 403 mid-raid
        WTF_CSRF_HEADERS=["X-CSRFToken"], MAX_CONTENT_LENGTH=16 * 1024,
        SEND_FILE_MAX_AGE_DEFAULT=7 * 86400,  # static URLs carry a hash of their file
    )
    if test_config is not None:
        app.config.from_mapping(test_config)
    app.config["LANGUAGES"] = list(app.config["LANGUAGES"]) or ["en"]
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True  # smaller pages

    from web import api, auth, captain, data, evidence, i18n, live, public, security, uploads

    app.extensions["silbato.live"] = live.Live(
        app.config["DATABASE"], clock=app.config["CLOCK"], silent_after=app.config["SILENT_AFTER"],
        slots=app.config["LIVE_CLIENTS"], poll=app.config["LIVE_POLL"])
    app.extensions["silbato.throttle"] = auth.Throttle()
    csrf = CSRFProtect(app)
    i18n.init_app(app)
    security.init_app(app)
    app.teardown_appcontext(data.close_store)
    for blueprint in (public.bp, captain.bp, api.bp, live.bp, evidence.bp, uploads.bp):
        app.register_blueprint(blueprint)
    csrf.exempt(evidence.upload)  # checks the form's token itself, before reading any file (streamed)
    csrf.exempt(uploads.piece)  # checks X-CSRFToken itself, after the upload it names is found

    hashes = {f.name: hashlib.sha256(f.read_bytes()).hexdigest()[:10] for f in STATIC.iterdir() if f.is_file()}

    def static(name: str) -> str:
        # Not url_for: the error page for a request whose Host could not be routed has no URL adapter.
        root = request.script_root if has_request_context() else ""
        return f"{root}/static/{name}?v={hashes.get(name, '')}"

    @app.context_processor
    def page_context() -> dict[str, Any]:
        return {"lang": i18n.lang(), "hotline": app.config["HOTLINE"], "refresh": app.config["REFRESH"],
                "node_name": app.config["NODE_NAME"], "static": static}

    return app
