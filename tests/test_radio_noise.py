"""What the radio code says when things go wrong: each sentence once, and no library tracebacks."""

import logging
import socket
import threading

from click.testing import CliRunner
from meshtastic.mesh_interface import MeshInterface
from meshtastic.tcp_interface import TCPInterface

from node.cli import cli
from node.errors import RadioError
from node.radio.link import MeshtasticLink
from node.radio.sim_air import SimAir
from node.radio.sim_radio import SimMeshtasticRadio

CONNECT = 20  # seconds: generous bounds for waits, never speed asserts


def closed_port() -> int:
    """A localhost TCP port nobody listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_radio_that_does_not_answer_is_said_once_however_many_retries():
    link = MeshtasticLink(tcp=f"127.0.0.1:{closed_port()}", connect_timeout=2)
    for _ in range(3):  # the supervisor's retries, driven by hand
        assert link._connect() is False
    sentence = link.troubles["radio"]
    assert sentence.count("did not answer") == 1, sentence
    assert sentence.startswith("radio at 127.0.0.1:")


def test_radio_info_over_tcp_prints_no_library_traceback(tmp_path, monkeypatch, capfd, caplog):
    radio = SimMeshtasticRadio(SimAir(1), 1, tmp_path / "radio", tcp_port=0)
    toml = tmp_path / "silbato.toml"
    toml.write_text(f'[node]\nstate_dir = "{tmp_path / "state"}"\n'
                    f'[radio]\ntcp = "127.0.0.1:{radio.tcp_port}"\n')
    # The library's reader thread sends its first heartbeat just after the interface reports
    # connected, racing a quick close. Force the losing order every time: the heartbeat waits
    # until close() has half-closed the socket, and close waits for the reader to finish.
    half_closed = threading.Event()
    start_heartbeat = MeshInterface._startHeartbeat
    wait_for_reader = TCPInterface._wait_for_reader_exit

    def late_heartbeat(self):
        half_closed.wait(10)
        start_heartbeat(self)

    def reader_writes_now(self, timeout):
        half_closed.set()
        wait_for_reader(self, 10)

    monkeypatch.setattr(MeshInterface, "_startHeartbeat", late_heartbeat)
    monkeypatch.setattr(TCPInterface, "_wait_for_reader_exit", reader_writes_now)
    caplog.set_level(logging.WARNING)
    try:
        result = CliRunner().invoke(cli, ["--config", str(toml), "radio", "info"], obj={},
                                    catch_exceptions=False)
    finally:
        radio.close()
    assert half_closed.is_set(), "the race was not forced"
    assert result.exit_code == 0, result.output
    assert "firmware" in result.output and "health" in result.output
    printed = result.output + "".join(capfd.readouterr()) + caplog.text
    assert "Traceback" not in printed and "Broken pipe" not in printed and "BrokenPipe" not in printed, printed


class Noticed(logging.Handler):
    """Set when the library logs that it saw the TCP connection close."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.event = threading.Event()

    def emit(self, record):
        if record.getMessage().startswith("Closed socket"):
            self.event.set()


def test_a_frame_sent_as_the_tcp_connection_drops_goes_out_on_the_next_connection(tmp_path, caplog):
    radio = SimMeshtasticRadio(SimAir(2, "line"), 1, tmp_path / "radio", tcp_port=0)
    # A long send_timeout: a frame lost in the drop must not wait for it to be noticed.
    link = MeshtasticLink(tcp=f"127.0.0.1:{radio.tcp_port}", send_timeout=60)
    library = logging.getLogger("meshtastic.tcp_interface")
    noticed = Noticed()
    caplog.set_level(logging.DEBUG, logger="meshtastic.tcp_interface")
    library.addHandler(noticed)
    link.start(lambda frame: None)
    try:
        assert link.connected.wait(CONNECT), link.troubles
        radio._client.shutdown(socket.SHUT_RDWR)  # the device (or a TCP proxy) drops the connection
        # The frame is written just after the library saw the drop: it used to reconnect unseen a
        # second later, and a frame written meanwhile vanished until its confirmation timed out.
        assert noticed.event.wait(CONNECT)
        sent = threading.Event()

        def outbox():  # as the outbox's sender does: try, and on RadioError try again when the link is back
            for _ in range(5):
                try:
                    link.send(b"written in the gap")
                except RadioError:
                    link.connected.wait(CONNECT)
                    continue
                sent.set()
                return

        threading.Thread(target=outbox, daemon=True).start()
        assert sent.wait(CONNECT), "the frame waited for a confirmation that never came"
        assert radio.sent[-1].decoded.payload == b"written in the gap"
        assert link.connects == 2, "the link saw the drop and built a fresh interface"
    finally:
        library.removeHandler(noticed)
        link.stop()
        radio.close()
