"""``silbato sim --blocks``: blocks on a real Mosquitto, their bridges, the link controls (node/sim.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request

import pytest

from gammu import until
from node.bridge.broker import mosquitto_path

needs_mosquitto = pytest.mark.skipif(mosquitto_path() is None, reason="mosquitto is not installed")


def call(url: str, method: str = "GET"):
    request = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@needs_mosquitto
def test_two_blocks_connect_their_bridges_and_a_link_down_shows_and_clears_the_trouble(tmp_path):
    from test_cli import free_port_base

    from node.sim import run_neighborhood

    base = free_port_base(5)
    ready, stopping, said, failed = threading.Event(), threading.Event(), [], []

    def say(line):
        said.append(line)
        if "Ctrl-C stops the neighborhood" in line:
            ready.set()

    def run():
        try:  # 30 simulated seconds (the trouble's threshold) in one and a half
            run_neighborhood(tmp_path / "hood", 2, 2, "line", port_base=base, loss=0.0, preset="MEDIUM_FAST",
                             seed=1, scale=20.0, stopping=stopping, say=say)
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    control = f"http://127.0.0.1:{base}"
    try:
        assert ready.wait(60) and not failed, (failed, said)
        blocks = call(f"{control}/nodes")
        assert [b["name"] for b in blocks] == ["block1", "block2"]
        assert blocks[1]["nodes"][1]["url"] == f"http://127.0.0.1:{base + 4}/"  # pages on distinct ports
        links = lambda b: call(f"{control}/nodes")[b - 1]["bridges"][0]  # noqa: E731
        until(lambda: links(1)["link"] == "up" and links(2)["link"] == "up", what="both bridges up")
        # Each block's own controls, under /blocks/<b>.
        assert [n["node"] for n in call(f"{control}/blocks/2/nodes")] == [1, 2]
        assert call(f"{control}/blocks/2/link/down", "POST") == {"block": 2, "link": "down", "bridges": [1]}
        until(lambda: links(2)["trouble"].startswith("neighborhood link down since"), what="the trouble on block 2")
        assert "(held down)" in links(2)["trouble"] and links(1) == {"node": 1, "link": "up", "trouble": ""}
        call(f"{control}/blocks/2/link/up", "POST")
        until(lambda: links(2) == {"node": 1, "link": "up", "trouble": ""}, what="the trouble cleared")
        with pytest.raises(urllib.error.HTTPError) as refused:
            call(f"{control}/blocks/2/link/sideways", "POST")
        assert refused.value.code == 404
    finally:
        stopping.set()
        thread.join(60)
    assert not thread.is_alive() and not failed, failed


def test_every_node_of_the_neighborhood_has_its_name_and_one_bridge_node_per_block(tmp_path):
    from node.sim import Neighborhood

    hood = Neighborhood(tmp_path, 3, 2, scale=None)
    assert {cfg["neighborhood.name"] for b in hood.blocks.values() for cfg in b.files.configs} == {"sim-hood"}
    assert [b.name for b in hood.blocks.values()] == ["block1", "block2", "block3"]
    hood.broker.stop()


def test_without_mosquitto_the_sim_says_so_in_one_line(tmp_path):
    env = {**os.environ, "PATH": str(tmp_path)}  # no mosquitto on the PATH
    code = ("import sys, node.bridge.broker as b; b.MOSQUITTO = '/nonexistent/mosquitto'; "
            "from node.cli import main; sys.argv = ['silbato', 'sim', '--blocks', '2', '--nodes', '2', "
            f"'--dir', {str(tmp_path / 'hood')!r}]; main()")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "mosquitto is not installed: 'apt-get install mosquitto'" in done.stderr
    assert "Traceback" not in done.stderr


@needs_mosquitto
def test_a_raid_confirmed_on_block_1_shows_as_nearby_on_every_page_of_blocks_2_and_3(tmp_path):
    """Issue 16's "done when": three blocks on a real Mosquitto; a raid reported and confirmed on
    block 1 reaches every page of blocks 2 and 3 as NEARBY (through block 1's bridge node, the
    broker, blocks 2's and 3's bridge nodes, and their LoRa meshes), and its ALL CLEAR ends it."""
    from test_cli import free_port_base

    from node.sim import run_neighborhood

    blocks, n = 3, 3
    base = free_port_base(blocks * n + 1)
    ready, stopping, said, failed = threading.Event(), threading.Event(), [], []

    def say(line):
        said.append(line)
        if "Ctrl-C stops the neighborhood" in line:
            ready.set()

    def run():
        try:
            run_neighborhood(tmp_path / "hood", blocks, n, "line", port_base=base, loss=0.0, preset="MEDIUM_FAST",
                             seed=3, scale=20.0, stopping=stopping, say=say)
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    control = f"http://127.0.0.1:{base}"
    try:
        assert ready.wait(60) and not failed, (failed, said)
        pages = {(b["block"], node["node"]): node["url"] for b in call(f"{control}/nodes") for node in b["nodes"]}
        assert len(pages) == blocks * n
        until(lambda: all(b["bridges"][0]["link"] == "up" for b in call(f"{control}/nodes")), what="bridges up")
        assert call(f"{control}/blocks/1/nodes/3/hold?seconds=3", "POST")["long_enough"]
        alert = until(lambda: [a for a in call(f"{control}/blocks/1/nodes")[1]["active"]], what="the report on B2")[0]
        call(f"{control}/blocks/1/nodes/2/confirm?alert={alert}", "POST")

        def nearby(block, i):
            return call(pages[(block, i)] + "api/nearby")

        def shown(state):
            return all([(r["block"], r["state"]) for r in nearby(b, i)] == [("block1", state)]
                       for b in (2, 3) for i in range(1, n + 1))

        try:
            until(lambda: shown("confirmed"), timeout=60, what="NEARBY confirmed on every page of blocks 2 and 3")
        except AssertionError:
            raise AssertionError({"nearby": {f"{b}/{i}": nearby(b, i) for b in (1, 2, 3) for i in range(1, n + 1)},
                                  "nodes": call(f"{control}/nodes")}) from None
        page = urllib.request.urlopen(pages[(3, n)] + "?lang=en", timeout=10).read().decode()
        assert "Raid confirmed nearby: block1, Sim block 1" in page
        assert all(nearby(1, i) == [] for i in range(1, n + 1))     # block 1 has the raid itself
        cleared = call(f"{control}/blocks/1/nodes/2/all_clear?alert={alert}", "POST")
        try:
            until(lambda: all(nearby(b, i) == [] for b in (2, 3) for i in range(1, n + 1)), timeout=60,
                  what="the ALL CLEAR ending it on every page")
        except AssertionError:
            raise AssertionError({"cleared": cleared,
                                  "nearby": {f"{b}/{i}": nearby(b, i) for b in (1, 2, 3) for i in range(1, n + 1)},
                                  "nodes": call(f"{control}/nodes")}) from None
    finally:
        stopping.set()
        thread.join(60)
    assert not thread.is_alive() and not failed, failed
