"""Neighbors' evidence: an incident's page (``/alerts/<id>``) and its upload form, sealed as it streams in.

A plain multipart form, no JavaScript needed: photos, video, audio and a written
statement. The body is read from the socket in pieces (``READ_SIZE``) and each file is
sealed to the organizers' age recipients as it arrives (``node.evidence.seal``): the
plaintext is never written anywhere, nor held whole in memory. The page writes the sealed
files in ``<state_dir>/evidence`` and one pending row each; the node daemon checks each and
chains it into the incident's signed manifest.

The form's CSRF token is its first field and is checked before any file is read (Flask-WTF's
own check would parse, and spool, the whole body first). Uploads are limited per address
(``UPLOAD_LIMIT``), besides the page's general limit.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Iterator

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import validate_csrf
from werkzeug.exceptions import ClientDisconnected
from werkzeug.sansio.multipart import NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder
from wtforms.validators import ValidationError

from node.errors import EvidenceError, StoreError
from node.evidence import seal
from web import data
from web.security import RateLimit, error_response
from web.server import MAX_BODY, TOO_LARGE_PATH

log = logging.getLogger(__name__)

bp = Blueprint("evidence", __name__, template_folder="templates")

READ_SIZE = 64 * 1024           # bytes read from the request at a time (the sealer holds up to 1 MiB: seal.READ_AHEAD)
UPLOAD_LIMIT = (20, 600.0)      # uploads per address per 10 minutes (each may hold several files)
STATEMENT_MAX = 20_000          # characters of a written statement
RECENT = 24 * 3600.0            # seconds after an incident ended that its page still takes evidence
FORM_SLACK = 64 * 1024          # bytes of a form besides its files (token, statement, part headers)


def _settings() -> dict:
    c = current_app.config
    return {"recipients": c.get("EVIDENCE_RECIPIENTS", ""), "max_item": int(c.get("EVIDENCE_MAX_ITEM", 200_000_000)),
            "max_total": int(c.get("EVIDENCE_MAX_TOTAL", 2_000_000_000)), "folder": evidence_dir()}


def evidence_dir() -> Path:
    """``EVIDENCE_DIR``, else ``evidence/`` beside the database's ``db/`` folder."""
    configured = current_app.config.get("EVIDENCE_DIR")
    return Path(configured) if configured else Path(current_app.config["DATABASE"]).parent.parent / "evidence"


def _limiter() -> RateLimit:
    ext = current_app.extensions
    if "silbato.upload_limit" not in ext:
        ext["silbato.upload_limit"] = RateLimit(*current_app.config.get("UPLOAD_LIMIT", UPLOAD_LIMIT))
    return ext["silbato.upload_limit"]


def _incident(alert_id: str) -> dict:
    s = data.store()
    now = data.node_time()
    row = next((r for r in data.alert_rows(now, s) if r["id"] == s.resolve(alert_id)), None)
    if row is None:
        abort(404, "no such alert")
    row["takes_evidence"] = row["active"] or now - row["updated_ts"] <= RECENT
    return row


@bp.get("/alerts/<alert_id>")
def incident(alert_id: str):
    """One incident for neighbors: what it is, and the form to send photos, video or a statement."""
    row = _incident(alert_id)
    settings = _settings()
    now = data.node_time()
    return render_template("incident.html", alert=row, now=now, sent=request.args.get("sent", type=int),
                           nearby=data.nearby_rows(data.store(), now),
                           enabled=bool(settings["recipients"]), max_mb=settings["max_item"] // 1_000_000,
                           form_mb=form_max_mb(settings), statement_max=STATEMENT_MAX)


def _refuse(status: int, title: str, message: str):
    """An error page titled in the neighbor's language; a 503 says when to try again."""
    log.warning("evidence refused (%d): %s", status, message)
    return error_response(status, message, 5.0 if status == 503 else None, title=title)


def form_limit() -> int:
    """Bytes of a form the page takes in one request: under the server's ``MAX_BODY`` (held in memory)."""
    return int(current_app.config.get("MAX_FORM_BODY", MAX_BODY))


def form_max_mb(settings: dict) -> int:
    """MB of a file the form without JavaScript takes."""
    return min(settings["max_item"], form_limit() - FORM_SLACK) // 1_000_000


def too_large_message(settings: dict) -> str:
    return _("That is larger than this node takes (%(mb)s MB at most). Send a shorter video, or keep it "
             "and give it to the organizers.", mb=settings["max_item"] // 1_000_000)


def form_too_large_message(settings: dict) -> str:
    return _("That is larger than this page takes without JavaScript (%(mb)s MB at most). Turn JavaScript on "
             "in your browser to send it in pieces, or keep it and give it to the organizers.",
             mb=form_max_mb(settings))


def refusal(exc: BaseException, settings: dict) -> tuple[int, str, str] | None:
    """(status, the neighbor's message, the log's words) for a sealing failure; ``None`` if not one."""
    if isinstance(exc, seal.TooLarge):
        return 413, too_large_message(settings), "item over evidence.max_item"
    if isinstance(exc, seal.StorageFull):
        return 507, _("This node's space for evidence is full. Keep what you have and give it to the "
                      "organizers."), "evidence.max_total reached"
    if isinstance(exc, seal.DiskFull):
        return 507, _("This node's disk is full. Keep what you have and give it to the organizers."), "disk full"
    if isinstance(exc, EvidenceError):
        current_app.logger.error("evidence could not be kept: %s", exc)
        return 503, _("The node could not keep what you sent. Please try again."), str(exc)
    return None


def rate_limited() -> float:
    """Seconds this address must wait before its next upload (0: go on); counts this one."""
    return _limiter().hit(request.remote_addr or "?")


def rate_message() -> str:
    return _("You have sent many times in a short while. Please wait a few minutes and try again.")


def open_to_evidence(alert_id: str) -> tuple[dict, dict, list] | tuple[int, str, str]:
    """(incident, settings, recipients) if the incident takes evidence now, else (status, message, log words)."""
    row = _incident(alert_id)
    if not row["takes_evidence"]:
        return 409, _("This incident ended too long ago to take evidence here. Send it to the organizers."), \
            "incident ended"
    settings = _settings()
    try:
        recipients = seal.parse_recipients(settings["recipients"])
    except ValueError as exc:
        current_app.logger.error("evidence.recipients: %s", exc)
        recipients = []
    if not recipients:
        return 409, _("This node does not take photos or video yet: the organizers have not set their key."), \
            "no recipients"
    return row, settings, recipients


@bp.get(TOO_LARGE_PATH)
def too_large():
    """The server's 413 for a body too large to hold in memory (a form without JavaScript), in the neighbor's language."""
    return _refuse(413, form_too_large_message(_settings()), "request body over the server's limit")


@bp.post("/alerts/<alert_id>/evidence")
def upload(alert_id: str):
    """Seal each file and the statement as they stream in; then back to the incident's page."""
    wait = rate_limited()
    if wait:
        response = _refuse(429, rate_message(), "upload rate limit")
        response.headers["Retry-After"] = str(int(wait + 0.999))
        return response
    opened = open_to_evidence(alert_id)
    if isinstance(opened[0], int):
        return _refuse(*opened)
    row, settings, recipients = opened
    budget = min(settings["max_item"] + FORM_SLACK, form_limit() - 1)
    too_large = too_large_message(settings) if budget > settings["max_item"] else form_too_large_message(settings)
    if request.content_length is not None and request.content_length > budget:
        return _refuse(413, too_large, f"{request.content_length} bytes announced")
    request.max_content_length = budget
    boundary = request.mimetype_params.get("boundary", "").encode("latin-1")
    if request.mimetype != "multipart/form-data" or not boundary:
        abort(400, "expected a multipart form")
    parts = Parts(request.stream, boundary, limit=budget)
    bound = min(request.content_length or budget, budget)  # no file of this form is larger: room reserved for it
    sealed: list[tuple[seal.Sealed, seal.Sealed]] = []
    try:
        _check_token(parts)
        for kind, content_type, reader in parts.items():
            sealed.append(_seal_one(reader, kind, content_type, settings, recipients, bound))
    except _BadToken:
        return _undo(sealed, _refuse(403, _("This form is too old. Open the page again and send once more."),
                                     "missing or invalid CSRF token"))
    except (ClientDisconnected, ConnectionError, _Malformed) as exc:
        _undo(sealed, None)
        log.warning("evidence upload from a phone stopped: %s", exc or type(exc).__name__)
        abort(400, "the upload was cut off or malformed; nothing was kept")
    except EvidenceError as exc:
        return _undo(sealed, _refuse(*refusal(exc, settings)))
    except BaseException:
        _undo(sealed, None)
        raise
    if not sealed:
        return _refuse(400, _("Choose a photo or video, or write what you saw."), "empty form")
    try:
        record(row["id"], sealed)
    except StoreError as exc:
        current_app.logger.error("could not record evidence: %s", exc)
        return _undo(sealed, _refuse(503, _("The node could not keep what you sent. Please try again."), str(exc)))
    log.info("evidence: %d item(s) sealed for incident %s", len(sealed), row["id"])
    return redirect(url_for("evidence.incident", alert_id=row["id"], sent=len(sealed), _anchor="evidence"), code=303)


def record(alert_id: str, sealed: list) -> None:
    """One pending row per sealed item, for the daemon to chain; ``StoreError`` if it cannot."""
    now = data.node_time()
    w = data.writer()
    for item, meta in sealed:
        w.add_evidence(item.item_id, alert_id, now, size=item.size, sha256=item.sha256,
                       sealed_size=item.sealed_size, sealed_sha256=item.sealed_sha256,
                       meta_sha256=meta.sealed_sha256)


def _seal_one(reader, kind: str, content_type: str, settings: dict, recipients: list, bound: int) -> tuple:
    """One item (at most ``bound`` bytes, the form's length) and its sealed metadata (its content type is
    never in the clear)."""
    item = seal.seal(reader, settings["folder"], recipients, max_item=settings["max_item"],
                     max_total=settings["max_total"], expected=bound)
    return seal_meta(item, kind, content_type, settings, recipients)


def seal_meta(item: seal.Sealed, kind: str, content_type: str, settings: dict, recipients: list) -> tuple:
    """``item`` and its sealed metadata; ``item`` is removed if that fails."""
    try:
        meta = json.dumps({"kind": kind, "content_type": content_type, "size": item.size, "sha256": item.sha256},
                          sort_keys=True).encode()
        return item, seal.seal_bytes(meta, settings["folder"], recipients, item_id=item.item_id,
                                     suffix=seal.META_SUFFIX, max_total=settings["max_total"])
    except BaseException:
        item.path.unlink(missing_ok=True)
        raise


def _undo(sealed: list, response):
    """Remove what this request sealed: a form that failed part-way leaves nothing."""
    for item, meta in sealed:
        item.path.unlink(missing_ok=True)
        meta.path.unlink(missing_ok=True)
    return response


class _BadToken(Exception):
    pass


class _Malformed(Exception):
    pass


def _check_token(parts: "Parts") -> None:
    name, value = parts.first_field()
    if name != "csrf_token":
        raise _BadToken()
    try:
        validate_csrf(value)
    except ValidationError:
        raise _BadToken() from None


class Parts:
    """A multipart body read from ``stream`` in ``READ_SIZE`` pieces, part after part.

    ``items()`` yields ``(kind, content_type, reader)`` for each file chosen and for a written
    statement; each reader must be read to its end before the next is asked for.
    ``largest_read`` is the most bytes taken from the stream at once (memory stays flat).
    """

    def __init__(self, stream, boundary: bytes, *, limit: int):
        self.stream = stream
        self.decoder = MultipartDecoder(boundary, max_form_memory_size=STATEMENT_MAX * 4 + 1024, max_parts=64)
        self.largest_read = 0
        self._events = self._read_events()

    def _read_events(self) -> Iterator:
        ended = False
        while True:
            try:
                event = self.decoder.next_event()
            except ValueError as exc:
                raise _Malformed(str(exc)) from None
            if event is NEED_DATA:
                if ended:
                    raise _Malformed("the form ended early")
                chunk = self.stream.read(READ_SIZE)
                self.largest_read = max(self.largest_read, len(chunk))
                if not chunk:
                    ended = True
                self.decoder.receive_data(chunk or None)
                continue
            yield event
            if isinstance(event, Epilogue):
                return

    def _next(self):
        try:
            return next(self._events)
        except StopIteration:
            return Epilogue(b"")

    def _field_value(self) -> bytes:
        value = b""
        while True:
            event = self._next()
            if not isinstance(event, Data):
                raise _Malformed("a field without its value")
            value += event.data
            if len(value) > STATEMENT_MAX * 4:
                raise _Malformed("a field too long")
            if not event.more_data:
                return value

    def first_field(self) -> tuple[str, str]:
        event = self._next()
        while not isinstance(event, (Field, File, Epilogue)):
            event = self._next()
        if not isinstance(event, Field):
            return "", ""
        return event.name, self._field_value().decode("utf-8", "replace")

    def items(self) -> Iterator[tuple[str, str, "_PartReader"]]:
        while True:
            event = self._next()
            if isinstance(event, Epilogue):
                return
            if isinstance(event, File):
                reader = _PartReader(self)
                if event.name == "file" and event.filename:
                    content_type = event.headers.get("Content-Type", "application/octet-stream")[:100]
                    yield "file", content_type, reader
                reader.drain()  # a file not chosen (empty) or an unknown part: read past it
            elif isinstance(event, Field):
                value = self._field_value()
                if event.name == "statement":
                    text = value.decode("utf-8", "replace").strip()[:STATEMENT_MAX]
                    if text:
                        yield "statement", "text/plain; charset=utf-8", io.BytesIO(text.encode("utf-8"))


class _PartReader:
    """One file part's bytes, as the sealer asks for them."""

    def __init__(self, parts: Parts):
        self.parts = parts
        self.buffer = b""
        self.done = False

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = READ_SIZE if n is None or n < 0 else n
        pieces, held = [self.buffer], len(self.buffer)
        while held < n and not self.done:   # joined once: the sealer asks for up to 1 MiB at a time
            event = self.parts._next()
            if not isinstance(event, Data):
                raise _Malformed("a file part ended early")
            pieces.append(event.data)
            held += len(event.data)
            self.done = not event.more_data
        buffer = b"".join(pieces) if len(pieces) > 1 else self.buffer
        out, self.buffer = buffer[:n], buffer[n:]
        return out

    def drain(self) -> None:
        while self.read(READ_SIZE):
            pass
