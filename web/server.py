"""The production WSGI server for the page: waitress, sized for live clients, and stoppable.

Each live page (server-sent events) holds one waitress thread, so the server runs
``live_clients + SPARE_THREADS`` threads: the spare ones serve page loads, the API
and captains while every live slot is taken. When every thread is busy and more than
``MAX_QUEUE`` requests wait for one, the next are answered 503 at once instead of
making every reader wait.

``silbato web``, ``silbato sim`` and the tests all serve through ``Server``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import waitress
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer

log = logging.getLogger(__name__)

SPARE_THREADS = 8
MAX_QUEUE = 64  # requests waiting for a thread before the next ones are answered 503


def shed_when_overloaded(app, overloaded: Callable[[], bool]):
    """WSGI middleware: 503 with Retry-After while ``overloaded()``."""
    def shedding(environ, start_response):
        if overloaded():
            start_response("503 Service Unavailable", [
                ("Content-Type", "text/plain; charset=utf-8"), ("Retry-After", "5"),
                ("Content-Security-Policy", "default-src 'none'"), ("X-Content-Type-Options", "nosniff"),
                ("Referrer-Policy", "no-referrer")])
            return [b"busy: try again in a few seconds\n"]
        return app(environ, start_response)
    return shedding


class Server:
    """A waitress server for ``app`` on ``host:port``; ``serve_forever()`` until ``shutdown()``."""

    def __init__(self, app, host: str, port: int, *, live_clients: int):
        threads = live_clients + SPARE_THREADS
        self.app = app
        self._server: BaseWSGIServer = waitress.create_server(
            shed_when_overloaded(app, self.overloaded), host=host, port=port, threads=threads,
            connection_limit=threads + 128, channel_timeout=60, asyncore_use_poll=True, ident="silbato",
            clear_untrusted_proxy_headers=True,
            # keep reading while a request runs, so a live stream learns at once that its reader left
            channel_request_lookahead=1)
        self._stopped = threading.Event()
        self._serving = False

    def overloaded(self) -> bool:
        """Every thread busy (this one included) and a queue behind them; a burst of new
        connections while threads are idle is not overload."""
        dispatcher = self._server.task_dispatcher
        return len(dispatcher.queue) > MAX_QUEUE and dispatcher.active_count >= len(dispatcher.threads)

    @property
    def port(self) -> int:
        return self._server.effective_port

    def serve_forever(self) -> None:
        self._serving = True
        try:
            self._server.run()
        finally:
            self._stopped.set()

    def start(self) -> "Server":
        """Serve on a background thread."""
        self._serving = True
        threading.Thread(target=self.serve_forever, name=f"web-{self.port}", daemon=True).start()
        return self

    def shutdown(self) -> None:
        """End live streams, close every connection, stop the threads."""
        live = self.app.extensions.get("silbato.live") if hasattr(self.app, "extensions") else None
        if live is not None:
            live.close()
        server = self._server
        while server._map:
            for dispatcher in list(server._map.values()):
                try:
                    if isinstance(dispatcher, HTTPChannel):
                        dispatcher.handle_close()
                    else:
                        dispatcher.close()  # the listening socket and the loop's trigger
                except Exception:  # a half-closed socket must not stop the shutdown
                    log.debug("closing %r failed", dispatcher, exc_info=True)
        server.task_dispatcher.shutdown(timeout=5)
        if self._serving:
            self._stopped.wait(5)


def serve(app, host: str, port: int, *, live_clients: int) -> None:
    """``silbato web``: serve until interrupted."""
    server = Server(app, host, port, live_clients=live_clients)
    log.info("serving the page on http://%s:%s/ (%d live clients)", host, server.port, live_clients)
    server.serve_forever()
