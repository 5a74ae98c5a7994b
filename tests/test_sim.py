"""End to end: a simulated block of complete nodes, on virtual time with fixed seeds."""

import pytest

from node.protocol.alerts import State
from node.sim import Block

HOLD = 0.05  # wall-clock seconds for the button hold in these tests


@pytest.fixture
def make_block(tmp_path):
    blocks = []

    def make(n=5, topology="line", **kw):
        block = Block(tmp_path / f"block{len(blocks)}", n, topology, hold_time=HOLD, **kw).start()
        blocks.append(block)
        return block

    yield make
    for block in blocks:
        block.stop()


def press_and_wait(block, i):
    """Hold node i's button past hold_time and wait (on the node's change event) for its report."""
    node = block.nodes[i]
    block.button_pin(i).drive_low()
    assert node.wait_for(lambda: bool(node.store.active_alerts()), timeout=10), "the hold raised nothing"
    block.button_pin(i).drive_high()
    return node.store.active_alerts()[0]


def states(block, alert_id):
    return {i: (n.store.get_alert(alert_id).state if n.store.get_alert(alert_id) else None)
            for i, n in block.nodes.items()}


def run_until_all(block, alert_id, state, limit):
    return block.scheduler.run_until_true(
        lambda: all(s is state for s in states(block, alert_id).values()), limit=limit, step=0.5)


def test_alert_crosses_a_five_node_line_through_its_whole_lifecycle(make_block):
    block = make_block()
    alert = press_and_wait(block, 1)
    assert alert.state is State.REPORTED and alert.reporter == 1
    t_reported = run_until_all(block, alert.id, State.REPORTED, limit=60)
    assert t_reported is not None, states(block, alert.id)
    # node 5 heard it through four relays: every hop takes at least one airtime
    received = block.nodes[5].store.get_alert(alert.id).opened_at - block.EPOCH
    assert 4 * 0.29 < received < 10

    block.nodes[3].act("confirm", alert.id)
    assert run_until_all(block, alert.id, State.CONFIRMED, limit=60) is not None, states(block, alert.id)
    block.nodes[1].act("all_clear", alert.id)
    assert run_until_all(block, alert.id, State.ALL_CLEAR, limit=60) is not None, states(block, alert.id)

    events = block.nodes[5].store.events(alert.id)
    assert [(e["state"], e["signer"], e["source"]) for e in events if e["outcome"] in ("new", "changed")] == [
        (State.REPORTED, 1, "air"), (State.CONFIRMED, 3, "air"), (State.ALL_CLEAR, 1, "air")]


def test_every_node_gets_it_with_twenty_percent_loss_on_every_link(make_block):
    block = make_block(loss=0.2, seed=7)
    alert = press_and_wait(block, 1)
    t = run_until_all(block, alert.id, State.REPORTED, limit=1800)
    assert t is not None, states(block, alert.id)
    block.nodes[3].act("confirm", alert.id)
    assert run_until_all(block, alert.id, State.CONFIRMED, limit=1800) is not None, states(block, alert.id)
    block.nodes[1].act("all_clear", alert.id)
    assert run_until_all(block, alert.id, State.ALL_CLEAR, limit=1800) is not None, states(block, alert.id)


@pytest.mark.parametrize("seed", range(10))
def test_lossy_line_delivers_to_all_within_the_repeat_schedule(make_block, seed):
    """Re-sends make delivery a matter of time, not luck: ten seeds, all nodes, bounded time."""
    block = make_block(loss=0.2, seed=seed)
    alert = block.nodes[1].report()
    assert run_until_all(block, alert.id, State.REPORTED, limit=1800) is not None, states(block, alert.id)


def test_a_report_siren_sounds_on_other_nodes(make_block):
    block = make_block(n=3)
    siren = block.siren_pin(3)
    alert = block.nodes[1].report()
    assert run_until_all(block, alert.id, State.REPORTED, limit=60) is not None
    assert any(state for _, state in siren.states), "node 3's siren never came on"


def test_a_second_report_of_the_same_place_merges_into_one_incident(make_block):
    block = make_block(n=3)
    first = block.nodes[1].report()
    block.scheduler.run_for(60)
    again = press_and_wait_again(block, 1)
    assert again.id == first.id
    block.scheduler.run_for(60)
    for node in block.nodes.values():
        assert [a.id for a in node.store.active_alerts()] == [first.id]


def press_and_wait_again(block, i):
    node = block.nodes[i]
    before = len(node.store.events())
    block.button_pin(i).drive_low()
    assert node.wait_for(lambda: len(node.store.events()) > before, timeout=10)
    block.button_pin(i).drive_high()
    return node.store.active_alerts()[0]


def test_reports_from_two_nodes_about_one_place_merge_everywhere(make_block):
    block = make_block(n=3)
    a = block.nodes[1].report(location=102)
    b = block.nodes[3].report(location=102)  # before either heard the other
    block.scheduler.run_for(120)
    for node in block.nodes.values():
        active = node.store.active_alerts()
        assert len(active) == 1, (node.id, active)
        assert node.store.resolve(a.id) == node.store.resolve(b.id) == active[0].id
    # a confirm of either id lands on each node's one incident
    block.nodes[2].act("confirm", b.id)
    block.scheduler.run_for(120)
    for node in block.nodes.values():
        assert [x.state for x in node.store.active_alerts()] == [State.CONFIRMED]


def test_grid_and_random_topologies_reach_every_node(make_block):
    for topology in ("grid", "random"):
        block = make_block(n=9, topology=topology)
        alert = block.nodes[1].report()
        assert run_until_all(block, alert.id, State.REPORTED, limit=60) is not None, topology


def test_an_unplugged_radio_keeps_the_frame_and_sends_it_once_back(make_block):
    block = make_block(n=3)
    radio = block.air.radios[1]
    radio.plugged = False
    alert = block.nodes[1].report()
    block.scheduler.run_for(5)
    assert block.nodes[1].store.troubles().get("radio") == "radio unplugged"
    assert block.nodes[3].store.get_alert(alert.id) is None
    assert block.nodes[1].store.pending(), "the frame must wait in the outbox"
    radio.plugged = True
    assert run_until_all(block, alert.id, State.REPORTED, limit=30) is not None
    assert "radio" not in block.nodes[1].store.troubles()
    assert block.nodes[1].store.pending() == []


def test_the_demo_tells_its_caller_where_to_look_and_prints_nothing(tmp_path, capfd):
    import http.cookiejar
    import json
    import re
    import threading
    import urllib.parse
    import urllib.request

    from test_cli import free_port_base

    from node.sim import run_demo

    base = free_port_base(2)
    ready, stopping, said, failed = threading.Event(), threading.Event(), [], []

    def say(line):
        said.append(line)
        if "Ctrl-C stops the block" in line:
            ready.set()

    def demo_run():
        try:
            run_demo(tmp_path / "demo", 2, "line", port_base=base, loss=0.0, preset="MEDIUM_FAST", seed=1,
                     scale=5.0, stopping=stopping, say=say)
        except BaseException as exc:
            failed.append(exc)
        finally:
            ready.set()

    # In a thread: run_demo takes SIGTERM only in the main thread, and pytest's must stay.
    demo = threading.Thread(target=demo_run, daemon=True)
    demo.start()
    try:
        assert ready.wait(60) and not failed, (failed, said)
        assert f"  node 2 page: http://127.0.0.1:{base + 2}/" in said
        # Two nodes: the banner confirms from node 2, and names no node the block does not have.
        assert any(line.startswith("Confirm from node 2:") for line in said), said
        assert not any("node 3" in line or "nodes/3" in line for line in said), said
        # The demo captain's login, made for this run, opens the console of every node.
        login = re.search(r"captains: .* name (\S+), password (\S+)$", "\n".join(said), re.M)
        assert login, said
        for i in (1, 2):
            browser = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            form = browser.open(f"http://127.0.0.1:{base + i}/captain/login", timeout=10).read().decode()
            token = re.search(r'name="csrf_token" value="([^"]+)"', form)[1]
            data = urllib.parse.urlencode({"name": login[1], "password": login[2], "csrf_token": token}).encode()
            console = browser.open(f"http://127.0.0.1:{base + i}/captain/login", data=data, timeout=10)
            assert urllib.parse.urlparse(console.geturl()).path == "/captain", (i, console.geturl())
    finally:
        stopping.set()
        demo.join(60)
    assert not demo.is_alive() and not failed, failed
    assert json.loads(said[-1]) == {"stopped": True, "state": str(tmp_path / "demo"), "kept": True}
    assert (tmp_path / "demo").is_dir()
    assert capfd.readouterr().out == ""


def test_the_banner_fits_the_number_of_nodes():
    from pathlib import Path

    from node.sim import banner

    def lines(n):
        return banner(n, "line", port_base=8000, loss=0.0, preset="MEDIUM_FAST", radio="air", password="pw",
                      root=Path("/tmp/x"), keep=False)

    assert any(line.startswith("Confirm from node 3:") for line in lines(5))
    assert [line for line in lines(2) if "confirm" in line] == [
        "Confirm from node 2:   curl -X POST http://127.0.0.1:8000/nodes/2/confirm"]
    one = "\n".join(lines(1))
    assert "/confirm" not in one and "nodes/2" not in one and "node 2" not in one
    assert "confirming needs a second node: --nodes 2 or more" in one


def sim_process(*args, env=None):
    import os
    import subprocess
    import sys

    exe = os.path.join(os.path.dirname(sys.executable), "silbato")
    return subprocess.Popen([exe, "sim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def test_a_run_without_dir_removes_its_temporary_folder(tmp_path):
    import json
    import signal

    from test_cli import free_port_base

    sim = sim_process("--nodes", "2", "--port-base", str(free_port_base(2)), env={"TMPDIR": str(tmp_path)})
    try:
        said = []
        for line in sim.stdout:
            said.append(line)
            if "Ctrl-C stops the block" in line:
                break
        state = [line.split()[1] for line in said if line.startswith("  state:")]
        assert state and state[0].startswith(str(tmp_path / "silbato-sim-")), said
        assert (tmp_path / state[0]).is_dir()
        assert "removed at exit; --dir DIR keeps the state" in "".join(said)
        sim.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = sim.communicate(timeout=60)
    finally:
        sim.kill()
        sim.wait()
    assert sim.returncode == 0
    assert json.loads(rest.splitlines()[-1]) == {"stopped": True, "state": state[0], "kept": False}
    assert list(tmp_path.iterdir()) == []


def test_a_port_in_use_is_one_line_naming_the_port(tmp_path):
    import socket

    from test_cli import free_port_base

    from node.errors import ListenError

    base = free_port_base(2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        sim = sim_process("--nodes", "2", "--port-base", str(base), "--dir", str(tmp_path / "sim"))
        out, err = sim.communicate(timeout=120)
    assert sim.returncode == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"Error: the sim's control endpoint cannot listen on 127.0.0.1:{base}: "
                                            "Address already in use; choose another --port-base"), err

    # A node's page on a port in use is named the same way.
    block = Block(tmp_path / "block", 2, "line", hold_time=HOLD).start()
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", base + 2))
            taken.listen()
            with pytest.raises(ListenError, match=rf"node 2's page cannot listen on 127\.0\.0\.1:{base + 2}: "):
                block.serve(base)
    finally:
        block.stop()


# -- the control endpoint ---------------------------------------------------------------------

@pytest.fixture
def control(tmp_path):
    """The control endpoint's app on a 3-node block whose button hold is 2 s."""
    block = Block(tmp_path / "block", 3, "line", hold_time=2.0).start()
    yield block, block.control_app(8000, "127.0.0.1").test_client()
    block.stop()


@pytest.mark.parametrize("method, path, status, words", [
    ("post", "/nodes/9/hold?seconds=3", 404, "no node 9"),
    ("post", "/nodes/1/hold?seconds=soon", 400, "seconds must be a number"),
    ("post", "/nodes/1/hold?seconds=99", 400, "seconds must be between 0 and 60"),
    ("post", "/nodes/2/confirm", 409, "node 2 holds no active alert"),
    ("get", "/nodes/1/hold", 405, "GET /nodes/1/hold: use POST; the sim's control endpoint answers"),
    ("get", "/nope", 404, "GET /nope: no such control; the sim's control endpoint answers GET /nodes"),
])
def test_control_errors_answer_json_with_a_sentence(control, method, path, status, words):
    _, client = control
    response = getattr(client, method)(path)
    assert response.status_code == status
    assert response.mimetype == "application/json", response.get_data(as_text=True)[:200]
    assert response.json["status"] == status and words in response.json["error"], response.json


def test_a_hold_shorter_than_hold_time_says_it_raises_nothing(control):
    _, client = control
    short = client.post("/nodes/1/hold?seconds=1")
    assert short.status_code == 200
    assert short.json["long_enough"] is False and short.json["hold_time"] == 2.0
    assert "shorter than hardware.hold_time (2 s)" in short.json["message"]
    assert "raises no report" in short.json["message"]
    again = client.post("/nodes/2/hold?seconds=3")
    assert again.status_code == 200 and again.json["long_enough"] is True and "message" not in again.json


def test_an_overlapping_hold_of_one_button_is_refused(control):
    _, client = control
    assert client.post("/nodes/1/hold?seconds=30").status_code == 200
    second = client.post("/nodes/1/hold?seconds=3")
    assert second.status_code == 409
    assert "node 1's button is already held; it is released in" in second.json["error"]
    assert client.post("/nodes/2/hold?seconds=3").status_code == 200  # another node's button is free


def test_the_demo_captain_logs_in_on_every_node(tmp_path):
    from websupport import app_for, login

    block = Block(tmp_path / "block", 2, "line", hold_time=HOLD).start()
    try:
        block.add_captain("demo", "a password made for this run")
        for i in (1, 2):
            client = app_for(block, i).test_client()
            assert login(client, "demo", "a password made for this run").status_code == 303
            assert login(client, "demo", "wrong password").status_code == 401
    finally:
        block.stop()


# -- silbato sim --sms: node 1 is the SMS gateway, on the real gammu-smsd's dummy phone ------------------

def _gammu_smsd():
    from node.gateway.dummy import GAMMU_SMSD
    return GAMMU_SMSD


@pytest.mark.skipif(_gammu_smsd() is None, reason="gammu-smsd is not installed (.ci/apt-packages)")
def test_sim_sms_a_report_by_text_reaches_the_responders_and_a_confirm_by_text_the_broad_list(tmp_path):
    from gammu import until
    from node.sim import SIM_BROAD, SIM_RESPONDERS

    block = Block(tmp_path / "block", 2, "line", hold_time=HOLD, scale=1.0, sms=True).start()
    try:
        client = block.control_app(8000, "127.0.0.1").test_client()
        (ana, ana_pin, _), (ben, ben_pin, _) = SIM_RESPONDERS
        assert client.get("/sms/out").json == []
        arrived = client.post("/sms/in", json={"from": ana, "text": f"REPORT 101 {ana_pin}"})
        assert arrived.status_code == 200 and arrived.json["arrived"] is True, arrived.json
        # A running node's store is its daemon's connection: read it under the node's lock, as the
        # control endpoint does (unlocked, a read can land inside the daemon's savepoint).
        until(lambda: locked(block.nodes[2], lambda store: store.active_alerts()), 30, "the texted report on node 2")
        alert = locked(block.nodes[1], lambda store: store.active_alerts())[0]
        assert alert.state is State.REPORTED
        out = until(lambda: [t for t in client.get("/sms/out").json if f"CONFIRM {alert.id} PIN" in t["text"]]
                    if len(client.get("/sms/out").json) >= 3 else None, 30, "the responders' texts")
        assert {t["to"] for t in out} == {ana, ben}, out
        assert any(t["to"] == ana and "REPORT 101 received" in t["text"] for t in client.get("/sms/out").json)

        # The reporter cannot confirm her own report; a second responder can, by text, though the
        # gateway (node 1, the roster's dispatcher) signs both.
        client.post("/sms/in", query_string={"from": ana, "text": f"CONFIRM {alert.id} {ana_pin}"})
        client.post("/sms/in", json={"from": ben, "text": f"CONFIRM {alert.id} {ben_pin}"})
        until(lambda: locked(block.nodes[2], lambda store: store.get_alert(alert.id).state) is State.CONFIRMED, 30,
              "the texted CONFIRM")
        refused = locked(block.nodes[1],
                         lambda store: list(store.db.query("SELECT * FROM requests WHERE action = 'confirm'")))
        assert sorted(r["status"] for r in refused) == ["refused", "signed"], refused
        broad = until(lambda: [t for t in client.get("/sms/out").json if t["to"] == SIM_BROAD[0][0]], 60,
                      "the broad list's text")
        assert f"Silbato {alert.id}: RAID CONFIRMED at Building 1" in broad[0]["text"]
        newest_first = client.get("/sms/out").json
        assert newest_first[-1]["to"] in (ana, ben) and "possible raid" in newest_first[-1]["text"]
    finally:
        block.stop()



def locked(node, read):
    """``read(node.store)`` under the node's lock (a running node's daemon threads share its connection)."""
    with node.lock:
        return read(node.store)

@pytest.mark.skipif(_gammu_smsd() is None, reason="gammu-smsd is not installed (.ci/apt-packages)")
@pytest.mark.parametrize("body, words", [
    ({"from": "call me", "text": "hi"}, "from: not a phone number"),
    ({"from": "+15550100001"}, 'send JSON {"from"'),
    ({"from": "+15550100001", "text": ""}, "text: 1 to 1000 characters"),
    ("REPORT", 'send JSON {"from"'),
])
def test_sim_sms_in_refuses_bad_input_with_a_sentence(tmp_path, body, words):
    block = Block(tmp_path / "block", 1, "line", hold_time=HOLD, scale=1.0, sms=True).start()
    try:
        response = block.control_app(8000, "127.0.0.1").test_client().post("/sms/in", json=body)
        assert response.status_code == 400 and words in response.json["error"], response.json
    finally:
        block.stop()


def test_the_sms_controls_say_how_to_get_them(control):
    _, client = control
    for response in (client.post("/sms/in", json={"from": "+15550100001", "text": "HELP"}), client.get("/sms/out")):
        assert response.status_code == 404 and "silbato sim --sms" in response.json["error"]


def test_sim_sms_without_gammu_smsd_is_one_clear_line_and_exit_1(tmp_path):
    import os
    import sys

    from test_cli import free_port_base

    base = free_port_base(2)
    sim = sim_process("--sms", "--nodes", "2", "--port-base", str(base), "--dir", str(tmp_path / "sim"),
                      env={"PATH": os.path.dirname(sys.executable)})   # no gammu-smsd on this PATH
    out, err = sim.communicate(timeout=120)
    assert sim.returncode == 1 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == ("Error: --sms runs the real gammu-smsd on Gammu's dummy phone, and "
                                            "gammu-smsd is not installed (Debian: apt-get install gammu-smsd)"), err
    assert not (tmp_path / "sim").exists(), "nothing started"
