"""The outbox's sender, driven by hand (no thread, no sleeping) against a link that is down, then back."""

import collections
import logging
import threading

from node.daemon.outbox import Outbox
from node.errors import RadioError
from node.radio.link import Link
from node.store import Store


class UnpluggedRadio(Link):
    """A radio whose ``send`` blocks in real life; here it fails at once until ``plugged``."""

    instant = False

    def __init__(self):
        self.plugged = False
        self.sent: list[bytes] = []

    def start(self, on_receive, on_refused=None):
        pass

    def send(self, frame, hop_limit=None):
        if not self.plugged:
            raise RadioError("no radio at /dev/ttyUSB0: check the USB cable")
        self.sent.append(frame)

    @property
    def troubles(self):
        return {} if self.plugged else {"radio": "no radio at /dev/ttyUSB0: check the USB cable"}


def test_the_wait_for_the_radio_is_logged_when_it_begins_and_ends_not_at_every_wake(tmp_path, caplog):
    store = Store(tmp_path / "node.db")
    radio = UnpluggedRadio()
    outbox = Outbox(radio, store, None, lock=threading.RLock(), clock=lambda: 0.0,
                    counts=collections.Counter())
    with store.transaction():
        store.enqueue(b"frame one", 0.0)
        store.enqueue(b"frame two", 0.0)
    caplog.set_level(logging.INFO, logger="node.daemon.outbox")

    for _ in range(500):  # a few minutes of sender wakes while the radio is unplugged
        outbox._send_pending()
    waits = [r for r in caplog.records if "waits for the radio" in r.getMessage()]
    assert len(waits) == 1, f"{len(waits)} lines for one wait"
    assert "2 frames" in waits[0].getMessage() and "check the USB cable" in waits[0].getMessage()

    radio.plugged = True
    outbox._send_pending()
    outbox._send_pending()
    assert radio.sent == [b"frame one", b"frame two"]
    back = [r.getMessage() for r in caplog.records if "radio back" in r.getMessage()]
    assert back == ["outbox: radio back, 2 frames sent"]
    assert len(caplog.records) == 2

    radio.plugged = False  # a second outage is a second wait, logged once again
    with store.transaction():
        store.enqueue(b"frame three", 0.0)
    for _ in range(10):
        outbox._send_pending()
    assert sum("waits for the radio" in r.getMessage() for r in caplog.records) == 2
    store.close()
