"""A simulated Meshtastic radio that speaks the real stream protocol on a pseudo-terminal.

Like gpiozero's ``MockFactory``, the fake ships inside the package. The real
``meshtastic.serial_interface.SerialInterface`` connects to it as to a radio on
USB, so the node's ``MeshtasticLink`` is tested through the real library:

- frames are ``0x94 0xC3``, a 2-byte big-endian length, then a protobuf
  (``ToRadio`` in, ``FromRadio`` out, from the installed ``meshtastic`` package);
- ``want_config_id`` is answered with ``my_info``, ``metadata``, ``node_info``,
  the LoRa and device config, the MQTT module config, eight channels and
  ``config_complete_id``;
- every packet sent gets a ``queueStatus``; refusals come back as routing NAKs;
- packets go out on, and come in from, the simulated air of ``node.radio.sim_air``.

It listens on a pty (``os.openpty``, raw mode) reached through a symlink, the
way ``/dev/serial/by-id/...`` links reach ``/dev/ttyACM0``, and optionally on a
loopback TCP port for ``TCPInterface``. ``unplug()`` and ``plug()`` model the USB
cable: the symlink goes, the pty closes, and a replug gets a new pty path. Each pty
is the controlling terminal of a small session of its own (``hold_session``), so it
never becomes the client's (see there).

This module imports meshtastic's protobuf classes only; ``node.radio.interface`` stays the
one module that imports the meshtastic interfaces.
"""

from __future__ import annotations

import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from meshtastic.protobuf import (admin_pb2, channel_pb2, config_pb2, localonly_pb2, mesh_pb2,
                                 module_config_pb2, portnums_pb2)

from node.radio.sim_air import Packet, SimAir, SimRadio

log = logging.getLogger(__name__)

START1, START2 = 0x94, 0xC3
MAX_TO_RADIO = 512
BROADCAST_NUM = 0xFFFFFFFF
NODE_NUM_BASE = 0x5B000000
TEXT_INTERVAL = 2.0  # seconds: the firmware's rate limit for text messages


def node_num(number: int) -> int:
    """The Meshtastic node number of simulated radio ``number`` (never 0: the library drops from=0)."""
    return NODE_NUM_BASE + number


# The session holder: takes the pty on its stdin as its session's controlling terminal, says so
# on stdout, and waits for the hangup that the radio's end closing sends it (SIGHUP's default
# action ends it; it is reset in case this process ignores SIGHUP, as under nohup).
_HOLDER = ("import fcntl, os, signal, termios\n"
           "signal.signal(signal.SIGHUP, signal.SIG_DFL)\n"
           "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
           "os.write(1, b'.')\n"
           "os.close(1)\n"
           "while True: signal.pause()\n")


def hold_session(terminal: int) -> subprocess.Popen | None:
    """A child process in a new session whose controlling terminal is the pty ``terminal`` (None if that failed).

    A session leader with no controlling terminal (a daemon, or ``setsid bash .ci/test``) that
    opens a terminal without ``O_NOCTTY`` makes it its own, and meshtastic's ``SerialInterface``
    opens the port that way (to clear HUPCL) before pyserial opens it with ``O_NOCTTY``. Closing
    the radio's end of the pty then hangs it up, and the kernel sends SIGHUP to that session
    leader, which dies. A terminal that is already some session's controlling terminal never
    becomes another's, so the pty is given to this holder first; the hangup ends the holder.
    """
    holder = subprocess.Popen([sys.executable, "-I", "-S", "-c", _HOLDER], stdin=terminal,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    assert holder.stdout is not None
    ready = holder.stdout.read(1)
    holder.stdout.close()
    if ready:
        return holder
    log.warning("the simulated radio's pty has no session of its own; a session leader that opens it may get SIGHUP")
    end_session(holder)
    return None


def end_session(holder: subprocess.Popen | None) -> None:
    """Reap a session holder; the hangup of its pty has ended it, or this does."""
    if holder is None:
        return
    try:
        holder.wait(timeout=2)
    except subprocess.TimeoutExpired:
        holder.kill()
        holder.wait()


def frame(message) -> bytes:
    body = message.SerializeToString()
    return bytes([START1, START2, len(body) >> 8, len(body) & 0xFF]) + body


class StreamParser:
    """Splits a byte stream into protobuf bodies; bytes outside frames (wake bytes, console text) are dropped."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> list[bytes]:
        self.buffer += data
        out = []
        while True:
            start = self.buffer.find(bytes([START1, START2]))
            if start < 0:
                keep = 1 if self.buffer[-1:] == bytes([START1]) else 0
                self.dropped += len(self.buffer) - keep
                del self.buffer[:len(self.buffer) - keep]
                return out
            self.dropped += start
            del self.buffer[:start]
            if len(self.buffer) < 4:
                return out
            length = self.buffer[2] << 8 | self.buffer[3]
            if length > MAX_TO_RADIO:
                self.dropped += 1
                del self.buffer[:1]  # not a real header: resync
                continue
            if len(self.buffer) < 4 + length:
                return out
            out.append(bytes(self.buffer[4:4 + length]))
            del self.buffer[:4 + length]


class SimMeshtasticRadio:
    """Simulated radio ``number`` on ``air``, reachable at ``path`` (a symlink to its pty)."""

    def __init__(self, air: SimAir, number: int, path: Path, *, firmware: str = "2.6.11.60ec05e",
                 region: int = config_pb2.Config.LoRaConfig.RegionCode.US, psk: bytes | None = None,
                 mqtt: bool = False, tcp_port: int | None = None):
        self.air = air
        self.number = number
        self.node_num = node_num(number)
        self.path = Path(path)
        self.air_radio: SimRadio = air.radios[number]
        self.air_radio.on_packet = self._heard
        self.firmware = firmware
        # The radio's settings, as the firmware keeps them; admin messages change them.
        self.local = localonly_pb2.LocalConfig()
        presets = config_pb2.Config.LoRaConfig.ModemPreset
        self.local.lora.CopyFrom(config_pb2.Config.LoRaConfig(
            use_preset=True, region=region, hop_limit=air.hop_limit, tx_enabled=True,
            modem_preset=presets.Value(air.preset) if air.preset in presets.keys() else 0))
        self.local.device.role = config_pb2.Config.DeviceConfig.Role.CLIENT
        self.local.bluetooth.enabled = True
        self.local.security.serial_enabled = True
        self.modules = localonly_pb2.LocalModuleConfig()
        self.modules.mqtt.enabled = mqtt
        self.owner = mesh_pb2.User(id=f"!{self.node_num:08x}", long_name=f"Silbato sim {number}",
                                   short_name=f"S{number % 1000}")
        self.session_passkey = os.urandom(8)
        self.channels = [channel_pb2.Channel(index=i, role=channel_pb2.Channel.Role.DISABLED) for i in range(8)]
        self.channels[0].role = channel_pb2.Channel.Role.PRIMARY
        self.channels[0].settings.psk = os.urandom(16) if psk is None else psk
        self.channels[0].settings.name = "silbato"
        self.nak_next: str = ""  # a test control: refuse the next packet with this routing error
        # a test control: the cable goes as the next packet arrives, after the radio took it and
        # before its queueStatus could reach the client
        self.unplug_on_next = False
        self.sent: list[mesh_pb2.MeshPacket] = []   # every packet the client handed us, in order
        self.texts: list[str] = []
        self.configs = 0
        self._last_text = -1e9
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._holder: subprocess.Popen | None = None  # the pty's own session (hold_session)
        self._generation = 0  # bumped on every plug, so a reader of an old pty stops
        self._client: socket.socket | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._tcp: socket.socket | None = None
        self.tcp_port = None
        if tcp_port is not None:
            self._listen_tcp(tcp_port)
        self.plug()

    # -- the USB cable ---------------------------------------------------------------------

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def plug(self) -> str:
        """Connect: a new pty, the symlink pointing at it, and the radio back on the air."""
        with self._lock:
            if self._master is not None:
                return os.ttyname(self._slave)
            master, slave = os.openpty()
            tty.setraw(slave)
            self._holder = hold_session(slave)
            self._master, self._slave = master, slave
            self._generation += 1
            generation = self._generation
            pts = os.ttyname(slave)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(pts)
            os.replace(tmp, self.path)
            self.air_radio.plugged = True
        thread = threading.Thread(target=self._read_pty, args=(master, generation), name=f"sim-radio-{self.number}",
                                  daemon=True)
        thread.start()
        self._threads.append(thread)
        return pts

    def unplug(self) -> None:
        """Pull the cable: the symlink goes, the pty closes (the client's reads fail), the radio goes quiet."""
        with self._lock:
            self.path.unlink(missing_ok=True)
            self.air_radio.plugged = False
            master, slave, holder = self._master, self._slave, self._holder
            self._master = self._slave = self._holder = None
            self._generation += 1
        for fd in (master, slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        end_session(holder)  # the master's close hung up the pty: SIGHUP ends its holder

    def close(self) -> None:
        self._stopping.set()
        self.unplug()
        if self._tcp is not None:
            self._tcp.close()
        if self._client is not None:
            self._client.close()
        for thread in self._threads:
            thread.join(timeout=2)

    def inject(self, data: bytes) -> None:
        """Write raw bytes to the client, such as a console line or garbage."""
        self._write_raw(data)

    # -- the stream --------------------------------------------------------------------------

    def _read_pty(self, master: int, generation: int) -> None:
        parser = StreamParser()
        while not self._stopping.is_set() and self._generation == generation:
            try:
                ready, _, _ = select.select([master], [], [], 0.2)
                if not ready:
                    continue
                data = os.read(master, 4096)
            except (OSError, ValueError):
                return  # unplugged
            if not data:
                return
            for body in parser.feed(data):
                self._handle(body)

    def _listen_tcp(self, port: int) -> None:
        self._tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._tcp.bind(("127.0.0.1", port))
        self._tcp.listen(1)
        self.tcp_port = self._tcp.getsockname()[1]
        thread = threading.Thread(target=self._serve_tcp, name=f"sim-radio-tcp-{self.number}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _serve_tcp(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._tcp.accept()
            except OSError:
                return
            self._client = client
            parser = StreamParser()
            while not self._stopping.is_set():
                try:
                    data = client.recv(4096)
                except OSError:
                    break
                if not data:
                    break
                for body in parser.feed(data):
                    self._handle(body)
            self._client = None
            client.close()

    def _write_raw(self, data: bytes) -> None:
        with self._lock:
            master, client = self._master, self._client
        try:
            if client is not None:
                client.sendall(data)
            elif master is not None:
                os.write(master, data)
        except OSError as exc:
            log.debug("radio %s: write failed: %s", self.number, exc)

    def _send(self, **fields) -> None:
        self._write_raw(frame(mesh_pb2.FromRadio(**fields)))

    # -- what the client asks -----------------------------------------------------------------

    def _handle(self, body: bytes) -> None:
        message = mesh_pb2.ToRadio()
        try:
            message.ParseFromString(body)
        except Exception:
            log.warning("radio %s: unparseable ToRadio (%d bytes)", self.number, len(body))
            return
        kind = message.WhichOneof("payload_variant")
        if kind == "want_config_id":
            self._send_config(message.want_config_id)
        elif kind == "packet":
            self._handle_packet(message.packet)
        elif kind == "heartbeat":
            self._send(queueStatus=mesh_pb2.QueueStatus(res=0, free=16, maxlen=16))

    @property
    def lora(self) -> config_pb2.Config.LoRaConfig:
        return self.local.lora

    def metadata(self) -> mesh_pb2.DeviceMetadata:
        # Modules a client would query with blocking admin requests are marked absent.
        excluded = mesh_pb2.ExcludedModules.EXTNOTIF_CONFIG | mesh_pb2.ExcludedModules.CANNEDMSG_CONFIG
        return mesh_pb2.DeviceMetadata(firmware_version=self.firmware, device_state_version=23,
                                       role=self.local.device.role, hasPKC=True, excluded_modules=excluded)

    def _send_config(self, config_id: int) -> None:
        self.configs += 1
        self._send(my_info=mesh_pb2.MyNodeInfo(my_node_num=self.node_num, min_app_version=30200))
        self._send(metadata=self.metadata())
        self._send(node_info=mesh_pb2.NodeInfo(num=self.node_num, user=self.owner))
        for field in ("device", "position", "power", "network", "display", "lora", "bluetooth", "security"):
            self._send(config=config_pb2.Config(**{field: getattr(self.local, field)}))
        for field in ("mqtt", "serial", "external_notification", "telemetry"):
            self._send(moduleConfig=module_config_pb2.ModuleConfig(**{field: getattr(self.modules, field)}))
        for channel in self.channels:
            self._send(channel=channel)
        self._send(config_complete_id=config_id)

    def _handle_packet(self, packet: mesh_pb2.MeshPacket) -> None:
        self.sent.append(packet)
        if self.unplug_on_next and packet.decoded.portnum != portnums_pb2.PortNum.ADMIN_APP:
            self.unplug_on_next = False
            self.air_radio.emit(bytes(packet.decoded.payload), port=packet.decoded.portnum, channel=packet.channel,
                                hop_limit=packet.hop_limit, packet_id=packet.id)
            threading.Thread(target=self.unplug, name=f"sim-radio-{self.number}-pull", daemon=True).start()
            return
        self._send(queueStatus=mesh_pb2.QueueStatus(res=0, free=16, maxlen=16, mesh_packet_id=packet.id))
        port = packet.decoded.portnum
        if port == portnums_pb2.PortNum.ADMIN_APP and packet.to == self.node_num:
            self._admin(packet)
            return
        if self.nak_next:
            reason, self.nak_next = self.nak_next, ""
            self._nak(packet, reason)
            return
        if len(packet.decoded.payload) > mesh_pb2.Constants.DATA_PAYLOAD_LEN:
            self._nak(packet, "TOO_LARGE")
            return
        if port == portnums_pb2.PortNum.TEXT_MESSAGE_APP:
            now = time.monotonic()
            if now - self._last_text < TEXT_INTERVAL:
                self._nak(packet, "RATE_LIMIT_EXCEEDED")
                return
            self._last_text = now
            self.texts.append(packet.decoded.payload.decode("utf-8", "replace"))
        if port in (portnums_pb2.PortNum.PRIVATE_APP, portnums_pb2.PortNum.TEXT_MESSAGE_APP):
            self.air_radio.emit(bytes(packet.decoded.payload), port=port, channel=packet.channel,
                                hop_limit=packet.hop_limit, packet_id=packet.id)

    def _admin(self, packet: mesh_pb2.MeshPacket) -> None:
        """Admin messages to this radio: the settings a client reads and writes."""
        message = admin_pb2.AdminMessage()
        try:
            message.ParseFromString(packet.decoded.payload)
        except Exception:
            self._nak(packet, "BAD_REQUEST")
            return
        kind = message.WhichOneof("payload_variant")
        reply = admin_pb2.AdminMessage(session_passkey=self.session_passkey)
        if kind == "set_config":
            section = message.set_config.WhichOneof("payload_variant")
            getattr(self.local, section).CopyFrom(getattr(message.set_config, section))
        elif kind == "set_module_config":
            section = message.set_module_config.WhichOneof("payload_variant")
            getattr(self.modules, section).CopyFrom(getattr(message.set_module_config, section))
        elif kind == "set_channel":
            self.channels[message.set_channel.index].CopyFrom(message.set_channel)
        elif kind == "set_owner":
            self.owner.long_name = message.set_owner.long_name or self.owner.long_name
            self.owner.short_name = message.set_owner.short_name or self.owner.short_name
        elif kind == "get_config_request":
            name = admin_pb2.AdminMessage.ConfigType.Name(message.get_config_request)
            section = name[:-len("_CONFIG")].lower()
            if section in ("device", "position", "power", "network", "display", "lora", "bluetooth", "security"):
                getattr(reply.get_config_response, section).CopyFrom(getattr(self.local, section))
            # SESSIONKEY_CONFIG: the passkey in every reply is the answer
        elif kind == "get_module_config_request":
            field = localonly_pb2.LocalModuleConfig.DESCRIPTOR.fields[message.get_module_config_request].name
            getattr(reply.get_module_config_response, field).CopyFrom(getattr(self.modules, field))
        elif kind == "get_channel_request":
            reply.get_channel_response.CopyFrom(self.channels[message.get_channel_request - 1])
        elif kind == "get_owner_request":
            reply.get_owner_response.CopyFrom(self.owner)
        elif kind == "get_device_metadata_request":
            reply.get_device_metadata_response.CopyFrom(self.metadata())
        # begin_edit_settings, commit_edit_settings and others need no answer but the ACK
        if packet.want_ack:
            self._routing(packet, "NONE")
        if packet.decoded.want_response:
            self._reply(packet, portnums_pb2.PortNum.ADMIN_APP, reply.SerializeToString())

    def _reply(self, packet: mesh_pb2.MeshPacket, port: int, payload: bytes) -> None:
        reply = mesh_pb2.MeshPacket(to=self.node_num, channel=packet.channel, id=(packet.id + 1) & 0xFFFFFFFF)
        setattr(reply, "from", self.node_num)
        reply.decoded.portnum = port
        reply.decoded.payload = payload
        reply.decoded.request_id = packet.id
        self._send(packet=reply)

    def _routing(self, packet: mesh_pb2.MeshPacket, reason: str) -> None:
        routing = mesh_pb2.Routing(error_reason=mesh_pb2.Routing.Error.Value(reason))
        self._reply(packet, portnums_pb2.PortNum.ROUTING_APP, routing.SerializeToString())

    def _nak(self, packet: mesh_pb2.MeshPacket, reason: str) -> None:
        self._routing(packet, reason)

    def report_utilisation(self, percent: float) -> None:
        """Send the client this radio's device telemetry, as firmware does every few minutes."""
        from meshtastic.protobuf import telemetry_pb2

        metrics = telemetry_pb2.Telemetry(time=int(time.time()),
                                          device_metrics=telemetry_pb2.DeviceMetrics(channel_utilization=percent,
                                                                                     air_util_tx=percent / 4))
        self._reply(mesh_pb2.MeshPacket(id=0x5A5A0000 + self.configs), portnums_pb2.PortNum.TELEMETRY_APP,
                    metrics.SerializeToString())

    # -- what the air brings ----------------------------------------------------------------

    def _heard(self, packet: Packet) -> None:
        mesh = mesh_pb2.MeshPacket(to=BROADCAST_NUM, channel=packet.channel, id=packet.id,
                                   hop_limit=packet.hop_limit, rx_snr=5.0, rx_time=int(time.time()))
        setattr(mesh, "from", node_num(packet.origin))
        mesh.decoded.portnum = packet.port
        mesh.decoded.payload = packet.payload
        self._send(packet=mesh)
