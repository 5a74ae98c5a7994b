"""Large evidence in pieces (with JavaScript), resumed after a dropped connection, sealed as it comes.

The server holds each request body in memory (``web.server.MAX_BODY``), so a long video
goes in pieces of ``CHUNK`` bytes:

- ``POST /alerts/<id>/uploads`` (CSRF-checked, counted against the address's upload
  limit; fields ``size`` in bytes and ``type``) starts an upload: ``{"id", "url", "chunk", "offset"}``;
- ``PUT <url>?offset=N`` appends the next piece (header ``X-CSRFToken``); an offset other
  than the confirmed one is answered 409 with the confirmed ``offset``; the piece that
  completes ``size`` finishes the item (``"done": true``);
- ``GET <url>`` says the confirmed ``offset`` (and ``done``), so a phone that lost its
  connection goes on from there: a piece cut off midway never reached the page (the
  server answers only whole bodies), so nothing is counted twice or lost.

The plaintext never touches the disk: each upload has one sealer thread running
``node.evidence.seal.seal`` over a ``Pipe`` the pieces are written into (at most
``PIPE_BYTES`` + one piece held), so the sealed file grows as the pieces come. The sealer runs
at the idle scheduling policy (``SCHED_IDLE``, Linux): it takes only the CPU nothing else wants,
so the daemon's alert path is not slowed by a video arriving (benchmark P11). An upload
idle for ``UPLOAD_IDLE`` seconds (default ``IDLE``) is aborted and its partial sealed file
removed; so is every open upload when the page stops. A finished upload no longer counts
against ``MAX_OPEN``; it is remembered ``DONE_KEEP`` seconds (5 minutes), so a phone that lost
the last answer learns ``done`` from ``GET`` within that time, and is told to start over after.
Room in the evidence folder for the announced ``size`` is reserved when the upload starts
(``node.evidence.seal.reserve``; 507 if there is none) and released when it ends. The page keeps uploads in memory
only: after a restart of ``silbato web`` the phone is told to start the file over.
"""

from __future__ import annotations

import collections
import logging
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from flask import Blueprint, current_app, jsonify, request, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import validate_csrf
from werkzeug.exceptions import BadRequest
from wtforms.validators import ValidationError

from node.errors import EvidenceError, StoreError
from node.evidence import seal
from web import evidence

log = logging.getLogger(__name__)

bp = Blueprint("uploads", __name__)

CHUNK = 1024 * 1024          # bytes per piece: well under MAX_BODY, a few seconds on poor Wi-Fi
PIPE_BYTES = 1024 * 1024     # bytes waiting for the sealer before a piece's request waits
IDLE = 1800.0                # seconds without a piece before an upload is aborted
DONE_KEEP = 300.0            # seconds a finished upload is still answered "done" (a phone that missed it)
MAX_OPEN = 8                 # uploads open at once on the node (each holds a thread and up to 3 MiB)
MAX_OPEN_PER_ADDRESS = 3     # ... and from one address
WRITE_TIMEOUT = 60.0         # seconds a piece may wait for the sealer (a slow SD card) before 503
FINISH_TIMEOUT = 120.0       # seconds the last piece waits for the sealed file to be synced
SWEEP_EVERY = 60.0           # seconds between the reaper's looks at idle uploads


def _yield_the_cpu() -> None:
    """This thread at the idle scheduling policy (SCHED_IDLE; nice 19 where there is none).

    The sealer's work (hashing and encrypting a video) can always wait; a captain's hold on the
    node cannot. The page's ``Nice=10`` still gives it a share against the daemon; at the idle
    policy any other task that wants the CPU takes it at once. A thread may lower itself so
    without privileges (and cannot raise itself back: the thread ends with its upload).
    Encryption and hashing let go of the GIL (``node.evidence.age``); between them the sealer
    holds it briefly, and were it put off the CPU just then, the page's other threads would wait
    for it to run again. With 5 uploads and 20 live clients the live clients' worst delay fell
    (411-423 to 221-229 ms, benchmark P11), but under a CPU held full by other work that is
    the risk this takes."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, tid, 19)
        except OSError as exc:
            log.debug("the evidence sealer keeps its priority: %s", exc)


class Aborted(EvidenceError):
    """The upload was abandoned (idle too long, or the page stopped): its partial file goes."""


class Pipe:
    """A bounded in-memory pipe: the piece requests write, the sealer thread reads.

    ``write`` waits while ``capacity`` bytes are waiting; ``abort(exc)`` makes both ends raise ``exc``.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._pieces: collections.deque = collections.deque()
        self._held = 0
        self._closed = False
        self._error: BaseException | None = None
        self._cond = threading.Condition()

    def readable(self) -> bool:
        return True

    def write(self, data: bytes, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: self._held < self.capacity or self._error, timeout):
                raise EvidenceError("the sealer did not keep up")
            if self._error is not None:
                raise self._error
            self._pieces.append(data if isinstance(data, bytes) else bytes(data))
            self._held += len(data)
            self._cond.notify_all()

    def close(self) -> None:
        """The end of the plaintext."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def abort(self, exc: BaseException) -> None:
        with self._cond:
            self._error = exc
            self._pieces.clear()
            self._held = 0
            self._cond.notify_all()

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            self._cond.wait_for(lambda: self._pieces or self._closed or self._error)
            if self._error is not None:
                raise self._error
            if not self._pieces:
                return b""
            piece = self._pieces[0]
            if n is None or n < 0 or n >= len(piece):  # the whole piece, as written: not copied
                out = self._pieces.popleft()
                out = out if isinstance(out, bytes) else bytes(out)
            else:
                view = memoryview(piece)
                out = bytes(view[:n])  # a memoryview slice: the rest of the piece is not copied
                self._pieces[0] = view[n:]
            self._held -= len(out)
            self._cond.notify_all()
            return out


@dataclass
class Upload:
    """One file on its way in: ``offset`` bytes confirmed of ``size``."""

    id: str
    alert_id: str
    address: str
    size: int
    content_type: str
    seen: float
    pipe: Pipe
    reservation: seal.Reservation | None = None
    offset: int = 0
    done: bool = False
    sealed: seal.Sealed | None = None
    error: BaseException | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    finished: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class Uploads:
    """The page's open uploads (in memory only), and the reaper of idle ones.

    ``clock``: monotonic seconds; ``idle``: seconds without a piece before an upload is aborted.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, idle: float = IDLE,
                 done_keep: float = DONE_KEEP):
        self.clock, self.idle, self.done_keep = clock, idle, done_keep
        self._open: dict[str, Upload] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reaper: threading.Thread | None = None

    def start(self, alert_id: str, address: str, size: int, content_type: str, settings: dict,
              recipients: list, reservation: seal.Reservation | None = None) -> Upload | None:
        """A new upload with its sealer running; ``None`` if too many are open (on the node or from ``address``).

        ``reservation``: room reserved for it in the evidence folder, released when its sealer ends
        (at once if it is refused here).
        """
        with self._lock:
            unfinished = [u for u in self._open.values() if not u.done]  # a finished one holds no thread
            mine = sum(1 for u in unfinished if u.address == address)
            if len(unfinished) >= MAX_OPEN or mine >= MAX_OPEN_PER_ADDRESS:
                if reservation is not None:
                    reservation.release()
                return None
            upload = Upload(secrets.token_urlsafe(16), alert_id, address, size, content_type, self.clock(),
                            Pipe(PIPE_BYTES), reservation)
            self._open[upload.id] = upload
        upload.thread = threading.Thread(target=self._seal, args=(upload, settings, recipients),
                                         name="evidence-sealer", daemon=True)
        upload.thread.start()
        self._start_reaper()
        return upload

    def _seal(self, upload: Upload, settings: dict, recipients: list) -> None:
        _yield_the_cpu()
        try:
            upload.sealed = seal.seal(upload.pipe, settings["folder"], recipients, max_item=upload.size,
                                      max_total=settings["max_total"], reservation=upload.reservation)
        except BaseException as exc:  # kept for the next piece's answer; seal() left nothing behind
            upload.error = exc
            upload.pipe.abort(exc)
            if not isinstance(exc, (Aborted, seal.TooLarge, seal.StorageFull, seal.DiskFull)):
                log.error("sealing an upload failed: %s", exc)
        finally:
            upload.finished.set()

    def get(self, upload_id: str) -> Upload | None:
        self.sweep()
        return self._open.get(upload_id)

    def forget(self, upload: Upload) -> None:
        with self._lock:
            self._open.pop(upload.id, None)

    def abort(self, upload: Upload, why: str) -> None:
        """Stop ``upload``'s sealer (its partial file is removed) and forget it."""
        self.forget(upload)
        if not upload.done:
            upload.pipe.abort(Aborted(why))
            if upload.thread is not None:
                upload.thread.join(5)
            if upload.sealed is not None and not upload.done:  # finished as it was aborted: not recorded
                upload.sealed.path.unlink(missing_ok=True)

    def sweep(self) -> int:
        """Abort uploads idle for ``idle`` seconds, forget those finished ``done_keep`` ago; how many were aborted."""
        now = self.clock()
        with self._lock:
            stale = [u for u in self._open.values() if now - u.seen > (self.done_keep if u.done else self.idle)]
        aborted = 0
        for upload in stale:
            if not upload.done:
                aborted += 1
                log.info("an upload idle for %d minutes was abandoned; its partial sealed file is removed",
                         self.idle // 60)
            self.abort(upload, "idle")
        return aborted

    def close(self) -> None:
        """The page stops: abort every open upload, stop the reaper."""
        self._stopping.set()
        with self._lock:
            open_now = list(self._open.values())
        for upload in open_now:
            self.abort(upload, "the page stopped")
        if self._reaper is not None:
            self._reaper.join(5)

    def _start_reaper(self) -> None:
        with self._lock:
            if self._reaper is not None:
                return
            self._reaper = threading.Thread(target=self._reap, name="evidence-reaper", daemon=True)
        self._reaper.start()

    def _reap(self) -> None:
        while not self._stopping.wait(SWEEP_EVERY):
            try:
                self.sweep()
            except Exception:
                log.exception("sweeping idle uploads failed")


def uploads() -> Uploads:
    ext = current_app.extensions
    if "silbato.uploads" not in ext:
        ext["silbato.uploads"] = Uploads(clock=current_app.config.get("UPLOAD_CLOCK", time.monotonic),
                                         idle=float(current_app.config.get("UPLOAD_IDLE", IDLE)))
    return ext["silbato.uploads"]


def _error(status: int, message: str, logged: str, **extra):
    log.warning("evidence upload refused (%d): %s", status, logged)
    response = jsonify({"error": message, **extra})
    response.status_code = status
    return response


def _state(upload: Upload, **extra) -> dict:
    return {"id": upload.id, "offset": upload.offset, "size": upload.size, "done": upload.done, **extra}


@bp.post("/alerts/<alert_id>/uploads")
def start(alert_id: str):
    """Start an upload of ``size`` bytes (a file too large for one request, or any file with JavaScript)."""
    wait = evidence.rate_limited()
    if wait:
        response = _error(429, evidence.rate_message(), "upload rate limit")
        response.headers["Retry-After"] = str(int(wait + 0.999))
        return response
    opened = evidence.open_to_evidence(alert_id)
    if isinstance(opened[0], int):
        return _error(*opened)
    row, settings, recipients = opened
    size = request.form.get("size", type=int)
    if size is None or size < 1:
        return _error(400, _("Choose a photo or video, or write what you saw."), "no size")
    if size > settings["max_item"]:
        return _error(413, evidence.too_large_message(settings), f"{size} bytes announced")
    try:  # under the ledger's lock: uploads started together cannot share the same free space
        reservation = seal.reserve(settings["folder"], size, recipients, settings["max_total"])
    except seal.StorageFull as exc:
        return _error(*evidence.refusal(exc, settings))
    content_type = (request.form.get("type") or "application/octet-stream")[:100]
    upload = uploads().start(row["id"], request.remote_addr or "?", size, content_type, settings, recipients,
                             reservation)
    if upload is None:
        return _error(503, _("The node is busy taking other videos. Please try again in a few minutes."),
                      "too many uploads open", retry=60)
    url = url_for("uploads.piece", upload_id=upload.id)
    response = jsonify(_state(upload, url=url, chunk=CHUNK))
    response.status_code = 201
    return response


def _gone():
    return _error(404, _("The node restarted or waited too long: sending this file again from the start."),
                  "unknown or abandoned upload", restart=True)


@bp.get("/uploads/<upload_id>")
def status(upload_id: str):
    """How much of an upload the node has: the phone goes on from ``offset``."""
    upload = uploads().get(upload_id)
    if upload is None:
        return _gone()
    return jsonify(_state(upload))


@bp.put("/uploads/<upload_id>")
def piece(upload_id: str):
    """Append one piece at ``?offset=N``; the last one seals the item and records it."""
    registry = uploads()
    upload = registry.get(upload_id)
    if upload is None:
        return _gone()
    try:
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            validate_csrf(request.headers.get("X-CSRFToken", ""))
    except ValidationError:
        return _error(403, _("This form is too old. Open the page again and send once more."), "bad CSRF token")
    offset = request.args.get("offset", type=int)
    request.max_content_length = CHUNK
    settings = evidence._settings()
    with upload.lock:
        if upload.done:
            return jsonify(_state(upload))
        if offset != upload.offset:
            return _error(409, "", f"piece at {offset}, expected {upload.offset}", **_state(upload))
        body = _piece_body()
        if not body or upload.offset + len(body) > upload.size:
            registry.abort(upload, "over its size")
            return _error(413, evidence.too_large_message(settings), "piece past the announced size")
        try:
            upload.pipe.write(body, WRITE_TIMEOUT)
        except EvidenceError as exc:
            return _failed(registry, upload, exc, settings)
        upload.offset += len(body)
        upload.seen = registry.clock()
        if upload.offset < upload.size:
            return jsonify(_state(upload))
        upload.pipe.close()
        if not upload.finished.wait(FINISH_TIMEOUT) or upload.error is not None or upload.sealed is None:
            return _failed(registry, upload, upload.error or EvidenceError("sealing did not finish"), settings)
        try:
            item = evidence.seal_meta(upload.sealed, "file", upload.content_type, settings,
                                      seal.parse_recipients(settings["recipients"]))
            evidence.record(upload.alert_id, [item])
        except (EvidenceError, StoreError, ValueError) as exc:
            upload.sealed.path.unlink(missing_ok=True)
            registry.forget(upload)
            if isinstance(exc, EvidenceError):
                return _failed(registry, upload, exc, settings)
            current_app.logger.error("could not record evidence: %s", exc)
            return _error(503, _("The node could not keep what you sent. Please try again."), str(exc))
        upload.done = True  # kept DONE_KEEP seconds, so a phone that missed this answer learns it from GET
        upload.seen = registry.clock()
        log.info("evidence: 1 item sealed in pieces for incident %s", upload.alert_id)
        return jsonify(_state(upload, sent=url_for("evidence.incident", alert_id=upload.alert_id, sent=1,
                                                    _anchor="evidence")))


def _piece_body() -> bytes:
    """The piece's bytes (at most ``CHUNK``), read in one go where the server allows it.

    ``request.get_data`` reads 64 KiB at a time and joins the reads in a bytearray: a quarter of
    the page's time with the GIL during a large upload went there (benchmark P11). A piece with
    a ``Content-Length`` within ``CHUNK`` is read straight from the server's buffer of the body
    (waitress holds the whole body before it calls the page: ``web.server``), one copy; any other
    body goes through werkzeug's stream and its limits (``max_content_length``: 413)."""
    length = request.content_length
    stream = request.environ.get("wsgi.input")
    if length is not None and length <= CHUNK and stream is not None:
        body = stream.read(length)
        if len(body) == length:
            return body
        raise BadRequest("the piece ended before its Content-Length")
    return request.get_data(cache=False)


def _failed(registry: Uploads, upload: Upload, exc: BaseException, settings: dict):
    registry.abort(upload, str(exc))
    refused = evidence.refusal(exc, settings) or (503, _("The node could not keep what you sent. Please try again."),
                                                  str(exc))
    return _error(*refused)
