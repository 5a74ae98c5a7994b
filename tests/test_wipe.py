"""Wiping a seized node: key, database and captains gone in 10 s, and the block told."""

import os
import subprocess
import sys
import time

from node.sim import Block


def test_both_buttons_held_for_10_s_wipe_the_node_and_the_block_is_told(tmp_path):
    from node import config

    block = Block(tmp_path / "b", 3, "line", scale=None)
    first = block.files.configs[1]   # node 2 has a confirm button
    block.files.configs[1] = config.from_mapping({"hardware.confirm_pin": 5}, base=dict(first), source="test")
    block.start()
    try:
        node = block.nodes[2]
        node.store.add_captain("ana", "scrypt:not-a-real-hash", 0.0)
        block.scheduler.run_for(60)
        key, db = node.config.key_file, node.config.db_file
        assert key.exists() and db.exists()
        factory = block.factories[2]
        factory.pin(17).drive_low()
        factory.pin(5).drive_low()
        started = time.monotonic()
        while not node.wiped and time.monotonic() - started < 15:   # the gesture is 10 s of wall time
            time.sleep(0.1)
        assert node.wiped, "both buttons held: the node wipes itself after 10 s"
        assert not key.exists() and not db.exists() and not db.with_name(db.name + "-wal").exists()
        # no report was raised by holding the panic button as part of the gesture
        assert block.nodes[1].store.active_alerts() == []
        block.scheduler.run_for(5)   # the last heartbeat reaches the neighbours
        for i in (1, 3):
            troubles = block.nodes[i].store.troubles()
            assert "B2 was wiped: ask the organizers to revoke its key" in troubles.get("wiped-2", "")
    finally:
        block.nodes.pop(2, None)
        block.stop()


def test_silbato_wipe_without_a_daemon_destroys_the_files(tmp_path):
    from node.sim import provision
    from node.store import Store

    files = provision(tmp_path, 2)
    cfg = files.configs[0]
    Store(cfg.db_file).close()
    toml = tmp_path / "silbato.toml"
    spool = tmp_path / "spool"
    (spool / "outbox").mkdir(parents=True)
    (spool / "outbox" / "OUTB0000000001_0_00_+15550000001_silbato.txt").write_text("a text")
    toml.write_text(f'[node]\nstate_dir = "{cfg.state_dir}"\norganizer_key = "{cfg["node.organizer_key"]}"\n'
                    f'[sms]\nspool = "{spool}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SILBATO_")}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "node.cli", "--config", str(toml), "wipe", "--yes"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started <= 30  # generous: the promise is 10 s, the interpreter starts too
    assert "wiped in" in result.stdout and not cfg.key_file.exists() and not cfg.db_file.exists()
    assert not list((spool / "outbox").iterdir()) and "1 files in gammu-smsd's spool" in result.stdout
