"""The block clock (node.protocol.clock), pure, and its floor on disk (node.daemon.signer)."""

import pytest

from node.daemon.signer import CLOCK_STEP, Signer
from node.protocol.clock import BlockClock
from node.store import Store


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db" / "silbato.db")
    yield s
    s.close()


def test_the_clock_rises_to_a_larger_stamp_and_never_goes_back():
    clock = BlockClock()
    assert clock.stamp(1000.0) == 1000
    assert clock.observe(1500, 1000.0) and clock.stamp(1000.0) == 1500
    assert not clock.observe(1200, 1010.0)          # a smaller one (a recording) moves nothing
    assert clock.stamp(1010.0) == 1510
    assert clock.stamp(400.0) == 1510               # the node's own clock set back: C holds


def test_a_stamp_converts_to_local_time_never_later_than_now():
    clock = BlockClock(offset=500.0)
    assert clock.to_local(1400, 1000.0) == 900.0    # signed 100 s ago
    assert clock.to_local(1600, 1000.0) == 1000.0   # "from the future": now, no later


def test_raising_the_offset_does_not_age_what_was_converted_before():
    clock = BlockClock()
    before = clock.to_local(990, 1000.0)
    clock.observe(5000, 1000.0)                     # a jump forward of 4000 s
    assert before == 990.0 and clock.to_local(5000, 1001.0) == 1000.0


def test_a_restart_keeps_the_floor_and_the_offset(tmp_path, store, roster_setup):
    key = roster_setup.keys[1]
    path = tmp_path / "clock"
    signer = Signer(1, store, key, roster_setup.roster, clock_file=path, now=1000.0)
    signer.clock.observe(5000, 1000.0)
    assert signer.stamp(1000.0) == 5000
    assert float(path.read_text().split()[0]) == 5000 + CLOCK_STEP
    again = Signer(1, store, key, roster_setup.roster, clock_file=path, now=1010.0)
    assert again.stamp(1010.0) == 5020               # the saved offset: the block's time went on
    back = Signer(1, store, key, roster_setup.roster, clock_file=path, now=10.0)
    assert back.stamp(10.0) >= 5000                  # a clock a thousand seconds back: the floor holds


def test_an_unreadable_clock_file_is_logged_and_the_clock_starts_afresh(tmp_path, store, roster_setup, caplog):
    path = tmp_path / "clock"
    path.write_text("garbage")
    signer = Signer(1, store, roster_setup.keys[1], roster_setup.roster, clock_file=path, now=1000.0)
    assert signer.stamp(1000.0) == 1000 and "unreadable" in caplog.text
