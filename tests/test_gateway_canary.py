"""The SMS gateway's privacy canary: 1,000 planted numbers, and none of them anywhere they must not be.

A block of two nodes on virtual time; node 1 is the gateway, with 20 responders and 980 on
the broad list. Node 2 reports a raid, a responder confirms it by text, the confirmation
goes to all 1,000, and other texts come back with the CONFIRM (a STOP, a JOIN, tips, a wrong PIN). The
received texts go through the real gammu-smsd on the dummy driver (its file names and UTF-16
bodies are what the gateway must clean up); the 1,000 outgoing texts are moved from the
outbox to the sent folder by the test, as gammu-smsd does (at one text a second on the dummy
phone, it would take a quarter of an hour; sending through gammu-smsd has its own tests).
Then no number, in any common format (+E.164, digits only, national, with separators;
UTF-8 or UTF-16), is found under the block's state directories, in the spool, in the logs,
in the incident's export bundle or in any frame sent on the air (tests/canary.py).
"""

from __future__ import annotations

import io
import logging
import random
import zipfile

import pytest

import canary
from gammu import GAMMU_SMSD, GammuSmsd, until
from node import catalog
from node.gateway.book import BROAD, PENDING, RESPONDER
from node.gateway.service import Gateway
from node.protocol.alerts import State
from node.sim import Block
from node.store import GATEWAY_TABLES, Store

pytestmark = pytest.mark.skipif(GAMMU_SMSD is None, reason="gammu-smsd is not installed (.ci/apt-packages)")

CHEAP_KDF = {"n": 2 ** 10, "r": 8, "p": 1}
PLANTED = 1000
RESPONDERS = 20
PIN = "482915"


@pytest.fixture(scope="module", autouse=True)
def compiled_catalogs():
    for language in catalog.LANGUAGES:
        if language != catalog.SOURCE and catalog.problem(language):
            catalog.compile_catalog(catalog.po_file(language), catalog.mo_file(language), record_source=True)
    catalog.translations.cache_clear()


def planted_numbers(rng: random.Random) -> list[str]:
    """1,000 distinct US-style numbers (+1 and ten digits), in the formats people type them."""
    national = rng.sample(range(2_000_000_000, 9_999_999_999), PLANTED)
    return [f"+1{n}" for n in national]


def test_a_thousand_planted_numbers_appear_nowhere_they_must_not(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    rng = random.Random(1000)
    numbers = planted_numbers(rng)
    responders, broad = numbers[:RESPONDERS], numbers[RESPONDERS:]
    strangers = [f"+1{n}" for n in rng.sample(range(2_000_000_000, 9_999_999_999), 5)]

    block = Block(tmp_path / "block", n=2, scale=None)
    frames: list[bytes] = []
    transmit = block.air.transmit

    def record(sender, packet):
        frames.append(packet.payload)
        transmit(sender, packet)

    block.air.transmit = record
    block.start()
    gammu = GammuSmsd(tmp_path / "gammu")
    # gammu-smsd only receives here: the outgoing texts are the test's to move (see the docstring).
    (tmp_path / "gammu" / "not-sending").mkdir()
    gammu.rc.write_text(gammu.rc.read_text().replace(f"outboxpath = {gammu.spool.outbox}/",
                                                     f"outboxpath = {tmp_path / 'gammu' / 'not-sending'}/"))
    gammu.start()
    store = Store(block.nodes[1].config.db_file, writes=GATEWAY_TABLES)
    try:
        gw = Gateway(store, gammu.spool, scrypt=CHEAP_KDF, clock=block.clock)
        gw.unlock("canary passphrase")
        languages = list(catalog.LANGUAGES)
        with store.transaction():
            for i, number in enumerate(numbers):
                gw.book.add(gw.vault, number, RESPONDER if i < RESPONDERS else BROAD, languages[i % 4],
                            block.clock(), pin=PIN if i < RESPONDERS else "")

        def modem():
            """What gammu-smsd does with each text: send it, then move it to the sent folder."""
            for path in sorted(gammu.spool.outbox.glob("OUT*")):
                path.rename(gammu.spool.sent / path.name)

        def run(seconds=1.0):
            gw.step()
            modem()
            block.scheduler.run_for(seconds)

        def settle(condition, what, limit=60):
            until(lambda: (run(), condition())[1], 60, what)

        alert = block.nodes[2].report()
        settle(lambda: gw.book.queue_counts().get("sent", 0) == RESPONDERS, "the REPORTED texts")
        # Texts back, together: a CONFIRM, a STOP, a JOIN, tips, a wrong PIN.
        gammu.receive(responders[3], f"CONFIRM {alert.id} {PIN}")
        gammu.receive(broad[7], "STOP")
        gammu.receive(strangers[0], "JOIN es")
        gammu.receive(strangers[1], "Three vans by the school, plates start with 7")
        gammu.receive(broad[8], "Agents at the corner store")
        gammu.receive(responders[5], f"CLEAR {alert.id} 000000")
        settle(lambda: block.nodes[1].store.get_alert(alert.id).state is State.CONFIRMED, "the texted CONFIRM")
        settle(lambda: not gw.book.queue_counts().get("queued") and not gw.book.queue_counts().get("handed")
               and not list(gammu.spool.inbox.iterdir()) and not list(gammu.spool.sent.iterdir()),
               "every text handled")
        counts = gw.book.queue_counts()
        assert counts["sent"] >= RESPONDERS + PLANTED - 1, counts   # REPORTED, CONFIRMED (less the STOP), replies
        assert len(gw.book.tips()) == 2 and gw.book.subscriber(gw.vault, broad[7]) is None
        assert gw.book.subscriber(gw.vault, strangers[0])["list"] == PENDING

        from web import export
        name, bundle = export.bundle(block.nodes[1].store, alert.id, block="sim-block")
    finally:
        gammu.stop()
        store.close()
        block.stop()

    everyone = numbers + strangers
    roots = [tmp_path / "block", gammu.spool.root]
    leaks = canary.found(roots, everyone)
    assert not leaks, f"numbers under the state directories or the spool: {leaks}"
    assert not canary.in_text(caplog.text, everyone), "a number in the logs"
    assert not canary.in_bytes(bundle, everyone)
    with zipfile.ZipFile(io.BytesIO(bundle)) as z:
        assert z.namelist() and not [n for n in z.namelist() if canary.in_bytes(z.read(n), everyone)], name
    assert len(frames) > 5 and not [f for f in frames if canary.in_bytes(f, everyone)], "a number on the air"
    # The canary itself can see: each format of a planted number, in each encoding, is found.
    for written in canary.formats(numbers[0]):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            assert canary.in_bytes(b"x" + written.encode(encoding), everyone) == {numbers[0]}, (written, encoding)
