"""Read-only views of the node's store, shaped for the page and the API."""

from __future__ import annotations

import datetime as dt
import time

from flask import abort, current_app, g

from node.errors import StoreError
from node.store import Store


def store() -> Store:
    """The request's read-only store (closed when the request ends)."""
    if "store" not in g:
        path = current_app.config["DATABASE"]
        try:
            g.store = Store(path, readonly=True)
        except StoreError as exc:
            current_app.logger.error("store unavailable: %s", exc)
            abort(503, "the node's database is not available yet")
    return g.store


def close_store(_exc=None) -> None:
    s = g.pop("store", None)
    if s is not None:
        s.close()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def alert_rows(now: float | None = None) -> list[dict]:
    """Active alerts first, then recent ones, with place names and ages in seconds."""
    s = store()
    now = time.time() if now is None else now
    places = s.places()
    names = {p["node_id"]: p["name"] for p in s.peers()}
    rows = []
    for a in s.alerts():
        rows.append({
            "id": a.id, "kind": a.kind.word, "state": a.state.word, "active": a.active,
            "place": places.get(a.location, f"location {a.location}"), "location": a.location,
            "origin": a.reporter, "origin_name": names.get(a.reporter, str(a.reporter)),
            "received_at": iso(a.opened_at), "updated_at": iso(a.updated_at),
            "age_seconds": max(0, int(now - a.opened_at)),
        })
    return rows
