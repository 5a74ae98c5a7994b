"""The simulated Meshtastic radio's pty: it never becomes the controlling terminal of the process using it."""

import signal
import subprocess
import sys
import textwrap

# A session leader with no controlling terminal, as under `setsid bash .ci/test` or systemd: it
# connects to a simulated radio the way the tests do (the real meshtastic library), then
# unplugs and closes it. Had the pty become its controlling terminal, the close would hang it
# up and the kernel would end this process with SIGHUP.
SESSION_LEADER = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from node.radio.link import MeshtasticLink
    from node.radio.sim_air import SimAir
    from node.radio.sim_radio import SimMeshtasticRadio

    assert os.getsid(0) == os.getpid(), "not a session leader"
    path = Path(sys.argv[1]) / "radio"
    radio = SimMeshtasticRadio(SimAir(1, "line", scheduler=None), 1, path)
    link = MeshtasticLink(port=str(path))
    link.start(lambda frame: None)
    assert link.connected.wait(15), "the link never connected"
    radio.unplug()
    radio.plug()
    link.stop()
    radio.close()
    tty_nr = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
    print("controlling terminal:", tty_nr)
""")


def test_a_session_leader_survives_closing_a_simulated_radio(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SESSION_LEADER, str(tmp_path)], start_new_session=True,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != -signal.SIGHUP, "the radio's pty became the session's terminal: killed by SIGHUP"
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "controlling terminal: 0"
