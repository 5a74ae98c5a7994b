"""The JSON API: ``GET /api/alerts``."""

from flask import Blueprint, jsonify

from web import data

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.get("/alerts")
def alerts():
    """Active and recent alerts as a JSON list."""
    return jsonify(data.alert_rows())


@bp.get("/troubles")
def troubles():
    """This node's own TROUBLE lines (radio, storage) as a JSON object."""
    return jsonify(data.store().troubles())
