"""The gateway's loop: plan texts from alerts, hand them to gammu-smsd, record outcomes, answer texts.

Each step (once a second, ``POLL``):

1. ``plan``: each recent raid alert's state becomes one queue row per subscriber who should
   get it (REPORTED: responders; CONFIRMED: responders and the broad list; ALL CLEAR and
   CANCELLED: whoever got an earlier text). Needs no key: the numbers are copied sealed.
   ``plan_nearby`` does the same for raids on nearby blocks (the ``nearby`` table), to
   subscribers who texted ``NEARBY ON`` only, at priority ``D``: after this block's texts.
2. ``hand_off`` (unlocked only): each queued text becomes a file in gammu-smsd's outbox,
   exactly once (node/gateway/spool.py says how), responders first.
3. ``reconcile``: texts gammu-smsd moved to sent or error are recorded, and their files deleted.
4. ``answer`` (unlocked only): received texts become captains' requests, list changes, replies
   or tips; each file is deleted once handled. Exactly once: a keyed MAC of each text's file
   names and bytes goes in ``sms_handled`` in the same transaction as what the text does, so
   a text whose files a crash left in the inbox is only deleted on restart, never acted on again.
5. ``reply`` (unlocked only): a captain's reply to a tip (``sms_replies``, written by the page,
   which cannot read a number) is queued to the tip's sender.

Before them, a wipe asked for (``sms_wipes``: the console's two-button confirm, ``silbato sms
wipe``) destroys the lists, the key (in memory, and its salt and check in ``sms_state``), the
queue, tips, replies and every file in the spool; locked or not.

Locked (after a boot, until ``silbato sms unlock``), texts queue and received ones wait in
gammu's inbox; the store shows the trouble "SMS gateway: locked". The queue is bounded
(``QUEUE_LIMIT``): beyond it the oldest queued texts are dropped, with a log line and the
trouble "queue full". Times are seconds on the node's clock.

Troubles the gateway watches for itself (each step, in ``sms_state``'s ``trouble``):

- **no modem**: gammu-smsd's PID file (``sms.smsd_pid``) names no running process, or texts
  wait in its outbox and none has left it for ``STALL`` seconds. The files backend keeps no
  status of its own (gammu-smsd-monitor reads a shared-memory segment that the hardened unit
  cannot reach), so these two are what the gateway can see: the process, and its progress.
  Cleared by itself on the first step after gammu-smsd answers again.
- **flooding**: more than ``FLOOD_TEXTS`` texts from one number within ``FLOOD_WINDOW``
  seconds; the rest are deleted unread (no reply, no tip, never an alert) until the window
  passes. A trouble on the node's light, never a siren.
- **PIN locked**: a responder's PIN had ``PIN_TRIES`` wrong guesses in a row; their texted
  commands are refused, silently, until a captain runs ``silbato sms responders unlock-pin``.

Automatic replies (HELP, JOIN's question, the welcome, STOP's and NEARBY's confirmations, the acknowledgement
of a responder's command: "CONFIRM 3-41 received and passed to the node") are limited, since
a sender's number can be spoofed to make the gateway text a victim: at most one HELP per number
an hour, ``REPLIES_PER_NUMBER`` replies of any kind per number a day, ``REPLIES_PER_HOUR`` to
everyone together. What a text does (a STOP's removal) never waits for its reply.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Callable

from node.gateway import commands, texts
from node.gateway.book import BROAD, PENDING, PIN_TRIES, RESPONDER, Book
from node.gateway.spool import Incoming, Spool
from node.gateway.vault import Vault, VaultError
from node.protocol.alerts import Kind, State
from node.protocol.neighborhood import NEARBY_FOR
from node.store import Store

log = logging.getLogger(__name__)

POLL = 1.0            # seconds between steps
HELP_EVERY = 3600.0   # seconds: at most one HELP reply per number in this time
REPLIES_PER_NUMBER = 4  # automatic replies (help, join, welcome, stopped, nearby) to one number within REPLY_WINDOW
REPLY_WINDOW = 86400.0  # seconds
REPLIES_PER_HOUR = 100  # automatic replies to all numbers together within an hour
BACKLOG = 1000        # queued texts beyond which the trouble says the queue is backing up
HAND_OFF_BATCH = 100  # texts put in the outbox per step
QUEUE_LIMIT = 2000    # queued texts kept at most (locked for long): beyond, the oldest are dropped
STALL = 25.0          # seconds with texts in the outbox and none sent: the modem is gone (TROUBLE < 30 s)
FLOOD_TEXTS = 10      # texts from one number within FLOOD_WINDOW beyond which the rest are dropped
FLOOD_WINDOW = 60.0   # seconds
# gammu-smsd sends in file-name order: responders (A), the broad list (B), replies (C), then
# texts about raids on nearby blocks (D), which are news from elsewhere, never this block's own.
NEARBY_PRIORITY = "D"
NUMBER = re.compile(r"^\+?[0-9]{6,15}$")


def normalise_number(raw: str) -> str:
    """``raw`` without spaces, dashes, dots or brackets; raises ``ValueError`` unless a phone number."""
    number = re.sub(r"[\s\-().]", "", raw)
    if not NUMBER.match(number):
        raise ValueError("not a phone number (digits, optionally after a +, 6 to 15 of them)")
    return number


class Gateway:
    """The SMS gateway on ``store`` (opened with ``writes=GATEWAY_TABLES``) and gammu-smsd's ``spool``."""

    def __init__(self, store: Store, spool: Spool, *, clock: Callable[[], float] = time.time,
                 max_age: float = 900.0, scrypt: dict | None = None, smsd_pid: Path | None = None):
        self.store, self.spool, self.clock = store, spool, clock
        self.smsd_pid = smsd_pid if smsd_pid is not None and str(smsd_pid) not in ("", ".") else None
        self.queue_limit = QUEUE_LIMIT
        self._modem = ""                              # why there is no modem, or ""
        self._outbox: tuple[int, float] | None = None  # (texts in gammu's outbox, since when that many)
        self._heard: dict[str, deque] = {}            # number's mac -> when its recent texts came
        self._flooding_until = float("-inf")
        self._overflow = 0                            # texts dropped for a full queue since the last unlock
        self.book = Book(store)
        self.max_age = max_age      # seconds: an alert not changed for this long gets no text
        self.scrypt = scrypt        # tests: a cheaper KDF
        self.vault: Vault | None = None
        self.lock = threading.Lock()
        self._planned: set[tuple[str, int]] = set()
        self._helped: dict[str, float] = {}          # number's mac -> when it was last sent HELP
        self._replied: dict[str, deque] = {}          # number's mac -> when its automatic replies went
        self._replies: deque = deque()                # when every automatic reply of the last hour went
        self._capped_until = float("-inf")            # the hourly cap's log line: once an hour
        self._shown: tuple[str, str] | None = None
        self._database = _identity(store.path)      # the node's database file, to notice a node wipe
        self.node_wiped = False

    # -- unlocking -------------------------------------------------------------------------------

    def unlock(self, passphrase: str) -> None:
        """Derive the key from ``passphrase`` (the first ever sets it); raises ``VaultError`` if wrong."""
        with self.lock:
            self.vault = self.book.unlock(passphrase, scrypt=self.scrypt)
            self._overflow = 0  # a captain is here: the trouble has been seen
            log.info("SMS lists unlocked")
            self._show_state()

    # -- the loop ----------------------------------------------------------------------------------

    def wipe(self, why: str) -> int:
        """Destroy the lists, the key (in memory and its salt), the queue, tips, replies and every file
        in gammu-smsd's spool; the gateway is then as before its first unlock. Returns the files destroyed."""
        with self.lock:
            return self._wipe(why)

    def _wipe(self, why: str) -> int:
        started = time.monotonic()
        self.vault = None
        self.book.wipe()
        files = self.spool.destroy_all()
        if not self.store.truncate_wal():
            log.warning("SMS wipe: a reader kept the database's write-ahead log; the next purge empties it")
        self._planned.clear()
        for memory in (self._heard, self._helped, self._replied):
            memory.clear()
        self._replies.clear()
        self._overflow, self._flooding_until, self._outbox, self._shown = 0, float("-inf"), None, None
        log.critical("SMS WIPE (%s) done in %.1f s: lists, key, queue, tips and %d spool files destroyed; "
                     "the next 'silbato sms unlock' sets a new passphrase", why, time.monotonic() - started, files)
        return files

    def _node_wipe(self) -> bool:
        """Whether the node was wiped (``silbato wipe``, both buttons): its database file is gone.

        The daemon cannot reach the spool (it is not in the group gammu), so the gateway finishes
        the wipe: it forgets the key, and destroys every file in the spool, at once and then at each
        step (texts gammu-smsd receives meanwhile) until it is stopped."""
        if not self.node_wiped and _identity(self.store.path) == self._database:
            return False
        if not self.node_wiped:
            self.node_wiped, self.vault = True, None
            log.critical("SMS gateway: the node's database is gone (the node was wiped): the key is forgotten "
                         "and gammu-smsd's spool destroyed, now and at every step until the gateway is stopped")
        try:
            self.spool.destroy_all()
        except OSError as exc:
            log.error("SMS gateway: could not destroy gammu-smsd's spool: %s", exc)
        return True

    def _wipe_if_asked(self, now: float) -> None:
        asked = self.book.wipes_asked()
        if asked:
            self._wipe("a captain asked")
            self.book.wipe_done(asked, now)
        elif self.vault is not None and self.book.state("salt") is None:
            # Wiped by another process (``silbato sms wipe`` with no gateway answering): forget the key.
            self.vault = None
            log.warning("SMS lists wiped elsewhere: the key is forgotten; the gateway is locked")

    def step(self) -> None:
        """One pass of plan, hand off, reconcile and answer; each part's failure is logged, not raised."""
        with self.lock:
            now = self.clock()
            if self._node_wipe():
                return
            try:
                self._wipe_if_asked(now)
            except Exception:
                log.exception("SMS gateway: a wipe failed")
            for name, part in (("plan", self.plan), ("nearby", self.plan_nearby), ("bound", self.bound), ("hand-off", self.hand_off),
                               ("reconcile", self.reconcile), ("answer", self.answer), ("reply", self.reply), ("modem", self.watch_modem)):
                try:
                    part(now)
                except Exception:
                    log.exception("SMS gateway: %s failed; the gateway goes on", name)
            try:
                self._show_state()
            except Exception:
                log.exception("SMS gateway: could not record its state")

    def run(self, stopping: threading.Event, socket_path: Path | None = None) -> None:
        """Step every ``POLL`` seconds until ``stopping``; listen for ``silbato sms unlock`` on ``socket_path``."""
        listener = _UnlockListener(self, socket_path).start() if socket_path else None
        try:
            while True:
                self.step()
                if stopping.wait(POLL):
                    break
        finally:
            if listener:
                listener.stop()

    def plan(self, now: float) -> None:
        places = self.store.places()
        for alert in self.store.alerts(limit=50):
            if alert.kind is not Kind.RAID or now - alert.updated_at > self.max_age:
                continue
            if (alert.id, int(alert.state)) in self._planned:
                continue
            if alert.state is State.REPORTED:
                targets = [(s, "A") for s in self.book.subscribers((RESPONDER,))]
            elif alert.state is State.CONFIRMED:
                targets = [(s, "A" if s["list"] == RESPONDER else "B")
                           for s in self.book.subscribers((RESPONDER, BROAD))]
            elif alert.state in (State.ALL_CLEAR, State.CANCELLED):
                earlier = {r["number_mac"]: r["priority"] for r in self.book.got_alert(alert.id)}
                targets = [(s, earlier[s["number_mac"]]) for s in self.book.subscribers((RESPONDER, BROAD))
                           if s["number_mac"] in earlier]
            else:
                continue
            place = places.get(alert.location) or str(alert.location)
            queued = 0
            with self.store.transaction():
                for sub, priority in targets:
                    text = texts.alert_text(alert.state, alert.id, place, sub["language"])
                    queued += self.book.enqueue(
                        f"alert:{alert.id}:{int(alert.state)}:{sub['number_mac']}", number_enc=sub["number_enc"],
                        number_mac=sub["number_mac"], priority=priority, text=text, now=now, alert_id=alert.id,
                        state=int(alert.state))
            self._planned.add((alert.id, int(alert.state)))
            if queued:
                log.info("alert %s %s: %d texts queued", alert.id, alert.state.word, queued)

    def plan_nearby(self, now: float) -> None:
        """Each nearby alert's latest state taken within ``max_age`` becomes one text per subscriber
        (responders and the broad list) who texted ``NEARBY ON``: CONFIRMED to each of them, ALL CLEAR
        and CANCELLED to those of them who got an earlier text about it. Once per (block, alert, state,
        subscriber), across restarts (``sms_queue.key``); REPORTED (if the policy lets it cross) is not texted."""
        for row in self.store.nearby_news(now - self.max_age):
            state = State(row["state"])
            planned = ("nearby", row["block_code"], row["reporter"], row["counter"], int(state))
            if planned in self._planned:
                continue
            alert_id = f"nearby:{row['block_code']:08x}:{row['reporter']}-{row['counter']}"
            opted = self.book.subscribers((RESPONDER, BROAD), nearby=True)
            if state is State.CONFIRMED:
                targets = opted
            elif state in (State.ALL_CLEAR, State.CANCELLED):
                # Those texted about this alert, or about another id of the same place just before
                # (the other block merged two reports: its states may cross under either id).
                ids = {(row["reporter"], row["counter"])} | set(self.store.nearby_same_place(
                    row["block_code"], row["location"], row["received_at"] - NEARBY_FOR, row["received_at"]))
                earlier = {r["number_mac"] for rep, cnt in ids
                           for r in self.book.got_alert(f"nearby:{row['block_code']:08x}:{rep}-{cnt}")}
                targets = [s for s in opted if s["number_mac"] in earlier]
            else:
                targets = []
            queued = 0
            with self.store.transaction():
                for sub in targets:
                    text = texts.nearby_text(state, row["block"], row["area"], sub["language"])
                    queued += self.book.enqueue(
                        f"{alert_id}:{int(state)}:{sub['number_mac']}", number_enc=sub["number_enc"],
                        number_mac=sub["number_mac"], priority=NEARBY_PRIORITY, text=text, now=now,
                        alert_id=alert_id, state=int(state))
            self._planned.add(planned)
            if queued:
                log.info("nearby alert %s-%s on %s %s: %d texts queued", row["reporter"], row["counter"],
                         row["block"], state.word, queued)

    def bound(self, now: float) -> None:
        """Drop the oldest queued texts beyond ``queue_limit`` (a gateway locked for long), with a log line."""
        dropped = self.book.drop_oldest(self.queue_limit, now)
        if dropped:
            self._overflow += dropped
            log.warning("SMS queue full: the %d oldest queued texts were dropped (it keeps at most %d)",
                        dropped, self.queue_limit)

    def watch_modem(self, now: float) -> None:
        """Whether gammu-smsd answers: its process, and its progress through the outbox."""
        reason = ""
        if self.smsd_pid is not None and not _running(self.smsd_pid):
            reason = "gammu-smsd is not running"
        waiting = self.spool.waiting()
        if self._outbox is None or waiting == 0 or waiting < self._outbox[0]:
            self._outbox = (waiting, now)          # empty, or a text left: progress
        elif waiting > self._outbox[0]:
            self._outbox = (waiting, self._outbox[1])
        if not reason and waiting and now - self._outbox[1] >= STALL:
            reason = f"gammu-smsd has sent nothing for {STALL:.0f} s"
        if reason != self._modem:
            if reason:
                log.warning("SMS gateway: no modem (%s)", reason)
            else:
                log.info("SMS gateway: gammu-smsd answers again")
            self._modem = reason

    def _flooded(self, message: Incoming, now: float) -> bool:
        """True (and logged once a window) if ``message``'s sender has texted too often."""
        mac = self.vault.mac(message.sender)
        heard = self._heard.setdefault(mac, deque())
        while heard and now - heard[0] > FLOOD_WINDOW:
            heard.popleft()
        heard.append(now)
        for other in [m for m, times in self._heard.items() if not times or now - times[-1] > FLOOD_WINDOW]:
            del self._heard[other]  # forget quiet numbers: the dict stays small
        if len(heard) <= FLOOD_TEXTS:
            return False
        if now >= self._flooding_until:
            log.warning("flooding: %s sent more than %d texts in %.0f s; its texts are dropped unread",
                        self.vault.pseudonym(message.sender), FLOOD_TEXTS, FLOOD_WINDOW)
        self._flooding_until = now + FLOOD_WINDOW
        return True

    def hand_off(self, now: float) -> None:
        if self.vault is None:
            return
        # Files first, then one sync of the folder, then the rows in one transaction: a crash in
        # between leaves rows queued whose files exist, which the next hand-off finds and only marks.
        handed = []
        for row in self.book.queued(HAND_OFF_BATCH):
            number = self.vault.open(row["number_enc"])
            if not self.spool.hand_off(row["id"], row["priority"], number, row["text"], sync=False):
                log.info("text %d was in gammu's spool already (a hand-off interrupted before): not written again",
                         row["id"])
            handed.append(row["id"])
        if handed:
            self.spool.sync()
            with self.store.transaction():
                for queue_id in handed:
                    self.book.mark(queue_id, "handed", now)

    def reconcile(self, now: float) -> None:
        outcomes = self.spool.outcomes()
        with self.store.transaction():   # every outcome recorded, then the files deleted
            for queue_id, sent, path in outcomes:
                row = self.book.row(queue_id)
                if row is not None and row["status"] in ("queued", "handed"):
                    self.book.mark(queue_id, "sent" if sent else "failed", now)
                    if not sent:
                        log.warning("text %d could not be sent (gammu-smsd moved it to its error folder)", queue_id)
        for _, _, path in outcomes:
            path.unlink(missing_ok=True)  # recorded: no number stays in the spool

    def answer(self, now: float) -> None:
        if self.vault is None:
            return
        self._forget(now)
        for message in self.spool.incoming():
            identity = self.vault.mac("inbox:" + message.digest)
            if self.book.handled(identity):
                # Acted on before a crash kept its files from being deleted: not again.
                log.info("a received text from %s was handled before a restart; its files are deleted",
                         self.vault.pseudonym(message.sender))
                self.spool.discard(message)
                continue
            try:
                # What the text does and the record that it was done commit together.
                with self.store.transaction():
                    self.book.record_handled(identity, now)
                    if not self._flooded(message, now):
                        self._answer(message, now)
            except Exception:
                log.exception("a received text from %s could not be handled; it is dropped",
                              self.vault.pseudonym(message.sender))
            self.spool.discard(message)

    def reply(self, now: float) -> None:
        if self.vault is None:
            return
        for row in self.book.pending_replies():
            number_enc = self.book.tip_number(row["tip_id"])
            if number_enc is None:
                self.book.mark_reply(row["id"], "refused", now)
                log.warning("reply %d: tip %d is gone (purged?); not sent", row["id"], row["tip_id"])
                continue
            number = self.vault.open(number_enc)
            with self.store.transaction():
                self.book.enqueue(f"tip-reply:{row['id']}", number_enc=number_enc, number_mac=self.vault.mac(number),
                                  priority="C", text=f"Silbato: {row['text']}", now=now)
                self.book.mark_reply(row["id"], "queued", now)
            log.info("reply %d to tip %d queued (captain %s)", row["id"], row["tip_id"], row["captain"])

    # -- received texts ------------------------------------------------------------------------------

    def _answer(self, message: Incoming, now: float) -> None:
        vault = self.vault
        who = vault.pseudonym(message.sender)
        if message.text is None:
            log.info("a binary text from %s was ignored", who)
            return
        command = commands.parse(message.text)
        subscriber = self.book.subscriber(vault, message.sender)
        language = subscriber["language"] if subscriber else "en"
        if command.verb in commands.ACTIONS:
            if subscriber is None or subscriber["list"] != RESPONDER:
                log.warning("a %s from %s was refused: not a responder", command.verb, who)
                self._help(message, language, now)
                return
            if self.book.pin_locked(subscriber):
                # No reply: the sender must not learn that the guessing was noticed, nor the PIN's state.
                log.warning("a %s from responder %s was refused: their PIN is locked (a captain runs "
                            "'silbato sms responders unlock-pin')", command.verb, subscriber["handle"])
                return
            if not self.book.pin_ok(vault, subscriber, command.pin):
                failures = self.book.pin_failed(subscriber["id"])
                if failures >= PIN_TRIES:
                    log.warning("responder %s: %d wrong PINs in a row; their PIN is locked until a captain runs "
                                "'silbato sms responders unlock-pin'", subscriber["handle"], failures)
                    return
                log.warning("a %s from responder %s was refused: a wrong PIN (%d in a row)", command.verb,
                            subscriber["handle"], failures)
                self._help(message, language, now)
                return
            self.book.pin_reset(subscriber["id"])
            action = commands.ACTIONS[command.verb]
            request = self.store.add_request(
                action, captain=f"sms:{subscriber['handle']}", now=now,
                alert_id="" if command.verb == "REPORT" else command.argument,
                location=int(command.argument) if command.verb == "REPORT" else None)
            log.info("responder %s texted %s: request %d for the node to sign", subscriber["handle"],
                     command.verb, request)
            self._reply(message, "ack", language, now,
                        text=texts.ack_text(command.verb, command.argument, language))
        elif command.verb == "JOIN":
            if subscriber is not None and subscriber["list"] in (RESPONDER, BROAD):
                if command.nearby:
                    self.book.set_nearby(subscriber["id"], True)
                    log.info("%s texted JOIN NEARBY: texts about nearby blocks' raids on", who)
                    self._reply(message, "nearby_on", subscriber["language"], now)
                else:
                    self._reply(message, "welcome", subscriber["language"], now)
                return
            self.book.add(vault, message.sender, PENDING, command.argument, now, nearby=command.nearby)
            log.info("%s asked to join (%s%s); waiting for YES", who, command.argument,
                     ", nearby blocks too" if command.nearby else "")
            self._reply(message, "join", command.argument, now)
        elif command.verb == "YES" and subscriber is not None and subscriber["list"] == PENDING:
            self.book.set_list(subscriber["id"], BROAD, now)
            log.info("%s joined the broad list", who)
            self._reply(message, "welcome_nearby" if subscriber["nearby"] else "welcome", language, now)
        elif command.verb == "NEARBY":
            if subscriber is None or subscriber["list"] not in (RESPONDER, BROAD):
                log.info("a NEARBY %s from %s was refused: not on a list (JOIN first)", command.argument, who)
                self._help(message, language, now)
                return
            on = command.argument == "ON"
            self.book.set_nearby(subscriber["id"], on)
            log.info("%s texted NEARBY %s: texts about nearby blocks' raids %s", who, command.argument,
                     "on" if on else "off")
            self._reply(message, "nearby_on" if on else "nearby_off", language, now)
        elif command.verb == "STOP":
            for row in self.book.remove(vault, message.sender):
                if self.spool.withdraw(row["id"], row["priority"], vault.open(row["number_enc"])):
                    self.book.mark(row["id"], "dropped", now)
            log.info("%s texted STOP: removed from every list", who)
            self._reply(message, "stopped", language, now)
        elif command.verb == "TIP":
            tip = self.book.add_tip(vault, command.argument, message.sender, now)
            log.info("tip %d received (no alert raised; a captain decides)", tip)
        else:  # HELP, a malformed command, a YES with no JOIN
            self._help(message, language, now)

    def _help(self, message: Incoming, language: str, now: float) -> None:
        mac = self.vault.mac(message.sender)
        if now - self._helped.get(mac, float("-inf")) < HELP_EVERY:
            return
        if self._reply(message, "help", language, now):
            self._helped[mac] = now

    def _reply(self, message: Incoming, kind: str, language: str, now: float, text: str = "") -> bool:
        """Queue an automatic reply (``kind`` from ``texts.REPLIES``, or ``text``) unless a limit says no
        (logged); whether it was queued."""
        vault = self.vault
        mac = vault.mac(message.sender)
        replied = self._replied.get(mac, ())
        if len(replied) >= REPLIES_PER_NUMBER:
            log.info("no %s reply to %s: %d replies to that number in %.0f h already", kind,
                     vault.pseudonym(message.sender), REPLIES_PER_NUMBER, REPLY_WINDOW / 3600)
            return False
        if len(self._replies) >= REPLIES_PER_HOUR:
            if now >= self._capped_until:
                log.warning("automatic replies capped: %d sent within the hour; more are not sent until it passes",
                            REPLIES_PER_HOUR)
                self._capped_until = self._replies[0] + 3600.0
            return False
        self._replied.setdefault(mac, deque()).append(now)
        self._replies.append(now)
        self.book.enqueue(f"reply:{vault.mac(message.files[0].name)}", number_enc=vault.seal(message.sender),
                          number_mac=vault.mac(message.sender), priority="C", text=text or texts.reply_text(kind, language),
                          now=now)
        return True

    def _forget(self, now: float) -> None:
        """Drop reply times past their limits' windows, so spoofed senders cannot grow these without bound."""
        while self._replies and now - self._replies[0] >= 3600.0:
            self._replies.popleft()
        for mac in list(self._replied):
            times = self._replied[mac]
            while times and now - times[0] >= REPLY_WINDOW:
                times.popleft()
            if not times:
                del self._replied[mac]
        for mac in [m for m, when in self._helped.items() if now - when >= HELP_EVERY]:
            del self._helped[mac]

    # -- state -----------------------------------------------------------------------------------------

    def _show_state(self) -> None:
        troubles = []
        if self.vault is None:
            state = "locked"
            troubles.append("locked: texts wait until a captain runs 'silbato sms unlock'")
        else:
            state = "running"
            backlog = self.book.queue_counts().get("queued", 0)
            if backlog > BACKLOG:
                troubles.append(f"queue backing up: over {BACKLOG} texts waiting")
        if self._modem:
            troubles.append(f"no modem: {self._modem}")
        if self._overflow:
            troubles.append(f"queue full: {self._overflow} oldest texts dropped")
        if self.clock() < self._flooding_until:
            troubles.append("flooding: texts from one number are dropped")
        locked = self.book.pin_locked_handles()
        if locked:
            troubles.append(f"PIN locked: {len(locked)} responder{'s' if len(locked) > 1 else ''} "
                            f"after {PIN_TRIES} wrong PINs ('silbato sms responders unlock-pin')")
        trouble = "; ".join(troubles)
        if self._shown != (state, trouble):
            self.book.set_state("state", state)
            self.book.set_state("trouble", trouble)
            self._shown = (state, trouble)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, or None if it is gone."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def _running(pid_file: Path) -> bool:
    """Whether ``pid_file`` names a live process (of any user: kill(pid, 0) answers EPERM for another's)."""
    try:
        pid = int(Path(pid_file).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _UnlockListener:
    """A Unix socket (0600) on which ``silbato sms unlock`` hands the gateway the passphrase."""

    def __init__(self, gateway: Gateway, path: Path):
        self.gateway, self.path = gateway, Path(path)
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    def start(self) -> "_UnlockListener":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(2)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="sms-unlock", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(10)
                try:
                    passphrase = _read_line(conn)
                    self.gateway.unlock(passphrase)
                    conn.sendall(b"ok\n")
                except VaultError as exc:
                    log.warning("unlocking the SMS lists failed: %s", exc)
                    conn.sendall(f"{exc}\n".encode())
                except Exception:
                    log.exception("unlocking the SMS lists failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join(timeout=2)
        if self._sock:
            self._sock.close()
        self.path.unlink(missing_ok=True)


def _read_line(conn: socket.socket, limit: int = 4096) -> str:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(1024)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8").rstrip("\n")


def send_unlock(socket_path: Path, passphrase: str, timeout: float = 30.0) -> str:
    """Hand ``passphrase`` to the running gateway; returns its answer ("ok" or why not)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(passphrase.encode("utf-8") + b"\n")
        return _read_line(sock)
