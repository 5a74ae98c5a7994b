"""``silbato sim``: a whole block in one process.

N complete nodes, each with gpiozero mock pins, its own SQLite file, its own key
on one shared signed roster, and its own web page on ``127.0.0.1:port_base+i``.
They talk through the simulated air (``node.radio.sim_air``). The control endpoint on
``127.0.0.1:port_base`` exists only in the sim:

- ``GET /nodes``: the nodes, their page URLs and active alerts;
- ``POST /nodes/<i>/hold?seconds=S``: hold node i's panic button for S seconds;
- ``POST /nodes/<i>/confirm|all_clear|cancel?alert=ID``: a captain's action on node i
  (without ``alert``: the newest active alert that node holds).
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from node import config as config_mod
from node.daemon.node import Node
from node.errors import SilbatoError
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
              overrides: dict[str, Any] | None = None) -> BlockFiles:
    """Create keys, a signed roster and a config for nodes 1..n under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    organizer = SigningKey.generate()
    (root / "organizer.pub").write_text(organizer.public_b64 + "\n")
    keys = {i: SigningKey.create(root / f"node{i}" / "node.key", force=True) for i in range(1, n + 1)}
    body = {"block": block, "version": 1, "nodes": [
        {"id": i, "name": f"B{i}", "location": 100 + i, "place": f"Building {i}",
         "public_key": keys[i].public_b64} for i in keys]}
    document = sign_roster(body, organizer)
    configs = []
    for i in keys:
        state = root / f"node{i}"
        install_roster(document, organizer.public, state / "roster.json")
        values = {"node.state_dir": str(state), "node.organizer_key": str(root / "organizer.pub"),
                  "hardware.hold_time": hold_time, **(overrides or {})}
        configs.append(config_mod.from_mapping(values, source="sim"))
    return BlockFiles(root, organizer, configs)


class Block:
    """N nodes on one simulated air. ``scale=None`` runs on virtual time (drive it with ``air.scheduler``)."""

    EPOCH = 1_800_000_000.0  # virtual-time runs start here, so tests are repeatable

    def __init__(self, root: Path, n: int = 5, topology: str = "line", *, loss: float = 0.0,
                 preset: str = "MEDIUM_FAST", seed: int = 1, scale: float | None = None,
                 hold_time: float = 2.0, overrides: dict[str, Any] | None = None, radio: str = "air"):
        if radio not in ("air", "serial"):
            raise ValueError(f"unknown radio {radio!r}: expected air or serial")
        if radio == "serial" and scale is None:
            raise ValueError("simulated serial radios run on the wall clock: give a scale")
        self.radio = radio
        self.seed = seed
        self.files = provision(root, n, hold_time=hold_time, overrides={"radio.preset": preset, **(overrides or {})})
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

    def start(self) -> "Block":
        try:
            if self.scheduler.scale is not None:
                self.scheduler.start()
            for i, cfg in enumerate(self.files.configs, start=1):
                node = Node(cfg, link=self._link(i, cfg), pin_factory=self.factories[i], clock=self.clock,
                            rng=random.Random(self.seed * 1000 + i))
                self.nodes[i] = node.start()
                # Each node ticks once a second at its own phase, as real nodes booted at random moments do.
                phase = 0.001 + random.Random(self.seed * 7919 + i).random() * 0.998
                self.scheduler.every(1.0, lambda i=i: self._tick(i), offset=phase)
        except BaseException:
            self.stop()
            raise
        return self

    def _tick(self, i: int) -> None:
        node = self.nodes.get(i)
        if node is not None:
            node.tick()

    def restart(self, i: int) -> Node:
        """Stop node i and start it again on the same files, radio and pins (a reboot)."""
        old = self.nodes.pop(i)
        old.stop()
        node = Node(old.config, link=old.link, pin_factory=self.factories[i], clock=self.clock,
                    rng=random.Random(self.seed * 1000 + i + 500))
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
        for server in reversed(self._servers):
            server.shutdown()
        self._servers.clear()
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
        """Press node i's button now and release it ``seconds`` (wall clock) later. Returns at once."""
        pin = self.button_pin(i)
        pin.drive_low()
        timer = threading.Timer(seconds, pin.drive_high)
        timer.daemon = True
        timer.start()

    def newest_active(self, i: int) -> str:
        active = self.nodes[i].store.active_alerts()
        if not active:
            raise SilbatoError(f"node {i} holds no active alert")
        return active[-1].id

    # -- web pages and the control endpoint ---------------------------------------------

    # Live pages per simulated node: each holds a server thread, and the sim runs many nodes.
    SIM_LIVE_CLIENTS = 20

    def serve(self, port_base: int, host: str = "127.0.0.1") -> None:
        """Node i's page on port_base+i (waitress, as on a node), the control endpoint on port_base."""
        from werkzeug.serving import make_server

        from web import create_app, server, settings

        control = make_server(host, port_base, self.control_app(port_base, host), threaded=True)
        threading.Thread(target=control.serve_forever, name=f"web-{port_base}", daemon=True).start()
        self._servers.append(control)
        for i, cfg in enumerate(self.files.configs, start=1):
            app = create_app({**settings(cfg), "EXEMPT_LOOPBACK": True, "LIVE_CLIENTS": self.SIM_LIVE_CLIENTS,
                              "CLOCK": self.clock,
                              "ON_REQUEST": self._nudge(i)})
            self._servers.append(server.Server(app, host, port_base + i,
                                               live_clients=self.SIM_LIVE_CLIENTS).start())

    def _nudge(self, i: int):
        """Node i picks up a captain's request from its page at once (a real daemon polls for them)."""
        return lambda: self.scheduler.after(0, self.nodes[i].process_requests)

    def control_app(self, port_base: int, host: str):
        from flask import Flask, abort, jsonify, request

        app = Flask("silbato-sim")

        def node_or_404(i: int) -> Node:
            if i not in self.nodes:
                abort(404, f"no node {i}")
            return self.nodes[i]

        @app.get("/nodes")
        def nodes():
            """The block's nodes, their pages and the alerts each holds."""
            return jsonify([{"node": i, "name": f"B{i}", "url": f"http://{host}:{port_base + i}/",
                             "active": [a.id for a in n.store.active_alerts()]}
                            for i, n in sorted(self.nodes.items())])

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
            self.hold(i, seconds)
            return jsonify({"node": i, "held_for": seconds})

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

        return app


def run_demo(root: Path, n: int, topology: str, *, port_base: int, loss: float, preset: str, seed: int,
             scale: float, radio: str = "air", stopping: threading.Event | None = None,
             say: Callable[[str], None] = lambda _: None) -> None:
    """The block demo: run until Ctrl-C (or ``stopping`` is set), telling ``say`` where to look.

    The last line said is JSON, ``{"stopped": true, "state": <root>}``.
    """
    stopping = stopping or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    block = Block(root, n, topology, loss=loss, preset=preset, seed=seed, scale=scale, radio=radio)
    block.start()
    try:
        block.serve(port_base)
        say(f"Silbato block demo: {n} nodes, {topology} topology, {preset}, {loss:.0%} loss per link, "
            f"{'real meshtastic library on simulated radios' if radio == 'serial' else 'simulated air'}")
        for i in block.nodes:
            say(f"  node {i} page: http://127.0.0.1:{port_base + i}/")
        say(f"  control:     http://127.0.0.1:{port_base}/nodes")
        say(f"Hold node 1's button: curl -X POST 'http://127.0.0.1:{port_base}/nodes/1/hold?seconds=3'")
        say(f"Confirm from node 3:  curl -X POST http://127.0.0.1:{port_base}/nodes/3/confirm")
        say("Ctrl-C stops the block.")
        while not stopping.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        block.stop()
        log.info("block stopped; state kept in %s", root)
        say(json.dumps({"stopped": True, "state": str(root)}))
