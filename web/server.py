"""The production WSGI server for the page: waitress, sized for live clients, and stoppable.

Each live page (server-sent events) holds one waitress thread, so the server runs
``live_clients + SPARE_THREADS`` threads: the spare ones serve page loads, the API
and captains while every live slot is taken. When every thread is busy and more than
``MAX_QUEUE`` requests wait for one, the next are answered 503 at once instead of
making every reader wait.

Waitress keeps at most ``threads + 128`` connections open. So that one client cannot
take them all (connections that send a request's headers one slow line at a time,
which keeps waitress's own idle timeout from ever firing):

- one address may hold ``per_address`` connections (``PER_ADDRESS``); the next are
  answered a short 503 and closed at once, and the address is logged once a minute;
- a connection must send its request's headers within ``header_timeout`` seconds
  (``HEADER_TIMEOUT``) of opening, and each later request within that time of its first
  byte, however busily it trickles; waitress checks every ``MAINTENANCE`` seconds.

A request being served (a live stream included) and an idle keep-alive connection
between requests are not timed by this; waitress closes the latter after ``channel_timeout``.

Request bodies stay in memory, never on disk. waitress reads a whole body before it calls
the page, into a buffer that moves to an (unlinked) temporary file once it holds
``inbuf_overflow`` bytes; a neighbor's photo would then be on the SD card in the clear. So:

- ``max_request_body_size`` is ``MAX_BODY``: waitress answers a body announced with a
  ``Content-Length`` of ``MAX_BODY`` or more with 413 as soon as the headers end, before
  reading any of it (parser.py, ``received``); a chunked body is counted as it comes and
  refused the moment it reaches ``MAX_BODY`` raw bytes, so its buffer holds less than
  ``MAX_BODY + RECV_BYTES`` decoded bytes (waitress reads ``RECV_BYTES`` at a time);
- ``inbuf_overflow`` is ``MAX_BODY + RECV_BYTES + 64 KiB`` (past anything a body can buffer),
  so a body's buffer never becomes a temporary file (buffers.py, ``OverflowableBuffer.append``);
- every connection holds at most two bodies (the one served and one read ahead,
  ``channel_request_lookahead=1``), and all of them together stay near ``BODY_BUDGET``:
  past it a connection that is reading a body over ``SMALL_BODY`` is not read from until
  memory frees (small bodies, a captain's forms and the API, always go on);
- the 413 is the page's own, in the reader's language (``TooLargeTask``), not waitress's text.

Large evidence goes in pieces under ``MAX_BODY`` (``web.uploads``).

``silbato web``, ``silbato sim`` and the tests all serve through ``Server``.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import io
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Callable

from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, ThreadedTaskDispatcher, WSGITask
from waitress.utilities import RequestEntityTooLarge

from node.errors import ListenError

log = logging.getLogger(__name__)

SPARE_THREADS = 8
MAX_QUEUE = 64  # requests waiting for a thread before the next ones are answered 503
# A phone's browser opens at most 6 connections to a host, its live stream among them; 32 leaves
# room for a few phones behind one NAT address. IPv6 counts each full address, not its /64: on
# the building's Wi-Fi every phone shares one /64.
PER_ADDRESS = 32
HEADER_TIMEOUT = 5.0  # seconds: a phone sends its headers at once; this leaves room for resends on bad Wi-Fi
MAINTENANCE = 1  # seconds between waitress's passes over its connections (its cleanup_interval)
LOG_EVERY = 60.0  # seconds: at most one line per refused address, and one for the timeouts, per this
# The largest request body (bytes, exclusive): the form without JavaScript takes files up to about
# this, larger ones go in pieces. Memory, worst case: a Pi Zero 2 W has 512 MB (about 400 free
# beside the daemon). Without a budget one address could hold PER_ADDRESS (32) connections x 2
# bodies x 8 MiB = 512 MiB, and the whole server (live_clients 200 + 136 connections) 5.25 GiB;
# so bodies are held to BODY_BUDGET (64 MiB) in all, plus at most SMALL_BODY + RECV_BYTES per
# connection read before the budget is noticed: 336 x 192 KiB = 63 MiB. 127 MiB at worst.
MAX_BODY = 8 * 1024 * 1024
# Bytes waitress takes from a socket at once (its default is 8 KiB). A video's 1 MiB pieces came
# in 128 reads each, and the page sealed 130-140 MB/s; with 128 KiB, 215-245 MB/s (benchmark P11).
RECV_BYTES = 128 * 1024
BODY_BUDGET = 64 * 1024 * 1024
SMALL_BODY = 64 * 1024  # bytes of body a request may always buffer, budget or not (forms, the API)
TOO_LARGE_PATH = "/too-large"  # the page's own 413, asked for with the refused request's headers
_PSEUDONYMS = secrets.token_bytes(16)  # new at every start: a log line never names a phone's address


def pseudonym(address: str) -> str:
    """``client 1a2b3c4d``: the same address gives the same name until the page restarts, and
    no one can tell the address from it (the logs never name a neighbor's phone)."""
    return "client " + hmac.new(_PSEUDONYMS, address.encode(), hashlib.sha256).hexdigest()[:8]

BUSY_HEADERS = [("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "5"),
                ("Content-Security-Policy", "default-src 'none'"), ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer")]
BUSY_BODY = b"busy: try again in a few seconds\n"


def shed_when_overloaded(app, overloaded: Callable[[], bool]):
    """WSGI middleware: 503 with Retry-After while ``overloaded()``."""
    def shedding(environ, start_response):
        if overloaded():
            start_response("503 Service Unavailable", list(BUSY_HEADERS))
            return [BUSY_BODY]
        return app(environ, start_response)
    return shedding


# Sent, best effort, to a connection over its address's limit before closing it, so a browser
# behind a crowded NAT shows why; nothing is read from it.
TURNED_AWAY = (b"HTTP/1.1 503 Service Unavailable\r\n"
               + b"".join(f"{k}: {v}\r\n".encode() for k, v in BUSY_HEADERS)
               + f"Connection: close\r\nContent-Length: {len(BUSY_BODY)}\r\n\r\n".encode() + BUSY_BODY)


class TimedRequest(HTTPRequestParser):
    """waitress's request parser, noting when the request's first byte came (monotonic seconds)."""

    def __init__(self, adj):
        super().__init__(adj)
        self.started = time.monotonic()


class TooLargeTask(WSGITask):
    """waitress's 413 for a body of ``MAX_BODY`` or more, answered by the page at ``TOO_LARGE_PATH``
    (in the reader's language: the refused request's headers and cookies go along); the body is
    never read, so the connection closes after it."""

    def get_environment(self):
        environ = super().get_environment()  # waitress keeps it as self.environ: changed in place
        if environ.get("PATH_INFO") == TOO_LARGE_PATH:
            return environ
        query = environ.get("QUERY_STRING", "")
        lang = next((p for p in query.split("&") if p.startswith("lang=")), "")
        environ.update(REQUEST_METHOD="GET", PATH_INFO=TOO_LARGE_PATH, QUERY_STRING=lang, CONTENT_LENGTH="0")
        environ.pop("CONTENT_TYPE", None)
        environ["wsgi.input"] = io.BytesIO()
        return environ

    def execute(self):
        self.set_close_on_finish()  # "Connection: close": the body is still on its way, and is never read
        super().execute()


def _error_task(channel, request):
    if isinstance(request.error, RequestEntityTooLarge):
        return TooLargeTask(channel, request)
    return ErrorTask(channel, request)


class Connection(HTTPChannel):
    """A waitress connection that knows how long it has owed request headers, counts per address,
    and keeps the bodies it holds within the server's ``BODY_BUDGET``."""

    parser_class = TimedRequest
    error_task_class = staticmethod(_error_task)
    spoke = False  # whether any byte has come yet
    counted = False
    holding = 0  # bytes of request bodies this connection holds (as last counted)

    def __init__(self, server: Listener, sock, addr, adj, map=None):
        self.opened = time.monotonic()
        super().__init__(server, sock, addr, adj, map=map)
        server.count(addr[0], +1)
        self.counted = True

    def received(self, data):
        self.spoke = True
        try:
            return super().received(data)
        finally:
            self._recount()

    def service(self):
        try:
            super().service()
        finally:
            self._recount()  # the request served is gone, and its body with it

    def readable(self):
        if not super().readable():
            return False
        request = self.request
        body = request.body_rcv if request is not None else None
        # a large body waits for memory; the loop looks again when the budget frees (or within 1 s)
        return body is None or len(body) < SMALL_BODY or not self.server.over_budget()

    def _recount(self) -> None:
        held = 0
        for request in [*self.requests, self.request]:
            body = getattr(request, "body_rcv", None)
            if body is not None:
                held += len(body)
        self.server.hold(self, held)

    def owes_headers_since(self) -> float | None:
        """Since when (monotonic seconds) this connection owes a request's headers; ``None`` if it doesn't."""
        if self.requests:  # being served, a live stream included
            return None
        if self.request is not None:
            return None if self.request.headers_finished else self.request.started
        return None if self.spoke else self.opened  # silent since it opened, or idle between requests

    def del_channel(self, map=None):
        super().del_channel(map)
        if self.counted:  # closing may come twice, from the loop and from a shutdown
            self.counted = False
            self.server.count(self.addr[0], -1)
        self.server.hold(self, 0)


@dataclass
class TurnedAway:
    """An address over its cap: when it was last logged (monotonic seconds), and how many turned away since."""

    logged: float
    since: int = 0


class Listener(TcpWSGIServer):
    """waitress's TCP server with a cap on connections per client address and a header timeout.

    ``per_address`` and ``header_timeout`` of ``None`` turn either off (waitress as it comes).
    """

    channel_class = Connection

    def __init__(self, app, map, *, dispatcher, adj, sockinfo, per_address: int | None,
                 header_timeout: float | None):
        self.per_address = per_address
        self.header_timeout = header_timeout
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}  # address -> connections open
        self._turned_away: dict[str, TurnedAway] = {}
        self._timed_out = 0
        self._timeouts_logged = float("-inf")
        self.body_bytes = 0  # request bodies held in memory by every connection
        super().__init__(app, map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo)

    def count(self, address: str, change: int) -> None:
        with self._lock:
            left = self._open.get(address, 0) + change
            if left > 0:
                self._open[address] = left
            else:
                self._open.pop(address, None)

    def open_from(self, address: str) -> int:
        """Connections open from ``address`` now."""
        return self._open.get(address, 0)

    def hold(self, channel: Connection, held: int) -> None:
        """``channel`` now holds ``held`` bytes of request bodies; wake the loop if that frees the budget."""
        with self._lock:
            was_over = self.over_budget()
            self.body_bytes += held - channel.holding
            channel.holding = held
            freed = was_over and not self.over_budget()
        if freed:
            self.pull_trigger()

    def over_budget(self) -> bool:
        return self.body_bytes >= BODY_BUDGET

    def accept(self):
        """waitress's accept, which turns away a connection past its address's cap (``None``: nothing to serve)."""
        accepted = super().accept()
        if accepted is None or self.per_address is None:
            return accepted
        conn, addr = accepted
        if self.open_from(addr[0]) < self.per_address:
            return accepted
        try:
            conn.setblocking(False)
            conn.send(TURNED_AWAY)
        except OSError:
            pass  # it left already, or its window is full: closing is what matters
        finally:
            conn.close()
        self._note_refused(addr[0])
        return None

    def _note_refused(self, address: str) -> None:
        record = self._turned_away.get(address)
        if record is None:
            self._turned_away[address] = TurnedAway(time.monotonic())
            log.warning("turning away connections from %s: it holds %d open, the most one address may "
                        "(logged once a minute while it goes on)", pseudonym(address), self.per_address)
        else:
            record.since += 1

    def maintenance(self, now):
        super().maintenance(now)  # channel_timeout: idle keep-alive connections
        # Monotonic, not waitress's wall-clock `now`: a Pi sets its clock from the network after boot.
        clock = time.monotonic()
        if self.header_timeout is not None:
            cutoff = clock - self.header_timeout
            for channel in list(self.active_channels.values()):
                since = channel.owes_headers_since()
                if since is not None and since < cutoff and not channel.will_close:
                    channel.will_close = True  # closed by the loop, as waitress closes idle ones
                    self._timed_out += 1
        self._log_summaries(clock)

    def _log_summaries(self, clock: float) -> None:
        for address, record in list(self._turned_away.items()):
            if clock - record.logged < LOG_EVERY:
                continue
            if record.since:
                log.warning("turned away %d more connections from %s in the last minute", record.since,
                            pseudonym(address))
                record.logged, record.since = clock, 0
            else:
                del self._turned_away[address]  # quiet for a minute: its next refusal is logged at once
        if self._timed_out and clock - self._timeouts_logged >= LOG_EVERY:
            log.info("closed %d connections that sent no complete request headers within %g s",
                     self._timed_out, self.header_timeout)
            self._timed_out, self._timeouts_logged = 0, clock


def _listen_error(host: str, port: int, exc: Exception) -> ListenError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        why = ("the port is in use by another program (maybe another `silbato web` or `silbato sim`); "
               "stop it, or pick another port with web.port (`silbato sim`: --port-base)")
    elif code == errno.EACCES:
        why = "permission denied: ports below 1024 need privilege; pick web.port 1024 or above"
    elif code == errno.EADDRNOTAVAIL:
        why = f"{host} is not an address of this machine; set web.host to one of its addresses, or 0.0.0.0"
    elif isinstance(exc, ValueError):
        why = "not an address and port this machine can listen on; check web.host and web.port"
    else:
        why = getattr(exc, "strerror", None) or str(exc)
    return ListenError(f"cannot serve the page on {where}: {why}")


class Server:
    """A waitress server for ``app`` on ``host:port``; ``serve_forever()`` until ``shutdown()``.

    ``per_address``: connections one client address may hold open (``None``: no cap);
    ``header_timeout``: seconds a connection has to send a request's headers (``None``: no limit).
    Raises ``ListenError`` if it cannot listen on ``host:port``.
    """

    def __init__(self, app, host: str, port: int, *, live_clients: int,
                 per_address: int | None = PER_ADDRESS, header_timeout: float | None = HEADER_TIMEOUT):
        if per_address is not None and per_address < 1:
            raise ValueError(f"per_address must be at least 1, got {per_address}")
        if header_timeout is not None and header_timeout <= 0:
            raise ValueError(f"header_timeout must be positive, got {header_timeout}")
        if not 0 <= port <= 65535:  # else the socket module would quietly take it modulo 65536
            raise _listen_error(host, port, ValueError(port))
        threads = live_clients + SPARE_THREADS
        self.app = app
        self._map: dict = {}
        try:
            adj = Adjustments(
                host=host, port=port, threads=threads, connection_limit=threads + 128, channel_timeout=60,
                cleanup_interval=MAINTENANCE, asyncore_use_poll=True, ident="silbato",
                clear_untrusted_proxy_headers=True,
                # every accepted body stays in memory (see the module docstring)
                max_request_body_size=MAX_BODY, inbuf_overflow=MAX_BODY + RECV_BYTES + 64 * 1024, recv_bytes=RECV_BYTES,
                # keep reading while a request runs, so a live stream learns at once that its reader left
                channel_request_lookahead=1)
            dispatcher = ThreadedTaskDispatcher()  # its threads start once every socket is bound
            self._listeners = [Listener(shed_when_overloaded(app, self.overloaded), self._map,
                                        dispatcher=dispatcher, adj=adj, sockinfo=sockinfo,
                                        per_address=per_address, header_timeout=header_timeout)
                               for sockinfo in adj.listen]
        except (OSError, ValueError) as exc:
            wasyncore.close_all(self._map)  # the sockets and the loop's trigger made so far
            raise _listen_error(host, port, exc) from None
        dispatcher.set_thread_count(threads)
        self._server = self._listeners[0]
        self._stopped = threading.Event()
        self._serving = False

    def overloaded(self) -> bool:
        """Every thread busy (this one included) and a queue behind them; a burst of new
        connections while threads are idle is not overload."""
        dispatcher = self._server.task_dispatcher
        return len(dispatcher.queue) > MAX_QUEUE and dispatcher.active_count >= len(dispatcher.threads)

    @property
    def port(self) -> int:
        return int(self._server.effective_port)

    def open_from(self, address: str) -> int:
        """Connections open from ``address`` now."""
        return sum(listener.open_from(address) for listener in self._listeners)

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.run()  # one loop over every listener's sockets
        finally:
            self._stopped.set()

    def start(self) -> Server:
        """Serve on a background thread."""
        self._serving = True
        threading.Thread(target=self.serve_forever, name=f"web-{self.port}", daemon=True).start()
        return self

    def shutdown(self) -> None:
        """End live streams, close every connection, stop the threads."""
        live = self.app.extensions.get("silbato.live") if hasattr(self.app, "extensions") else None
        if live is not None:
            live.close()
        uploads = self.app.extensions.get("silbato.uploads") if hasattr(self.app, "extensions") else None
        if uploads is not None:
            uploads.close()  # open uploads are aborted: their partial sealed files are removed
        while self._map:
            for dispatcher in list(self._map.values()):
                try:
                    if isinstance(dispatcher, HTTPChannel):
                        dispatcher.handle_close()
                    else:
                        dispatcher.close()  # the listening sockets and the loop's trigger
                except Exception:  # a half-closed socket must not stop the shutdown
                    log.debug("closing %r failed", dispatcher, exc_info=True)
        self._server.task_dispatcher.shutdown(timeout=5)
        if self._serving:
            self._stopped.wait(5)


def serve(app, host: str, port: int, *, live_clients: int) -> None:
    """``silbato web``: serve until interrupted."""
    server = Server(app, host, port, live_clients=live_clients)
    log.info("serving the page on http://%s:%s/ (%d live clients)", host, server.port, live_clients)
    server.serve_forever()
