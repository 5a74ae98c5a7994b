"""The node daemon's wiring: start its parts in dependency order, stop them in reverse.

``Node`` joins the key and roster, the store, the hardware and a radio link, and hands
the work to collaborators that each own one job (times are seconds, ``now`` passed in):

- ``Signer`` (signer.py): counter, frame, bytes; the one place this node's frames are made;
- ``Desk`` (desk.py): the alert desk: the buttons, local and remote transitions, re-sends, expiry;
- ``Inbox`` (inbox.py): frames heard on the air: verify, limit floods, hand on;
- ``Outbox`` (outbox.py): frames and texts to the radio, and the sender thread;
- ``Relays`` and ``Receipts`` (relays.py): passing frames on, repairs, receipts;
- ``Liveness`` (liveness.py): heartbeats, polls, verdicts, the peers' rows;
- ``Troubles`` (troubles.py): TROUBLE lines and the status light;
- ``Chores`` (chores.py): captains' requests, the weekly self-test, the purge;
- ``EvidenceDesk`` (evidence.py): neighbors' sealed evidence checked and chained in the signed manifest;
- ``Neighborhood`` (neighborhood.py): on a bridge node, alerts to and from the other blocks through the
  bridge's queues; on every node, NEARBY alerts.

Its entry points are called from any thread (the button's, the radio's, the main loop's)
and are serialised by one lock, ``Node.lock``, which the collaborators share:

- ``report()``, ``act()``: this node's own actions (button, captain);
- ``on_frame(bytes)``: a frame heard on the air;
- ``tick()``: captains' requests, expiry, re-sends, heartbeats, the outbox and the purge,
  about once a second, each in its own ``try``;
- ``process_requests()``: captains' requests from the web page, polled more often than ``tick``.

``silbato run`` (signals, sd_notify, the watchdog) is in runtime.py.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import random
import threading
import time
from pathlib import Path
from typing import Callable

from node import config as config_mod
from node import statedir
from node.config import Config
from node.daemon.chores import Chores
from node.daemon.desk import Desk
from node.daemon.evidence import EvidenceDesk
from node.daemon.inbox import Inbox
from node.daemon.liveness import Liveness, make_supervisor
from node.daemon.neighborhood import Neighborhood
from node.daemon.outbox import Outbox
from node.daemon.relays import Receipts, Relays
from node.daemon.signer import Signer
from node.daemon.troubles import Troubles
from node.daemon.wipe import clock_floor, counter_floor, node_files, requested as wipe_requested
from node.shred import destroy
from node.errors import FrameError, RosterError
from node.hardware import speech
from node.hardware.devices import Hardware
from node.protocol import supervision, wire
from node.protocol.alerts import Alert, Kind
from node.protocol.keys import load_identity
from node.protocol.ratelimit import OriginRateLimit
from node.radio.link import Link, NullLink

log = logging.getLogger(__name__)

WIPE_NOTICE_WAIT = 3.0   # seconds (wall clock) the wipe gives the sender to hand its last heartbeat to the radio


AIR_EVERY = 0.2   # seconds between two ``Node.air_tick``s (the daemon's loop, the simulated block)

class Node:
    """One building's node. Call ``start()`` before use and ``stop()`` after."""

    def __init__(self, config: Config, *, link: Link | None = None, pin_factory=None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 evidence_thread: bool = True):
        self.config = config
        self._evidence_thread = evidence_thread  # False: evidence is hashed inline in the tick (virtual time)
        self.clock = clock
        # Jitter for re-sends, receipts and heartbeats, shared by every collaborator: nodes that act
        # at the same moment must not keep transmitting at the same moment, or they collide every
        # time; and one generator per node makes a seeded simulation repeat.
        self.rng = rng or random.Random()
        self.link = link or NullLink()
        self.pin_factory = pin_factory
        self.counts: collections.Counter[str] = collections.Counter()
        self.lock = threading.RLock()
        self._changed = threading.Condition(self.lock)  # notified after every committed change
        self._stack = contextlib.ExitStack()             # what ``stop`` undoes, last started first
        self._tick_chores: tuple[tuple[str, Callable[[float], None]], ...] = ()  # what ``tick`` runs, in order
        self._air_chores: tuple[tuple[str, Callable[[float], None]], ...] = ()  # and ``air_tick``
        self.rate_limit = OriginRateLimit()
        self.id = 0
        self.location = 0
        self.wiped = False
        self._wiping = False   # set as a wipe begins: no chore starts on what it is destroying

    # -- lifecycle of the daemon itself ------------------------------------------------

    def start(self) -> Node:
        """Key and roster, store, supervision, hardware, collaborators, radio, sender. Undo what started on failure."""
        try:
            self._load_identity()
            self._open_store()
            self._start_supervision()
            self._start_hardware()
            self._start_collaborators()
            self._start_link()
            self._start_sender()
        except BaseException:
            self.stop()
            raise
        log.info("node %s (%s) started: roster v%s, %d nodes", self.id, self._me.name, self.roster.version,
                 len(self.roster.members))
        self.tick()
        return self

    def _load_identity(self) -> None:
        identity = load_identity(self.config)  # RosterError if this key is not (or no longer) on the roster
        self.key, self.roster, self._me = identity.key, identity.roster, identity.me
        self.id, self.location = identity.me.id, identity.me.location
        self.members = sorted(self.roster.members)
        self._apply_block_settings()

    def _apply_block_settings(self) -> None:
        """From here on ``self.config`` holds the roster's block-wide settings (preset, supervision...)
        in place of this node's own, so that every node supervises the same way; said once in the log."""
        try:
            self.config = config_mod.with_roster(self.config, self.roster)
        except RosterError as exc:  # a bad value's key named; the node cannot start on this roster
            log.error("TROUBLE (roster): %s", exc)
            raise
        if self.config.block.disagreements():
            log.warning("block-wide settings: %s", config_mod.describe_block(self.config))
        else:
            log.info("block-wide settings: %s", config_mod.describe_block(self.config))

    def _open_store(self) -> None:
        self.store = statedir.open_store(self.config)   # db/ is the only part the page's user may write
        statedir.prepare_evidence_dir(self.config)      # and evidence/, where it writes sealed items
        self._on_stop(self.store.close)
        self.store.sync_peers(self.roster)
        # For the web page: which building is "this node", and the block's name for exports.
        self.store.set_meta("node_id", str(self.id))
        self.store.set_meta("block", self.roster.block)
        # For the incident bundle: the roster that signed its frames, and the organizers' key that signed it.
        self.store.set_meta("roster", json.dumps(self.roster.document, sort_keys=True))
        try:
            self.store.set_meta("organizer_key", Path(self.config["node.organizer_key"]).read_text().strip())
        except OSError as exc:  # it was read a moment ago, to check the roster
            log.warning("%s: %s; bundles will not carry the organizers' key", self.config["node.organizer_key"], exc)
        # The page lists missing buildings by the block's receipt timeout, which may be the roster's.
        self.store.set_meta("receipt_timeout", repr(self.config["supervision.receipt_timeout"]))

    def _start_supervision(self) -> None:
        self.supervisor = make_supervisor(self.config, self.id, self.members, self.clock())

    def _start_hardware(self) -> None:
        places = {m.location: m.place for m in self.roster.members.values() if not m.revoked}
        self.hardware = Hardware(self.config, on_hold=self.button_held, on_press=self.button_pressed,
                                 on_confirm=self.confirm_held, on_wipe=lambda: self.wipe("both buttons"),
                                 speaker=speech.from_config(self.config, places), pin_factory=self.pin_factory,
                                 clock=self.clock)
        self._on_stop(self.hardware.close)

    def _start_collaborators(self) -> None:
        """The collaborators, each given what its job needs (and the node's lock, counts and rng)."""
        shared = {"rng": self.rng, "counts": self.counts}
        self.signer = Signer(self.id, self.store, self.key, self.roster, floor_file=counter_floor(self.config),
                             clock_file=clock_floor(self.config), now=self.clock())
        self.troubles = Troubles(self.store, self.roster, self.rate_limit, self.hardware)
        self.outbox = Outbox(self.link, self.store, self.troubles, lock=self.lock, clock=self.clock, counts=self.counts,
                             own=self._signed_here)
        self.relays = Relays(self.store, self.outbox, preset=self.config["radio.preset"],
                             neighbours=self._live_neighbours, **shared)
        self.outbox.on_air = self.relays.on_air
        self.receipts = Receipts(self.id, self.members, self.roster, self.store, self.signer, self.outbox,
                                 relays=self.relays, neighbours=self._live_neighbours,
                                 preset=self.config["radio.preset"], **shared)
        self.liveness = Liveness(self.id, self.members, self.roster, self.config, store=self.store,
                                 supervisor=self.supervisor, signer=self.signer, outbox=self.outbox,
                                 relays=self.relays, troubles=self.troubles, link=self.link, **shared)
        self.liveness.on_back = self.receipts.neighbour_back
        self.desk = Desk(self.id, self.location, self.members, self.roster, self.config, store=self.store,
                         signer=self.signer, hardware=self.hardware, outbox=self.outbox, relays=self.relays,
                         receipts=self.receipts, liveness=self.liveness, troubles=self.troubles, clock=self.clock,
                         lock=self.lock, changed=self._changed, **shared)
        self.neighborhood = Neighborhood(self.config, self.id, self.roster, self.store, signer=self.signer,
                                         outbox=self.outbox, relays=self.relays, hardware=self.hardware,
                                         counts=self.counts)
        self.inbox = Inbox(self.id, self.roster, self.store, self.rate_limit, desk=self.desk,
                           liveness=self.liveness, neighborhood=self.neighborhood,
                           relays=self.relays, receipts=self.receipts, troubles=self.troubles, counts=self.counts,
                           clock=self.clock, lock=self.lock, changed=self._changed)
        self.chores = Chores(self.config, self.store, self.desk)
        self.evidence = EvidenceDesk(self.id, self.roster.block, self.store, self.key, self.config.evidence_dir,
                                     keep=self.config["evidence.keep"], max_item=self.config["evidence.max_item"])
        if self._evidence_thread:  # large items are hashed off the node's lock (not in the simulation)
            self.evidence.start()
            self._on_stop(self.evidence.stop)
        self._air_chores = (("relays", self.relays.due), ("heartbeat", self.liveness.heartbeat),
                            ("receipts", self.receipts.due))
        self._tick_chores = (
            ("captains' requests", self.chores.process_requests),
            ("flooding", self.troubles.calm),
            ("expiry", self.desk.expire),
            ("re-sends", self.desk.repeat),
            ("relays", self.relays.due),
            ("verdicts", self.liveness.verdicts),
            ("polls", self.liveness.poll),
            ("heartbeat", self.liveness.heartbeat),
            ("receipts", self.receipts.due),
            ("peers' rows", self.liveness.record_peers),
            ("mesh check", self.liveness.check_mesh),
            ("self-test", self.chores.selftest),
            ("neighborhood", self.neighborhood.tick),
            ("outbox", self.outbox.flush),
            ("retention purge", self.chores.purge),
            ("evidence", self.evidence.tick),
            ("speaker check", self.troubles.check_speaker),
            ("status light", lambda now: self.troubles.show()),
        )

    def _start_link(self) -> None:
        self.link.start(self.on_frame, self.on_refused)
        self._on_stop(self.link.stop)

    def _start_sender(self) -> None:
        if not self.link.instant:  # a link whose send may block gets its own thread
            self.outbox.start()
            self._on_stop(self.outbox.stop)

    def _on_stop(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` at ``stop`` (last registered, first called); a failure is logged and the rest still run."""
        def close() -> None:
            try:
                closer()
            except Exception:
                log.exception("stopping %s failed", closer)
        self._stack.callback(close)

    def stop(self) -> None:
        """Stop subsystems in reverse order; one failing does not keep the others running."""
        self._stack.close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Block until ``predicate()`` holds after a change (checked under the node's lock); ``timeout`` in seconds."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- entry points, handed to the collaborators ---------------------------------------------

    def button_held(self) -> Alert | None:
        return self.desk.button_held()

    def button_pressed(self) -> bool:
        return self.desk.button_pressed()

    def confirm_held(self) -> Alert | None:
        return self.desk.confirm_held()

    def report(self, kind: Kind = Kind.RAID, location: int | None = None) -> Alert:
        """Report ``kind`` at ``location`` (default: this node's). Merges into a recent report there."""
        return self.desk.report(kind, location)

    def act(self, action: str, alert_id: str) -> Alert:
        """A captain's ``confirm``, ``all_clear`` or ``cancel`` on ``alert_id``."""
        return self.desk.act(action, alert_id)

    def coverage_view(self, alert_id: str, now: float | None = None) -> dict:
        """Who has received and sounded an alert's current state, and who is missing."""
        return self.desk.coverage_view(alert_id, now)

    def on_frame(self, data: bytes) -> None:
        """Verify, apply and sound one frame heard on the air. Never raises."""
        self.inbox.on_frame(data)

    def on_refused(self, frame: bytes, reason: str) -> None:
        """The radio took a frame but refused to transmit it: queue it again if that may pass."""
        self.outbox.on_refused(frame, reason)

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between this node's heartbeats, as last sized."""
        return self.liveness.heartbeat_interval

    @property
    def heartbeat_airtime(self) -> float:
        """Seconds on air of one of this node's heartbeats."""
        return self.liveness.heartbeat_airtime

    # -- housekeeping ----------------------------------------------------------------------

    def tick(self) -> None:
        """About once a second: each chore in turn, each in its own ``try``. Never raises.

        One chore failing (say, a full disk during expiry) is logged and counted, and the
        others still run: re-sends, heartbeats and the outbox do not wait for it.
        """
        self._run_chores(self._tick_chores, notify=True)

    def air_tick(self) -> None:
        """Between ticks (every ``AIR_EVERY`` seconds): send the relays, receipts and heartbeats due
        by now. Never raises.

        Their random waits exist so that neighbours hidden from each other do not transmit at
        the same moment; rounded up to each node's one-second tick, they did anyway. Two nodes
        whose ticks fall within one airtime of each other collided at the node between them
        each time both had something to send in the same second (P3, seed 1: a reporter's one
        link into the block lost 8 copies in a row to a neighbour's receipts there)."""
        self._run_chores(self._air_chores)

    def _run_chores(self, chores: tuple[tuple[str, Callable[[float], None]], ...], *, notify: bool = False) -> None:
        """Run ``chores`` in turn under the node's lock, each in its own ``try``, and with ``notify``
        wake those waiting for a change; none once a wipe began (a captains' request, the
        buttons: nothing is left to look after)."""
        if self.wiped or self._wiping:
            return
        with self.lock:
            now = self.clock()
            for name, chore in chores:
                if self.wiped or self._wiping:   # a wipe began, perhaps while this waited for the lock
                    return
                try:
                    chore(now)
                except Exception:
                    self.counts["error"] += 1
                    log.exception("housekeeping (%s) failed; the node goes on", name)
            if notify:
                self._changed.notify_all()

    def process_requests(self) -> None:
        """Apply the captains' pending requests now. Never raises."""
        if self.wiped:
            return
        try:
            with self.lock:
                self.chores.process_requests(self.clock())
        except Exception:
            self.counts["error"] += 1
            log.exception("captains' requests failed; the node goes on")

    def _live_neighbours(self, now: float) -> set[int]:
        """The buildings heard first-hand and not silent: the ones receipts and repairs are for."""
        return self.supervisor.neighbours - self.supervisor.silent(now)

    def _signed_here(self, frame: bytes) -> bool:
        """Whether ``frame`` carries this node's valid signature (the outbox sends nothing else)."""
        try:
            return wire.decode(frame, self.roster).origin == self.id
        except FrameError:
            return False

    def wipe_if_asked(self) -> bool:
        """Wipe if ``silbato wipe`` asked (``node.daemon.wipe.ask``). Call without the node's lock."""
        if self.wiped or self._wiping or not wipe_requested(self.config):
            return False
        self.wipe("silbato wipe")
        return True

    def wipe(self, why: str) -> list:
        """Destroy this node's key, database and captains' accounts, after telling the block.

        The last heartbeat carries the ``wiped`` trouble bit, so every node shows that this
        building must be revoked. Then the files are overwritten and removed, and the node
        stops: without its key it cannot start again. Takes well under ``wipe.WIPE_WITHIN``.
        """
        started = time.monotonic()
        self._wiping = True
        log.critical("WIPE (%s): telling the block, then destroying the key and the database", why)
        with self.lock:
            try:
                signed = self.signer.sign(wire.HeartbeatFrame, supervision.trouble_mask(["wiped"]),
                                          self.roster.version, 0, 0, 0, b"", self.signer.stamp(self.clock()))
                self.outbox.send_first(signed.data)
            except Exception as exc:  # the wipe goes on whatever the radio or the disk says
                log.error("wipe: could not tell the block: %s", exc)
        self.outbox.drain(WIPE_NOTICE_WAIT)
        self.stop()
        destroyed = destroy(node_files(self.config))
        log.critical("WIPE done in %.1f s: %s", time.monotonic() - started,
                     ", ".join(str(p) for p in destroyed) or "nothing left to destroy")
        self.wiped = True
        return destroyed
