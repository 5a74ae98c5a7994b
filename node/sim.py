"""``silbato sim``: a whole block in one process.

N complete nodes, each with gpiozero mock pins, its own SQLite file, its own key
on one shared signed roster, and its own web page on ``127.0.0.1:port_base+i``.
They talk through the simulated air (``node.radio.sim_air``). The control endpoint on
``127.0.0.1:port_base`` exists only in the sim:

- ``GET /nodes``: the nodes, their page URLs and active alerts;
- ``POST /nodes/<i>/hold?seconds=S``: hold node i's panic button for S seconds (a hold shorter
  than ``hardware.hold_time`` answers ``"long_enough": false``; a button still held, 409);
- ``POST /nodes/<i>/confirm|all_clear|cancel?alert=ID``: a captain's action on node i
  (without ``alert``: the newest active alert that node holds).

``silbato sim --blocks B`` runs a ``Neighborhood``: B such blocks and a real Mosquitto on a loopback
port; each block's controls are under ``/blocks/<b>``, ``GET /nodes`` lists the blocks, and
``POST /blocks/<b>/link/down|up`` takes block b's bridges off the broker and back.

With ``--sms`` (``Block(sms=True)``), node 1 is also the block's SMS gateway: the real
gammu-smsd on Gammu's dummy phone (node/gateway/dummy.py), the sim's responders and broad
list (``SIM_RESPONDERS``, ``SIM_BROAD``), unlocked with a passphrase made for the run:

- ``POST /sms/in`` with JSON ``{"from": number, "text": words}`` (or ``?from=…&text=…``): a text
  arrives at the dummy phone;
- ``GET /sms/out``: the texts the dummy phone sent, newest first, ``[{"to": number, "text": words}]``.

It answers JSON, errors too: ``{"error": sentence, "status": code}``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from node import config as config_mod
from node.daemon.node import AIR_EVERY, Node
from node.errors import ListenError, SilbatoError
from node.hardware.devices import mock_factory
from node.protocol.keys import SigningKey, install_roster, sign_roster
from node.radio.sim_air import Scheduler, SimAir

log = logging.getLogger(__name__)


@dataclass
class BlockFiles:
    """What ``provision`` wrote: the organizer key, and one config per node."""

    root: Path
    organizer: SigningKey
    configs: list[config_mod.Config]


def provision(root: Path, n: int, *, block: str = "sim-block", hold_time: float = 2.0,
              overrides: dict[str, Any] | None = None, settings: dict[str, Any] | None = None,
              dispatchers: tuple[int, ...] = ()) -> BlockFiles:
    """Create keys, a signed roster and a config for nodes 1..n under ``root``.

    ``settings``: block-wide settings for the roster to carry (none by default, as older rosters).
    ``dispatchers``: the nodes the roster marks as the block's SMS gateway (``"dispatcher": true``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    organizer = SigningKey.generate()
    (root / "organizer.pub").write_text(organizer.public_b64 + "\n")
    keys = {i: SigningKey.create(root / f"node{i}" / "node.key", force=True) for i in range(1, n + 1)}
    body = {"block": block, "version": 1, "nodes": [
        {"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
         "public_key": keys[i].public_b64} | ({"dispatcher": True} if i in dispatchers else {}) for i in keys]}
    if settings:
        body["settings"] = config_mod.block_settings(settings)  # checked, as 'silbato roster sign' does
    document = sign_roster(body, organizer)
    configs = []
    for i in keys:
        state = root / f"node{i}"
        install_roster(document, organizer.public, state / "roster.json")
        values = {"node.state_dir": str(state), "node.organizer_key": str(root / "organizer.pub"),
                  "hardware.hold_time": hold_time, **(overrides or {})}
        configs.append(config_mod.from_mapping(values, source="sim"))
    return BlockFiles(root, organizer, configs)


# The sim's SMS lists (``--sms``): numbers from the 555-01xx range kept for fiction, PINs printed in the banner.
SIM_RESPONDERS = (("+15550100001", "482915", "en"), ("+15550100002", "739164", "es"))
SIM_BROAD = (("+15550100101", "en"), ("+15550100102", "es"), ("+15550100103", "ko"), ("+15550100104", "tl"))


class SimGateway:
    """Node 1's SMS gateway in the sim: the real gammu-smsd on the dummy phone under ``root``, the
    sim's lists, unlocked with ``passphrase``, stepping in its own thread on the block's clock."""

    def __init__(self, block: "Block", root: Path, passphrase: str):
        from node.gateway.dummy import GammuSmsd

        self.block, self.passphrase = block, passphrase
        self.phone = GammuSmsd(root)
        self.store = None
        self.gateway = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "SimGateway":
        from node.gateway.book import BROAD, RESPONDER
        from node.gateway.service import Gateway
        from node.store import GATEWAY_TABLES, Store

        self.phone.start()
        self.store = Store(self.block.nodes[1].config.db_file, writes=GATEWAY_TABLES)
        self.gateway = Gateway(self.store, self.phone.spool, clock=self.block.clock, smsd_pid=self.phone.pid)
        self.gateway.unlock(self.passphrase)
        now = self.block.clock()
        for number, pin, language in SIM_RESPONDERS:
            self.gateway.book.add(self.gateway.vault, number, RESPONDER, language, now, pin=pin)
        for number, language in SIM_BROAD:
            self.gateway.book.add(self.gateway.vault, number, BROAD, language, now)
        self._thread = threading.Thread(target=self.gateway.run, args=(self._stopping,), name="sim-gateway",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.phone.stop()
        if self.store is not None:
            self.store.close()

    def text_in(self, sender: str, text: str) -> None:
        self.phone.receive(sender, text)

    def texts_out(self) -> list[dict]:
        """What the dummy phone sent, newest first."""
        return [{"to": number, "text": text} for number, text in reversed(self.phone.texts())]


class Block:
    """N nodes on one simulated air. ``scale=None`` runs on virtual time (drive it with ``air.scheduler``)."""

    EPOCH = 1_800_000_000.0  # virtual-time runs start here, so tests are repeatable

    def __init__(self, root: Path, n: int = 5, topology: str = "line", *, loss: float = 0.0,
                 preset: str = "MEDIUM_FAST", seed: int = 1, scale: float | None = None,
                 hold_time: float = 2.0, overrides: dict[str, Any] | None = None, radio: str = "air",
                 settings: dict[str, Any] | None = None, block: str = "sim-block", sms: bool = False,
                 dispatchers: tuple[int, ...] = ()):
        if radio not in ("air", "serial"):
            raise ValueError(f"unknown radio {radio!r}: expected air or serial")
        if radio == "serial" and scale is None:
            raise ValueError("simulated serial radios run on the wall clock: give a scale")
        self.radio = radio
        self.seed = seed
        self.name = block
        self.files = provision(root, n, block=block, hold_time=hold_time,
                               overrides={"radio.preset": preset, **(overrides or {})}, settings=settings,
                               dispatchers=dispatchers or ((1,) if sms else ()))
        self.scheduler = Scheduler(scale)
        hop_limit = self.files.configs[0]["radio.hop_limit"]
        self.air = SimAir(n, topology, loss=loss, preset=preset, seed=seed, hop_limit=hop_limit,
                          scheduler=self.scheduler)
        epoch = self.EPOCH if scale is None else time.time()
        self.clock = lambda: epoch + self.scheduler.now()
        self.factories = {i: mock_factory() for i in range(1, n + 1)}  # PWM-capable: a piezo works too
        self.nodes: dict[int, Node] = {}
        self.radios: dict[int, Any] = {}  # node i's simulated Meshtastic radio, with radio="serial"
        self._servers: list[Any] = []
        self._holds: dict[int, tuple[threading.Timer, float]] = {}  # node -> (release timer, monotonic release time)
        self._holds_lock = threading.Lock()
        self.page_port: Callable[[int], int] = lambda i: i  # node i's page port, once served
        self.sms: SimGateway | None = None
        if sms:
            self.sms = SimGateway(self, self.files.root / "sms", secrets.token_urlsafe(12))

    def start(self) -> "Block":
        try:
            if self.scheduler.scale is not None:
                self.scheduler.start()
            for i, cfg in enumerate(self.files.configs, start=1):
                node = Node(cfg, link=self._link(i, cfg), pin_factory=self.factories[i], clock=self.clock,
                            rng=random.Random(self.seed * 1000 + i), evidence_thread=False)
                self.nodes[i] = node.start()
                # Each node ticks once a second at its own phase, as real nodes booted at random moments do.
                phase = 0.001 + random.Random(self.seed * 7919 + i).random() * 0.998
                self.scheduler.every(1.0, lambda i=i: self._tick(i), offset=phase)
                # and its relays, receipts and heartbeats at their random moments between ticks
                self.scheduler.every(AIR_EVERY, lambda i=i: self._air_tick(i), offset=phase / 5 + 0.0005)
            if self.sms is not None:
                self.sms.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _tick(self, i: int) -> None:
        node = self.nodes.get(i)
        if node is not None:
            node.tick()

    def _air_tick(self, i: int) -> None:
        node = self.nodes.get(i)
        if node is not None:
            node.air_tick()

    def restart(self, i: int) -> Node:
        """Stop node i and start it again on the same files, radio and pins (a reboot)."""
        old = self.nodes.pop(i)
        old.stop()
        node = Node(old.config, link=old.link, pin_factory=self.factories[i], clock=self.clock,
                    rng=random.Random(self.seed * 1000 + i + 500), evidence_thread=False)
        self.nodes[i] = node.start()
        return node

    def _link(self, i: int, cfg: config_mod.Config):
        """Node i's link: straight onto the air, or through the real meshtastic library to a pty radio."""
        if self.radio == "air":
            return self.air.radios[i]
        from node.radio.link import MeshtasticLink
        from node.radio.sim_radio import SimMeshtasticRadio

        path = self.files.root / "dev" / "serial" / "by-id" / f"usb-Silbato_sim_radio_{i}-if00"
        self.radios[i] = SimMeshtasticRadio(self.air, i, path, psk=bytes(range(1, 17)))
        return MeshtasticLink(port=str(path), channel=cfg["radio.channel"], hop_limit=cfg["radio.hop_limit"])

    def stop(self) -> None:
        with self._holds_lock:
            for timer, _ in self._holds.values():
                timer.cancel()
            self._holds.clear()
        for server in reversed(self._servers):
            server.shutdown()
        self._servers.clear()
        if self.sms is not None:
            self.sms.stop()
        self.scheduler.stop()
        for node in reversed(list(self.nodes.values())):
            node.stop()
        self.nodes.clear()
        for radio in self.radios.values():
            radio.close()

    def button_pin(self, i: int):
        return self.factories[i].pin(self.files.configs[i - 1]["hardware.button_pin"])

    def siren_pin(self, i: int):
        return self.factories[i].pin(self.files.configs[i - 1]["hardware.siren_pin"])

    def hold(self, i: int, seconds: float) -> None:
        """Press node i's button now and release it ``seconds`` (wall clock) later. Returns at once.

        Raises ``SilbatoError`` while an earlier hold of node i's button lasts: one hand, one button.
        """
        pin = self.button_pin(i)
        with self._holds_lock:
            if i in self._holds:
                left = self._holds[i][1] - time.monotonic()
                raise SilbatoError(f"node {i}'s button is already held; it is released in {max(left, 0):.1f} s")
            timer = threading.Timer(seconds, self._release, args=(i,))
            timer.daemon = True
            self._holds[i] = (timer, time.monotonic() + seconds)
            pin.drive_low()
            timer.start()

    def _release(self, i: int) -> None:
        with self._holds_lock:
            if self._holds.pop(i, None) is not None:
                self.button_pin(i).drive_high()

    def add_captain(self, name: str, password: str) -> None:
        """Captain ``name`` with ``password`` on every node's console (one scrypt hash, shared)."""
        from node.store import Store
        from web.auth import hash_password

        hashed = hash_password(password)
        for cfg in self.files.configs:
            with Store(cfg.db_file) as store:
                store.add_captain(name, hashed, self.clock(), replace=True)

    def newest_active(self, i: int) -> str:
        node = self.nodes[i]
        with node.lock:   # the node's connection is the daemon's: never used by two threads at once
            active = node.store.active_alerts()
        if not active:
            raise SilbatoError(f"node {i} holds no active alert")
        return active[-1].id

    # -- web pages and the control endpoint ---------------------------------------------

    # Live pages per simulated node: each holds a server thread, and the sim runs many nodes.
    SIM_LIVE_CLIENTS = 20

    def serve(self, port_base: int, host: str = "127.0.0.1") -> None:
        """Node i's page on port_base+i (waitress, as on a node), the control endpoint on port_base."""
        from werkzeug.serving import make_server

        try:  # bound here: werkzeug's own bind prints and calls sys.exit on a port in use
            listening = socket.create_server((host, port_base))
        except OSError as exc:
            raise _cannot_listen("the sim's control endpoint", host, port_base, exc) from None
        with listening:  # the server works on its own copy of the socket
            control = make_server(host, port_base, self.control_app(port_base, host), threaded=True,
                                  fd=listening.fileno())
        threading.Thread(target=control.serve_forever, name=f"web-{port_base}", daemon=True).start()
        self._servers.append(control)
        self.serve_pages(lambda i: port_base + i, host)

    def serve_pages(self, port_of: Callable[[int], int], host: str = "127.0.0.1") -> None:
        """Node i's page on ``port_of(i)``."""
        from web import create_app, server, settings

        self.page_port = port_of
        for i, cfg in enumerate(self.files.configs, start=1):
            app = create_app({**settings(cfg), "EXEMPT_LOOPBACK": True, "LIVE_CLIENTS": self.SIM_LIVE_CLIENTS,
                              "CLOCK": self.clock,
                              "ON_REQUEST": self._nudge(i)})
            try:
                page = server.Server(app, host, port_of(i), live_clients=self.SIM_LIVE_CLIENTS).start()
            except (OSError, ListenError) as exc:
                raise _cannot_listen(f"node {i}'s page", host, port_of(i), exc) from None
            self._servers.append(page)

    def _nudge(self, i: int):
        """Node i picks up a captain's request from its page at once (a real daemon polls for them)."""
        return lambda: self.scheduler.after(0, self.nodes[i].process_requests)

    CONTROL_USAGE = ("the sim's control endpoint answers GET /nodes, POST /nodes/<i>/hold?seconds=S, "
                     "POST /nodes/<i>/confirm|all_clear|cancel (optionally ?alert=ID), and with --sms "
                     'POST /sms/in (JSON {"from": number, "text": words}) and GET /sms/out')
    SMS_TEXT_MAX = 1000  # characters a simulated text may have (the gateway itself refuses over 480)

    def describe(self, host: str = "127.0.0.1") -> list[dict]:
        """The block's nodes, their pages and the alerts each holds (``GET /nodes``)."""
        def active(node: Node) -> list[str]:
            with node.lock:   # the node's connection is the daemon's: never used by two threads at once
                return [a.id for a in node.store.active_alerts()]

        return [{"node": i, "name": f"B{i}", "url": f"http://{host}:{self.page_port(i)}/", "active": active(n)}
                for i, n in sorted(self.nodes.items())]

    def control_app(self, port_base: int, host: str, extra: Callable[[Any], None] | None = None):
        """The control endpoint's Flask app; ``extra(app)`` adds routes (the neighborhood's link controls)."""
        from flask import Flask, abort, jsonify, request
        from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

        app = Flask("silbato-sim")

        @app.errorhandler(HTTPException)
        def error(exc: HTTPException):
            """Errors answer JSON too: ``{"error": sentence, "status": code}``."""
            message = exc.description
            if isinstance(exc, MethodNotAllowed):
                methods = [m for m in exc.valid_methods or [] if m not in ("HEAD", "OPTIONS")]
                message = f"{request.method} {request.path}: use {' or '.join(methods)}; {self.CONTROL_USAGE}"
            elif message == NotFound.description:  # no such route (``abort(404, ...)`` says what is missing)
                message = f"{request.method} {request.path}: no such control; {self.CONTROL_USAGE}"
            return jsonify({"error": message, "status": exc.code}), exc.code

        def node_or_404(i: int) -> Node:
            if i not in self.nodes:
                abort(404, f"no node {i}")
            return self.nodes[i]

        @app.get("/nodes")
        def nodes():
            """The block's nodes, their pages and the alerts each holds."""
            return jsonify(self.describe(host))

        @app.post("/nodes/<int:i>/hold")
        def hold(i: int):
            """Hold node i's panic button for ?seconds=S."""
            node_or_404(i)
            try:
                seconds = float(request.args.get("seconds", "3"))
            except ValueError:
                abort(400, "seconds must be a number")
            if not 0 < seconds <= 60:
                abort(400, "seconds must be between 0 and 60")
            try:
                self.hold(i, seconds)
            except SilbatoError as exc:
                abort(409, str(exc))
            # A shorter press is still a gesture (it silences a sounding alarm, or withdraws this node's
            # own report), so it is pressed, not refused; the answer says it raises no report.
            hold_time = self.files.configs[i - 1]["hardware.hold_time"]
            answer = {"node": i, "held_for": seconds, "hold_time": hold_time, "long_enough": seconds >= hold_time}
            if seconds < hold_time:
                answer["message"] = (f"{seconds:g} s is shorter than hardware.hold_time ({hold_time:g} s): "
                                     "a press, not a hold, so it raises no report (a press silences a sounding "
                                     "alarm, or withdraws this node's own report within hardware.cancel_window)")
            return jsonify(answer)

        @app.post("/nodes/<int:i>/<any(confirm, all_clear, cancel):action>")
        def act(i: int, action: str):
            """A captain's action on node i."""
            node = node_or_404(i)
            try:
                alert_id = request.args.get("alert") or self.newest_active(i)
                alert = node.act(action, alert_id)
            except SilbatoError as exc:
                abort(409, str(exc))
            return jsonify({"node": i, "alert": alert.id, "state": alert.state.word})

        if extra is not None:
            extra(app)
        def sms_or_404() -> SimGateway:
            if self.sms is None:
                abort(404, "this sim has no SMS gateway: start it with 'silbato sim --sms'")
            return self.sms

        @app.post("/sms/in")
        def sms_in():
            """A text arrives at the gateway's dummy phone: JSON {"from": number, "text": words}."""
            from node.gateway.service import normalise_number

            sms = sms_or_404()
            body = request.get_json(silent=True)
            if body is None and ("from" in request.args or "text" in request.args):
                body = {k: request.args[k] for k in ("from", "text") if k in request.args}   # ?from=…&text=…
            if not isinstance(body, dict) or not isinstance(body.get("from"), str) \
                    or not isinstance(body.get("text"), str):
                abort(400, 'send JSON {"from": "+15550100001", "text": "REPORT 101 482915"}')
            try:
                sender = normalise_number(body["from"])
            except ValueError as exc:
                abort(400, f"from: {exc}")
            if not body["text"] or len(body["text"]) > self.SMS_TEXT_MAX:
                abort(400, f"text: 1 to {self.SMS_TEXT_MAX} characters")
            sms.text_in(sender, body["text"])
            return jsonify({"from": sender, "text": body["text"], "arrived": True})

        @app.get("/sms/out")
        def sms_out():
            """The texts the gateway's dummy phone sent, newest first."""
            return jsonify(sms_or_404().texts_out())

        return app


# -- a neighborhood: several blocks and a real broker --------------------------------------------

SIM_NEIGHBORHOOD = "sim-hood"


def provision_neighborhood(root: Path, name: str, blocks: dict[int, "Block"]) -> None:
    """The neighborhood organizers' key and the signed neighborhood roster, installed on every node.

    Every block is listed with its organizers' public key and an area ("Sim block b"), and every
    other block as its neighbor, so a block's confirmed raid shows on all the others. Each node
    gets ``neighborhood.organizer_key`` and the roster at ``<state_dir>/neighborhood.json``.
    """
    from node.protocol.neighborhood import block_entry, install_neighborhood, roster_path, sign_neighborhood

    organizer = SigningKey.create(Path(root) / "neighborhood-organizer.key", force=True)
    public = Path(root) / "neighborhood-organizer.pub"
    public.write_text(organizer.public_b64 + "\n")
    names = {b: block.name for b, block in blocks.items()}
    document = sign_neighborhood({"name": name, "version": 1, "blocks": [
        block_entry(names[b], block.files.organizer.public, f"Sim block {b}",
                    [names[o] for o in blocks if o != b]) for b, block in blocks.items()]}, organizer)
    for block in blocks.values():
        for k, cfg in enumerate(block.files.configs):
            cfg = config_mod.from_mapping({"neighborhood.organizer_key": str(public)}, source="sim",
                                          base={key: cfg[key] for key in cfg})
            block.files.configs[k] = cfg
            install_neighborhood(document, organizer.public, roster_path(cfg), name=name)


class Neighborhood:
    """``blocks`` blocks of ``n`` nodes on one Mosquitto on loopback; node 1 of each is its bridge node.

    Every node has ``neighborhood.name``; each bridge node has ``bridge.enabled`` and runs the real
    bridge (``node.bridge``) in-process, on its block's clock. ``link_down(b)``/``link_up(b)`` take
    block b's bridges off the broker and back (the control endpoint's ``/blocks/<b>/link/down|up``).
    """

    def __init__(self, root: Path, blocks: int = 2, n: int = 3, *, name: str = SIM_NEIGHBORHOOD,
                 bridges: int = 1, **block_options):
        from node.bridge.broker import LocalBroker

        self.root = Path(root)
        self.name = name
        self.broker = LocalBroker(self.root / "broker")
        self.bridge_nodes = tuple(range(1, min(bridges, n) + 1))
        self.blocks: dict[int, Block] = {}
        seed = block_options.pop("seed", 1)
        for b in range(1, blocks + 1):
            block = Block(self.root / f"block{b}", n, block=f"block{b}", seed=seed + b - 1,
                          overrides={"neighborhood.name": name}, **block_options)
            self.blocks[b] = block
        self.bridges: dict[int, list] = {}   # block -> its bridges (node.bridge.service.Bridge)
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._servers: list[Any] = []

    def start(self) -> "Neighborhood":
        try:
            self.broker.start()
            for b, block in self.blocks.items():
                for i in self.bridge_nodes:
                    cfg = block.files.configs[i - 1]
                    block.files.configs[i - 1] = config_mod.from_mapping(
                        {"bridge.enabled": True, "bridge.broker": self.broker.address}, source="sim",
                        base={key: cfg[key] for key in cfg})
            provision_neighborhood(self.root, self.name, self.blocks)
            for block in self.blocks.values():
                block.start()
            for b in self.blocks:
                self._start_bridges(b)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_bridges(self, b: int) -> None:
        from node.bridge.service import Bridge
        from node.bridge.settings import link_settings
        from node.store import BRIDGE_TABLES, Store

        block = self.blocks[b]
        for i in self.bridge_nodes:
            cfg = block.files.configs[i - 1]
            store = Store(cfg.db_file, writes=BRIDGE_TABLES)
            bridge = Bridge(store, link_settings(cfg, store), clock=block.clock)
            thread = threading.Thread(target=bridge.run, args=(self._stopping,), name=f"bridge-{b}-{i}", daemon=True)
            thread.start()
            self.bridges.setdefault(b, []).append(bridge)
            self._threads.append(thread)

    def link_down(self, b: int) -> None:
        for bridge in self.bridges[b]:
            bridge.hold_down()

    def link_up(self, b: int) -> None:
        for bridge in self.bridges[b]:
            bridge.release()

    def link_state(self, b: int) -> list[dict]:
        """Each bridge node's ``link`` and its block's neighborhood trouble, read from its database."""
        from node.bridgequeue import BridgeQueue
        from node.store import Store

        found = []
        for i in self.bridge_nodes:
            with Store(self.blocks[b].files.configs[i - 1].db_file, readonly=True) as store:
                found.append({"node": i, "link": BridgeQueue(store).state("link") or "down",
                              "trouble": store.troubles().get("neighborhood", "")})
        return found

    def page_port(self, port_base: int, b: int, i: int) -> int:
        n = len(self.blocks[1].files.configs)
        return port_base + (b - 1) * n + i

    def serve(self, port_base: int, host: str = "127.0.0.1") -> None:
        """The control endpoint on port_base (block b's controls under /blocks/<b>), block b's node i's
        page on port_base + (b-1)*n + i."""
        from werkzeug.middleware.dispatcher import DispatcherMiddleware
        from werkzeug.serving import make_server

        mounts = {f"/blocks/{b}": block.control_app(port_base, host, extra=self._link_routes(b))
                  for b, block in self.blocks.items()}
        app = DispatcherMiddleware(self.control_app(host), mounts)
        try:
            listening = socket.create_server((host, port_base))
        except OSError as exc:
            raise _cannot_listen("the sim's control endpoint", host, port_base, exc) from None
        with listening:
            control = make_server(host, port_base, app, threaded=True, fd=listening.fileno())
        threading.Thread(target=control.serve_forever, name=f"web-{port_base}", daemon=True).start()
        self._servers.append(control)
        for b, block in self.blocks.items():
            block.serve_pages(lambda i, b=b: self.page_port(port_base, b, i), host)

    def _link_routes(self, b: int):
        def add(app) -> None:
            from flask import jsonify

            @app.post("/link/<any(down, up):action>")
            def link(action: str):
                """Take this block's bridges off the broker (down) or let them back (up)."""
                (self.link_down if action == "down" else self.link_up)(b)
                return jsonify({"block": b, "link": action, "bridges": list(self.bridge_nodes)})
        return add

    CONTROL_USAGE = ("the neighborhood's control endpoint answers GET /nodes, POST /blocks/<b>/link/down|up, and "
                     "each block's controls under /blocks/<b> (POST /blocks/<b>/nodes/<i>/hold?seconds=S, ...)")

    def control_app(self, host: str):
        from flask import Flask, jsonify, request
        from werkzeug.exceptions import HTTPException

        app = Flask("silbato-sim-neighborhood")

        @app.errorhandler(HTTPException)
        def error(exc: HTTPException):
            """Errors answer JSON too."""
            return jsonify({"error": f"{request.method} {request.path}: no such control; {self.CONTROL_USAGE}",
                            "status": exc.code}), exc.code

        @app.get("/nodes")
        def nodes():
            """The blocks, their bridges' links and their nodes."""
            return jsonify([{"block": b, "name": block.name, "broker": self.broker.address,
                             "bridges": self.link_state(b), "nodes": block.describe(host)}
                            for b, block in self.blocks.items()])

        return app

    def add_captain(self, name: str, password: str) -> None:
        for block in self.blocks.values():
            block.add_captain(name, password)

    def stop(self) -> None:
        for server in reversed(self._servers):
            server.shutdown()
        self._servers.clear()
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()
        for bridges in self.bridges.values():
            for bridge in bridges:
                bridge.store.close()
        self.bridges.clear()
        for block in reversed(list(self.blocks.values())):
            block.stop()
        self.broker.stop()


def stop_on_signals(stopping: threading.Event) -> threading.Event:
    """In the main thread, Ctrl-C, SIGTERM and SIGHUP (the terminal closed) set ``stopping``.

    Ctrl-C too: as a KeyboardInterrupt it could land anywhere in the main thread, say between a
    lock's acquire and the ``with`` that releases it, and the block's stop would then wait for that
    lock. (CI once saw the demo still running a minute after Ctrl-C, on a loaded machine; not
    reproduced, and this is the likeliest cause found.) Elsewhere (tests run the demo in a
    thread) the process's own handlers stay."""
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: stopping.set())
    return stopping


def run_neighborhood(root: Path | None, blocks: int, n: int, topology: str, *, port_base: int, loss: float,
                     preset: str, seed: int, scale: float, stopping: threading.Event | None = None,
                     say: Callable[[str], None] = lambda _: None) -> None:
    """The neighborhood demo (``silbato sim --blocks B``): as ``run_demo``, with B blocks and a broker."""
    stopping = stop_on_signals(stopping or threading.Event())
    keep = root is not None
    root = Path(root) if keep else Path(tempfile.mkdtemp(prefix="silbato-sim-"))
    hood = None
    try:
        hood = Neighborhood(root, blocks, n, topology=topology, loss=loss, preset=preset, seed=seed, scale=scale)
        hood.start()
        hood.serve(port_base)
        password = secrets.token_urlsafe(12)
        hood.add_captain(DEMO_CAPTAIN, password)
        control = f"http://127.0.0.1:{port_base}"
        say(f"Silbato neighborhood demo: {blocks} blocks of {n} node{'s' if n > 1 else ''} ({topology}, {preset}), "
            f"neighborhood {hood.name!r}, Mosquitto on {hood.broker.address}")
        for b, block in hood.blocks.items():
            say(f"  block {b} ({block.name}), bridge node {', '.join(map(str, hood.bridge_nodes))}: " + ", ".join(
                f"http://127.0.0.1:{hood.page_port(port_base, b, i)}/" for i in range(1, n + 1)))
        say(f"  control:     {control}/nodes")
        say(f"  captains:    /captain on every page: name {DEMO_CAPTAIN}, password {password}")
        say(f"  state:       {root}" + ("" if keep else " (removed at exit; --dir DIR keeps the state)"))
        say(f"Hold block 1's node 1:  curl -X POST '{control}/blocks/1/nodes/1/hold?seconds=3'")
        say(f"Block 2's link down:    curl -X POST {control}/blocks/2/link/down   (and .../link/up)")
        say("Ctrl-C stops the neighborhood.")
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if hood is not None:
            hood.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
        say(json.dumps({"stopped": True, "state": str(root), "kept": keep}))


def _cannot_listen(what: str, host: str, port: int, exc: Exception) -> ListenError:
    reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
    return ListenError(f"{what} cannot listen on {host}:{port}: {reason}; choose another --port-base")


DEMO_CAPTAIN = "demo"


def run_demo(root: Path | None, n: int, topology: str, *, port_base: int, loss: float, preset: str, seed: int,
             scale: float, radio: str = "air", stopping: threading.Event | None = None,
             say: Callable[[str], None] = lambda _: None, sms: bool = False) -> None:
    """The block demo: run until Ctrl-C, SIGTERM or SIGHUP (or ``stopping`` is set), telling ``say`` where to look.

    The nodes keep their files under ``root``; without one, in a new temporary folder that is
    removed when the block stops. Every node's console has captain ``demo``, with a password
    made for this run and said in the banner. The last line said is JSON,
    ``{"stopped": true, "state": <folder>, "kept": <whether the folder is still there>}``.
    """
    if sms:
        from node.gateway.dummy import GAMMU_SMSD, SmsdError

        if GAMMU_SMSD is None:
            raise SmsdError("--sms runs the real gammu-smsd on Gammu's dummy phone, and gammu-smsd is not "
                            "installed (Debian: apt-get install gammu-smsd)")
    stopping = stop_on_signals(stopping or threading.Event())
    keep = root is not None
    root = Path(root) if keep else Path(tempfile.mkdtemp(prefix="silbato-sim-"))
    block = None
    try:
        block = Block(root, n, topology, loss=loss, preset=preset, seed=seed, scale=scale, radio=radio, sms=sms)
        block.start()
        block.serve(port_base)
        password = secrets.token_urlsafe(12)
        block.add_captain(DEMO_CAPTAIN, password)
        for line in banner(n, topology, port_base=port_base, loss=loss, preset=preset, radio=radio,
                           password=password, root=root, keep=keep,
                           sms_passphrase=block.sms.passphrase if block.sms else None):
            say(line)
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        if block is not None:
            block.stop()
        if keep:
            log.info("block stopped; state kept in %s", root)
        else:
            shutil.rmtree(root, ignore_errors=True)
            log.info("block stopped; removed %s", root)
        say(json.dumps({"stopped": True, "state": str(root), "kept": keep}))


def banner(n: int, topology: str, *, port_base: int, loss: float, preset: str, radio: str, password: str,
           root: Path, keep: bool, sms_passphrase: str | None = None) -> list[str]:
    """What the demo says at start: where the pages are, how to log in, what to try."""
    control = f"http://127.0.0.1:{port_base}"
    lines = [f"Silbato block demo: {n} node{'s' if n > 1 else ''}, {topology} topology, {preset}, "
             f"{loss:.0%} loss per link, "
             f"{'real meshtastic library on simulated radios' if radio == 'serial' else 'simulated air'}"]
    lines += [f"  node {i} page: http://127.0.0.1:{port_base + i}/" for i in range(1, n + 1)]
    lines += [f"  control:     {control}/nodes",
              f"  captains:    http://127.0.0.1:{port_base + 1}/captain (every page has one): "
              f"name {DEMO_CAPTAIN}, password {password}",
              f"  state:       {root}" + ("" if keep else " (removed at exit; --dir DIR keeps the state)")]
    steps = [("Hold node 1's button:", f"curl -X POST '{control}/nodes/1/hold?seconds=3'")]
    if n > 1:
        confirmer = min(3, n)  # a node cannot confirm its own report; node 3, as in the README's walk-through
        steps += [(f"Confirm from node {confirmer}:", f"curl -X POST {control}/nodes/{confirmer}/confirm"),
                  ("All clear from node 1:", f"curl -X POST {control}/nodes/1/all_clear")]
    else:
        steps += [("Withdraw it:", f"curl -X POST {control}/nodes/1/cancel   "
                                   "(confirming needs a second node: --nodes 2 or more)")]
    lines += [f"{label:<23}{command}" for label, command in steps]
    if sms_passphrase is not None:
        ana, pin, _ = SIM_RESPONDERS[0]
        lines += [f"SMS gateway on node 1 (gammu-smsd, dummy phone), lists unlocked with passphrase {sms_passphrase}",
                  "  responders: " + ", ".join(f"{number} PIN {p} ({lang})" for number, p, lang in SIM_RESPONDERS),
                  "  broad list: " + ", ".join(f"{number} ({lang})" for number, lang in SIM_BROAD)]
        text_in = f"curl -X POST {control}/sms/in -H 'Content-Type: application/json' -d"
        sms_steps = [("Text a tip:", f"""{text_in} '{{"from": "+15550100999", "text": "Vans on Elm St"}}'"""),
                     ("Report by text:", f"""{text_in} '{{"from": "{ana}", "text": "REPORT 101 {pin}"}}'"""),
                     ("Texts sent:", f"curl {control}/sms/out")]
        lines += [f"{label:<23}{command}" for label, command in sms_steps]
    lines.append("Ctrl-C stops the block.")
    return lines
