"""The neighborhood: this block's alerts out to the broker, the other blocks' in, and NEARBY alerts.

The bridge (``silbato bridge``) talks to the MQTT broker; this is where the daemon meets it,
through the store's queues (``node.bridgequeue``). Only when ``neighborhood.name`` is set.

On a bridge node (``bridge.enabled``), once a tick:

- **out**: this block's public roster (no place names), retained under ``<block>/roster`` (at
  start and when it changes; the neighborhood roster under ``roster`` is the organizers' to
  publish, and the broker's ACL lets no block write it); then each accepted
  transition of a raid of this block into a crossing state (the policy), its signed frame as
  sent or received (``events.frame``) under ``<block>/frames``, once per (incident, state)
  across restarts (``neighborhood_shared``, in the transaction that queues it);
- **in**: each message the bridge took, in order, consumed in the transaction that acted on
  it: a newer neighborhood roster (verified against ``neighborhood.organizer_key``); a
  member block's roster (verified against that block's ``organizer_key``, version only
  rising); a member block's frame, verified against that block's roster with a replay window
  per (block, origin). An accepted transition into a crossing state, from a block the policy
  lets cross to this one, becomes a NEARBY frame this node signs and sends on the local mesh,
  unless a NEARBY of that state was heard already (the block's other bridge node).
  Anything else is dropped and counted by reason (``DROP_REASONS``, ``neighborhood_drops``),
  logged once per burst of a reason, never shown.

On every node, a NEARBY from a roster member (``accept``, from the inbox) is kept in the
``nearby`` table, one row per (foreign block, foreign alert, state), and chimes once.
"""

from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

from node.bridgequeue import MAX_PAYLOAD, PREFIX, BridgeQueue, topic
from node.errors import FrameError, RosterError, SilbatoError, StoreError
from node.protocol import wire
from node.protocol.alerts import ENDED, Kind, State
from node.protocol.keys import Roster, load_public
from node.protocol.neighborhood import NEARBY_FOR, NeighborhoodRoster, Policy, newer_than, policy_from_settings, roster_path, \
    write_document
from node.protocol.ratelimit import OriginRateLimit
from node.store import Store

log = logging.getLogger(__name__)

INCOMING_BATCH = 100      # messages taken from the bridge per tick, in one transaction
# Seconds after its first copy at which a bridge node sends its NEARBY again (random within each
# window). A NEARBY has no receipts, and one copy can be lost on air (a collision, a node
# transmitting at that moment): the repeats reach a node that missed it; a node that has it
# drops them as replays. Three copies of 89 bytes per nearby state change.
NEARBY_REPEATS = ((15.0, 25.0), (60.0, 90.0))
# The NEARBY frames a bridge node signs, all blocks and repeats together: at most this many at
# once, then this many a second. Every node counts a bridge node's frames against its flood
# limit (node/protocol/ratelimit.py: 30 at once, then 20 a minute), so a busy neighborhood
# (or one rogue member block, or a broker's backlog) must never get the bridge node's own
# alerts dropped on its own block. Over it, first copies wait (newest state of each alert
# only) and repeats are skipped.
NEARBY_BURST = 6
NEARBY_RATE = 6 / 60.0
NEARBY_WAITING = 200      # first copies waiting for the budget at most (the oldest go first)
REPEAT_LATE = 1800.0      # seconds: a repeat that could not go out this long after it was due is skipped
DROP_LOG_GAP = 300.0      # seconds: a reason is logged again only after this long without it
# A block sends a few crossing states an hour; a block past this is flooding (per block, verified frames only).
BLOCK_BURST = 30
BLOCK_RATE = 20 / 60.0

DROP_REASONS = ("unknown-block", "bad-signature", "revoked", "replay", "stale-roster", "unknown-roster",
                "oversized", "not-silbato", "not-neighbor", "not-crossing", "flooding")
# wire.decode's reasons, as the neighborhood counts them
_FRAME_REASONS = {"oversized": "oversized", "bad-signature": "bad-signature", "unknown-key": "stale-roster",
                  "revoked-key": "revoked", "replayed": "replay"}


class Drop(Exception):
    """A foreign message refused: ``reason`` is one of ``DROP_REASONS``."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class _Budget:
    """A token bucket that, unlike the flood limit, spends nothing when it says no (we wait, not punish)."""

    def __init__(self, burst: int, rate: float):
        self.burst, self.rate = float(burst), rate
        self.left, self.when = float(burst), None

    def take(self, now: float) -> bool:
        if self.when is not None:
            self.left = min(self.burst, self.left + max(0.0, now - self.when) * self.rate)
        self.when = now
        if self.left >= 1:
            self.left -= 1
            return True
        return False


class Neighborhood:
    """The neighborhood desk of one node. Callers hold the node's lock."""

    def __init__(self, config, me: int, roster: Roster, store: Store, *, signer, outbox, relays, hardware,
                 counts: collections.Counter[str]):
        self.config, self.me, self.roster, self.store = config, me, roster, store
        self.signer, self.outbox, self.relays, self.hardware, self.counts = signer, outbox, relays, hardware, counts
        self.name: str = config["neighborhood.name"]
        self.bridge = bool(self.name) and bool(config["bridge.enabled"])
        self.fallback: Policy = policy_from_settings(config)   # ConfigError, naming the key
        self.queue = BridgeQueue(store)
        self.rate = OriginRateLimit(BLOCK_BURST, BLOCK_RATE)
        self.hood: NeighborhoodRoster | None = None
        self._organizer = None
        self._foreign: dict[str, Roster] = {}
        self._cursor = 0                 # the last event looked at for sharing
        self._published: str | None = None
        self._last_logged: dict[str, float] = {}
        self._budget = _Budget(NEARBY_BURST, NEARBY_RATE)
        # (block code, reporter, counter) -> (state, location, since): first copies over the budget
        self._waiting: collections.OrderedDict[tuple[int, int, int], tuple[State, int, float]] = \
            collections.OrderedDict()
        self._repeats: list[tuple[float, bytes]] = []   # (due, frame): the repeats of NEARBY sent
        if self.name:
            self._load_hood()
            if self.bridge and self.hood is not None:
                self._prune_foreign()

    def _load_hood(self) -> None:
        path = roster_path(self.config)
        try:
            self._organizer = load_public(Path(self.config["neighborhood.organizer_key"]))
            self.hood = NeighborhoodRoster.load(path, self._organizer)
        except SilbatoError as exc:
            log.error("neighborhood %s: %s; nearby alerts show block codes, and a bridge node takes no "
                      "other block's frames until a neighborhood roster is installed", self.name, exc)
            return
        if self.hood.name != self.name:
            log.error("neighborhood roster %s is of neighborhood %r, not neighborhood.name %r: not used",
                      path, self.hood.name, self.name)
            self.hood = None

    # -- once a tick ---------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if not self.bridge:
            return
        self.publish_rosters(now)
        self.share(now)
        self.take(now)
        self.send_nearby(now)

    def publish_rosters(self, now: float) -> None:
        """This block's public roster, retained (at start and when it changes)."""
        public = self.roster.public_document()   # no place names: they never leave the block
        if public is None:
            if self._published != "unsigned":
                self._published = "unsigned"
                log.error("neighborhood %s: the block roster v%d has no public_signature (signed before "
                          "version 0.1 of the neighborhood): re-sign it with 'silbato roster sign' and install "
                          "it; until then other blocks cannot check this block's alerts", self.name,
                          self.roster.version)
                self.store.set_trouble("neighborhood roster", "the block roster must be signed again to be "
                                       "shared with the neighborhood ('silbato roster sign')", now)
            document = None
        else:
            document = json.dumps(public, sort_keys=True, ensure_ascii=False)
        if document is not None and document != self._published:
            self.store.clear_trouble("neighborhood roster")
            self.queue.publish(topic(self.name, self.roster.block), document.encode("utf-8"), now, retain=True)
            self._published = document
            log.info("neighborhood %s: block roster v%d queued for the broker (without place names)", self.name,
                     self.roster.version)

    def share(self, now: float) -> int:
        """Queue each new crossing state of this block's raids for the broker, once; returns how many."""
        states = self.hood.states(self.fallback) if self.hood else self.fallback.states
        shared = 0
        for event in self.store.crossing_events(self._cursor, now - NEARBY_FOR):
            self._cursor = event["id"]
            if State(event["state"]) not in states:
                continue
            try:
                frame = wire.decode(bytes(event["frame"]), self.roster)
            except FrameError:
                continue   # a frame of an older roster: it would not verify elsewhere either
            if not isinstance(frame, wire.TransitionFrame) or frame.kind is not Kind.RAID:
                continue
            with self.store.transaction():
                if self.store.mark_shared(event["alert_id"], frame.state, now):
                    self.queue.publish(topic(self.name, self.roster.block, "frames"), bytes(event["frame"]), now)
                    shared += 1
                    log.info("neighborhood %s: %s %s shared", self.name, event["alert_id"], frame.state.word)
        return shared

    def take(self, now: float) -> int:
        """Check the messages the bridge took, in order, in one transaction (a savepoint each);
        returns how many were taken. A message that fails is dropped and counted, never retried."""
        rows = self.queue.incoming(INCOMING_BATCH)
        chimes = []
        try:
            with self.store.transaction():
                for row in rows:
                    try:
                        with self.store.transaction():   # a savepoint: this message's effects, or none
                            try:
                                chime = self._take(row["topic"], bytes(row["payload"]), now)
                            except Drop as drop:
                                self._drop(drop, now)
                                chime = None
                            self.queue.consume(row["id"])
                    except StoreError:
                        raise
                    except Exception:
                        self.counts["error"] += 1
                        self._log_burst("error", now, "neighborhood %s: message %d on %s failed; dropped",
                                        self.name, row["id"], row["topic"][:120], exc_info=True)
                        self.queue.consume(row["id"])
                        continue
                    if chime is not None:
                        chimes.append(chime)
        except StoreError as exc:
            log.error("neighborhood %s: storage failed; %d messages kept for the next tick: %s",
                      self.name, len(rows), exc)
            return 0
        for chime in chimes:
            self.chime(chime)
        return len(rows)

    def _log_burst(self, key: str, now: float, message: str, *args, exc_info: bool = False) -> None:
        """Log at WARNING the first of a burst, then at DEBUG for ``DROP_LOG_GAP`` (a block cannot fill the log)."""
        last = self._last_logged.get(key)
        if last is None or now - last >= DROP_LOG_GAP:
            log.warning(message + "; more of these are counted, not logged, for %.0f s", *args, DROP_LOG_GAP,
                        exc_info=exc_info)
        else:
            log.debug(message, *args)
        self._last_logged[key] = now

    # -- in ----------------------------------------------------------------------------------

    def _take(self, where: str, payload: bytes, now: float) -> dict | None:
        parts = where.split("/")
        if len(parts) < 3 or parts[0] != PREFIX or parts[1] != self.name:
            raise Drop("not-silbato", f"topic {where[:80]!r}")
        if len(payload) > MAX_PAYLOAD:
            raise Drop("oversized", f"{len(payload)} bytes on {where}")
        if parts[2:] == ["roster"]:
            self._take_hood(payload, now)
            return None
        if len(parts) != 4 or parts[3] not in ("roster", "frames"):
            raise Drop("not-silbato", f"topic {where[:80]!r}")
        block = parts[2]
        if block == self.roster.block:
            self.counts["neighborhood-own-echo"] += 1   # our own messages, back from the broker
            return None
        entry = self.hood.block(block) if self.hood else None
        if entry is None:
            raise Drop("unknown-block", block[:48])
        if entry.revoked:
            raise Drop("revoked", block)
        if parts[3] == "roster":
            self._take_block_roster(block, entry, payload, now)
            return None
        return self._take_frame(block, payload, now)

    def _take_hood(self, payload: bytes, now: float) -> None:
        if self._organizer is None:
            raise Drop("unknown-roster", "no neighborhood.organizer_key to check the neighborhood roster against")
        try:
            document = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            raise Drop("not-silbato", "neighborhood roster: not JSON") from None
        try:
            roster = NeighborhoodRoster.parse(document, self._organizer)
        except RosterError as exc:
            raise Drop("bad-signature" if "signature" in str(exc) else "not-silbato", str(exc)) from None
        try:
            if not newer_than(roster, self.hood):
                if self.hood is not None and roster.version < self.hood.version:
                    raise Drop("stale-roster", f"neighborhood roster v{roster.version} < v{self.hood.version}")
                return   # the same one again (retained, or our own echo)
        except RosterError as exc:
            raise Drop("stale-roster", str(exc)) from None
        try:
            write_document(roster_path(self.config), document)
        except RosterError as exc:
            log.error("neighborhood %s: %s (kept in memory until a restart)", self.name, exc)
        self.hood = roster
        log.info("neighborhood %s: neighborhood roster v%d taken (%d blocks)", self.name, roster.version,
                 len(roster.blocks))
        self._prune_foreign()

    def _prune_foreign(self) -> None:
        """Forget every kept block roster (and its replay window) that the neighborhood roster no
        longer vouches for: its block gone or revoked, or its organizers' key replaced. Else a
        leaked old key's roster, kept, would go on verifying frames, or block the new one as stale."""
        for block, document in self.store.foreign_rosters().items():
            entry = self.hood.block(block) if self.hood else None
            try:
                if entry is None or entry.revoked:
                    raise RosterError("not a member any more")
                Roster.parse_public(json.loads(document), entry.organizer_key)
            except (RosterError, ValueError, TypeError, RecursionError) as exc:
                self.store.forget_foreign(block)
                self._foreign.pop(block, None)
                log.warning("neighborhood %s: block %s's kept roster is forgotten (%s); its next roster is "
                            "taken afresh", self.name, block, exc)

    def _take_block_roster(self, block: str, entry, payload: bytes, now: float) -> None:
        try:
            document = json.loads(payload.decode("utf-8"))
        except (ValueError, RecursionError):
            raise Drop("not-silbato", f"{block} roster: not JSON") from None
        try:
            roster = Roster.parse_public(document, entry.organizer_key)
        except (RosterError, ValueError, TypeError, RecursionError) as exc:
            raise Drop("bad-signature" if "signature" in str(exc) else "not-silbato", f"{block}: {exc}") from None
        if roster.block != block:
            raise Drop("unknown-block", f"roster of block {roster.block!r} under {block}")
        current = self.store.foreign_roster(block)
        text = json.dumps(document, sort_keys=True, ensure_ascii=False)
        if current is not None:
            if roster.version < current["version"] or (roster.version == current["version"]
                                                       and text != current["document"]):
                raise Drop("stale-roster", f"{block} roster v{roster.version}, have v{current['version']}")
            if text == current["document"]:
                return
        self.store.set_foreign_roster(block, roster.version, text, now)
        self._foreign[block] = roster
        log.info("neighborhood %s: block %s roster v%d taken", self.name, block, roster.version)

    def foreign(self, block: str) -> Roster | None:
        """The verified roster of another block, as last taken (None: not known here)."""
        if block not in self._foreign:
            row = self.store.foreign_roster(block)
            entry = self.hood.block(block) if self.hood else None
            if row is None or entry is None:
                return None
            try:
                self._foreign[block] = Roster.parse_public(json.loads(row["document"]), entry.organizer_key)
            except (RosterError, ValueError, TypeError, RecursionError):
                return None   # its block's organizer key changed in the neighborhood roster
        return self._foreign[block]

    def _take_frame(self, block: str, payload: bytes, now: float) -> dict | None:
        if len(payload) > wire.MAX_FRAME:
            raise Drop("oversized", f"{len(payload)} bytes from {block}")
        if not self.hood.crosses(block, self.roster.block, self.fallback):
            raise Drop("not-neighbor", block)
        roster = self.foreign(block)
        if roster is None:
            raise Drop("unknown-roster", f"no roster of {block} yet")
        try:
            frame = wire.decode(payload, roster, seen=lambda o, c: self.store.seen(o, c, block=block))
        except FrameError as exc:
            raise Drop(_FRAME_REASONS.get(exc.reason, "not-silbato"), f"{block}: {exc}") from None
        if not self.rate.allow(self.hood.block(block).code, now):
            raise Drop("flooding", block)
        self.store.mark_seen(frame.origin, frame.counter, block=block)
        if not isinstance(frame, wire.TransitionFrame) or frame.kind is not Kind.RAID or \
                frame.state not in self.hood.states(self.fallback):
            raise Drop("not-crossing", f"{block}: {type(frame).__name__}")
        self.counts["neighborhood-accepted"] += 1
        code = self.hood.block(block).code
        if self.store.has_nearby(code, frame.alert_reporter, frame.alert_counter, frame.state):
            self.counts["nearby-heard-first"] += 1   # the block's other bridge node told it already
            return None
        key = (code, frame.alert_reporter, frame.alert_counter)
        if self._waiting or not self._budget.take(now):
            self._wait(key, frame.state, frame.location, now)
            log.info("neighborhood %s: %s %s: NEARBY waits for the air budget (%d waiting)", self.name, block,
                     frame.state.word, len(self._waiting))
        else:
            self._sign_nearby(key, frame.state, frame.location, now)
            log.info("neighborhood %s: %s %s at location %d: NEARBY sent to the block", self.name, block,
                     frame.state.word, frame.location)
        return self._record(code, frame.alert_reporter, frame.alert_counter, frame.state, frame.location, self.me,
                            now)

    def _sign_nearby(self, key: tuple[int, int, int], state: State, location: int, now: float) -> None:
        """Sign a NEARBY and queue it in the outbox (durable, in the caller's transaction); plan its repeats."""
        signed = self.signer.sign(wire.NearbyFrame, *key, state, location, self.signer.stamp(now))
        self.store.enqueue(signed.data, now)
        self.counts["nearby-sent"] += 1
        for low, high in NEARBY_REPEATS:
            self._repeats.append((now + self.relays.rng.uniform(low, high), bytes(signed.data)))

    def _wait(self, key: tuple[int, int, int], state: State, location: int, now: float) -> None:
        waiting = self._waiting.get(key)
        if waiting is not None and waiting[0] >= state:
            return
        self._waiting[key] = (state, location, now)   # the newest state of that alert only
        self.counts["nearby-waiting"] += 1
        while len(self._waiting) > NEARBY_WAITING:
            self._waiting.popitem(last=False)
            self.counts["nearby-waiting-dropped"] += 1

    def send_nearby(self, now: float) -> None:
        """First copies that waited for the budget, oldest first; then, once none waits, the repeats
        due, as the budget allows (one more than ``REPEAT_LATE`` late is skipped)."""
        while self._waiting:
            key, (state, location, since) = next(iter(self._waiting.items()))
            if now - since > NEARBY_FOR:
                self._waiting.popitem(last=False)
                continue
            if self.store.has_nearby_from_other(*key, state, self.me):
                self._waiting.popitem(last=False)   # the block's other bridge node told it meanwhile
                self.counts["nearby-heard-first"] += 1
                continue
            if not self._budget.take(now):
                break
            try:
                with self.store.transaction():
                    self._sign_nearby(key, state, location, now)
            except StoreError as exc:
                log.error("neighborhood %s: a NEARBY could not be queued (kept for the next tick): %s",
                          self.name, exc)
                return
            self._waiting.popitem(last=False)
        if self._waiting:
            return   # news first: repeats wait until every first copy is out
        kept = []
        for due, data in sorted(self._repeats):
            if due > now:
                kept.append((due, data))
            elif now - due > REPEAT_LATE:
                self.counts["nearby-repeat-skipped"] += 1   # too late to be worth the air
            elif self._budget.take(now):
                self.counts["nearby-repeat"] += 1
                self.outbox.send_ephemeral(data, hop_limit=None)
            else:
                kept.append((due, data))
        self._repeats = kept

    def _drop(self, drop: Drop, now: float) -> None:
        self.counts[f"neighborhood-{drop.reason}"] += 1
        self.store.count_drop(drop.reason, now)
        last = self._last_logged.get(drop.reason)
        level = logging.DEBUG if last is not None and now - last < DROP_LOG_GAP else logging.WARNING
        if level == logging.WARNING:
            log.warning("neighborhood %s: foreign message dropped (%s); more of these are counted, not logged, "
                        "for %.0f s", self.name, drop, DROP_LOG_GAP)
        else:
            log.debug("neighborhood %s: foreign message dropped (%s)", self.name, drop)
        self._last_logged[drop.reason] = now

    # -- NEARBY on every node ------------------------------------------------------------------

    def accept(self, frame: wire.NearbyFrame, now: float, data: bytes) -> dict | None:
        """A verified NEARBY from a roster member, inside the inbox's transaction: keep it, relay it
        once; returns the row to chime for, or None if this state was known already."""
        waiting = self._waiting.get((frame.block_code, frame.alert_reporter, frame.alert_counter))
        if waiting is not None and waiting[0] <= frame.state:
            del self._waiting[(frame.block_code, frame.alert_reporter, frame.alert_counter)]   # told already
        row = self._record(frame.block_code, frame.alert_reporter, frame.alert_counter, frame.state, frame.location,
                           frame.origin, now)
        if row is not None:
            self.relays.relay_verdict(("nearby", frame.origin, frame.counter), data, now, delay=(2.0, 8.0),
                                      hop_limit=0)
        return row

    def _record(self, code: int, reporter: int, counter: int, state: State, location: int, signer: int,
                now: float) -> dict | None:
        block = self.hood.by_code.get(code) if self.hood else None
        # Place names never leave their block (the broker sees public rosters only): every page
        # names a nearby raid by its block and the block's area from the neighborhood roster.
        row = {"block_code": code, "reporter": reporter, "counter": counter, "state": int(state),
               "block": block.name if block else f"block {code:08x}", "area": block.area if block else "",
               "place": block.area if block else "",
               "location": location, "signer": signer, "received_at": now}
        return row if self.store.add_nearby(row) else None

    def chime(self, row: dict) -> None:
        """A nearby state: a short chime (the siren only with ``neighborhood.siren``), never over a local alarm."""
        if self.hardware is None or self.hardware.sounding:
            return
        state = State(row["state"])
        if state is State.CONFIRMED and self.config["neighborhood.siren"]:
            name = "confirmed"
        else:
            name = "nearby_end" if state in ENDED else "nearby"
        self.hardware.siren.sound(name)
        self.counts["nearby-chime"] += 1
