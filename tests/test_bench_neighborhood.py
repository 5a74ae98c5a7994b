"""The neighborhood benchmarks (tests/bench/neighborhood.py, P13; neighborhood_outage.py, P14) in small
sizes, on a real Mosquitto: correctness only (every NEARBY arrives, none lost or duplicated), no timing."""

import importlib.util
from pathlib import Path

import pytest

from node.bridge.broker import mosquitto_path

BENCH = Path(__file__).parent / "bench"

pytestmark = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed (.ci/apt-packages)")


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_a_raid_confirmed_on_one_block_reaches_every_node_of_every_other_block_as_nearby():
    (row,) = load("neighborhood").main(["--blocks", "3", "--nodes", "3", "--raids", "1", "--seed", "2"])
    assert row["neighbor_nodes_expected"] == 2 * 3
    assert row["neighbor_nodes_nearby"] == row["neighbor_nodes_expected"] and row["missing"] == []
    assert row["all_clear_delivered_ratio"] == 1.0
    assert row["in_block_max_s"] > 0 and row["neighbor_block_max_s"] > 0


@pytest.mark.parametrize("kind", ["link", "broker"])
def test_an_outage_during_alerts_loses_nothing_duplicates_nothing_and_its_trouble_shows_and_clears(kind):
    """Issue 16's outage guarantee: block 1's link (or the broker) down for 60 simulated seconds
    (20 wall seconds at scale 3) while raids are confirmed and cleared on blocks 1, 2 and 3."""
    (row,) = load("neighborhood_outage").main(["--kinds", kind, "--outage", "60", "--scale", "3", "--blocks", "3",
                                               "--nodes", "3", "--settle", "30"])
    assert row["alerts_meanwhile"] == 5
    assert row["expected"] == 5 * 2 * 3 and row["delivered"] == row["expected"]
    assert row["lost"] == 0
    assert row["duplicated"] == 0, row
    assert row["waited"] > 0                          # some NEARBY had to wait for the return...
    assert row["trouble_shown_after_s"] is not None   # ...the block said its link was down...
    assert row["trouble_cleared_after_s"] is not None  # ...and stopped saying so once it was back
