"""Opening, probing and closing a meshtastic interface, and the start-up checks on a radio's settings.

Used by the link (``MeshtasticLink``), and through ``opened`` and ``probe`` by
``silbato radio info|configure`` and ``silbato doctor``.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from contextlib import contextmanager
from typing import Iterator

from node.config import Config, parse_host_port
from node.errors import RadioError

log = logging.getLogger(__name__)

MIN_FIRMWARE = (2, 6, 11)
DEFAULT_PSK = b"\x01"           # Meshtastic's well-known default channel key, shown as AQ==
CONNECT_TIMEOUT = 15.0          # seconds for the config handshake
CLOSE_TIMEOUT = 3.0             # seconds for close() before we abandon the old interface


def firmware_tuple(version: str) -> tuple[int, int, int] | None:
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", version or "")
    return tuple(int(x) for x in match.groups()) if match else None  # type: ignore[return-value]


def check_radio(firmware: str, psk: bytes, mqtt_enabled: bool, region: int) -> dict[str, str]:
    """Start-up checks on the radio's settings, as TROUBLE sentences saying what to do."""
    found: dict[str, str] = {}
    version = firmware_tuple(firmware)
    if version is None or version < MIN_FIRMWARE:
        found["radio-firmware"] = (f"radio firmware {firmware or 'unknown'} is older than 2.6.11 and has the "
                                   "duplicate-key flaw CVE-2025-52464: flash 2.6.11 or newer")
    if psk in (b"", DEFAULT_PSK):
        found["radio-channel"] = ("the radio's channel uses the public default key" if psk else
                                  "the radio's channel has no key") + \
            ": run 'silbato radio configure' to set the block's private channel key"
    if mqtt_enabled:
        found["radio-mqtt"] = "MQTT uplink is on, so alerts could leave the block: turn MQTT off on the radio"
    if region == 0:
        found["radio-region"] = "the radio's LoRa region is unset, so it will not transmit: set the region"
    return found


def close_interface(iface, timeout: float = CLOSE_TIMEOUT) -> None:
    """Close a meshtastic interface, giving up after ``timeout`` seconds (its close() can hang)."""
    def quiet_close() -> None:
        try:
            iface.close()
        except Exception as exc:
            log.debug("closing the radio interface: %s", exc)

    closer = threading.Thread(target=quiet_close, name="radio-close", daemon=True)
    closer.start()
    closer.join(timeout)
    if closer.is_alive():
        log.warning("closing the radio interface hung; abandoning it")


_REPORTING: dict[type, type] = {}


class _HonestTcp:
    """A TCP interface that says when its connection drops, and writes nothing once closing.

    When the device drops the connection, the library reconnects silently a second later on
    the same interface: what was written meanwhile vanishes and nothing tells the link, which
    noticed only when the radio never confirmed the frame (seconds later). Instead the reader
    ends and the library reports the connection lost (``meshtastic.connection.lost``), as it
    does for serial; the link builds a fresh interface at once and sends the frame again.

    The library's reader thread sends its first heartbeat just after the interface says it
    is connected, so a quick open and close (``silbato radio info``) races it: the heartbeat
    lands on the socket ``TCPInterface.close`` has half-closed, and the reader prints a
    BrokenPipe traceback to stderr. A device we are leaving needs no heartbeat, and over TCP
    it learns we left from the closed connection.
    """

    WRITE_GRACE = 1.0  # seconds close waits for a write in progress (one stuck on a dead peer does not hold it)

    def __init__(self, *args, **kwargs) -> None:
        self._silbato_closing = False
        self._silbato_writing = threading.Lock()  # held while a write is in progress
        super().__init__(*args, **kwargs)

    def _writeBytes(self, b: bytes) -> None:  # the library's name
        with self._silbato_writing:
            if self._silbato_closing:
                log.debug("not writing %d bytes to a radio being closed", len(b))
                return
            if self._wantExit:  # the connection dropped (see _reconnect): fail as a write on it would
                raise ConnectionError("the radio dropped the connection")
            super()._writeBytes(b)  # type: ignore[misc]

    def _reconnect(self) -> None:
        log.debug("radio connection dropped; the interface ends rather than reconnect unseen")
        self._wantExit = True  # the reader stops and reports the connection lost

    def close(self) -> None:
        self._silbato_closing = True  # no write starts after this
        if self._silbato_writing.acquire(timeout=self.WRITE_GRACE):
            self._silbato_writing.release()
        super().close()  # type: ignore[misc]


def _reporting(base: type) -> type:
    """``base`` (a meshtastic interface class) that also reports each queueStatus to the link
    and, over TCP, says when its connection drops (``_HonestTcp``).

    The library keeps queueStatus to itself; the link needs it to know the radio
    really took a frame.
    """
    if base not in _REPORTING:
        from meshtastic.tcp_interface import TCPInterface

        bases = (_HonestTcp, base) if issubclass(base, TCPInterface) else (base,)

        class Reporting(*bases):  # type: ignore[misc]
            silbato_on_queue_status = None

            def _handleQueueStatusFromRadio(self, queueStatus) -> None:  # noqa: N802, N803 (the library's names)
                super()._handleQueueStatusFromRadio(queueStatus)
                if self.silbato_on_queue_status is not None:
                    self.silbato_on_queue_status(queueStatus)

        Reporting.__name__ = f"Reporting{base.__name__}"
        _REPORTING[base] = Reporting
    return _REPORTING[base]


def open_interface(*, port: str = "", tcp: str = "", timeout: float = CONNECT_TIMEOUT):
    """A connected meshtastic interface for ``port`` (serial) or ``tcp`` (host:port); raises RadioError."""
    try:
        if port:
            if not os.path.exists(port):
                raise RadioError(f"no radio at {port}: check the USB cable")
            from meshtastic.serial_interface import SerialInterface
            return _reporting(SerialInterface)(port, noNodes=False, timeout=int(timeout))
        from meshtastic.tcp_interface import TCPInterface
        host, number = parse_host_port(tcp)
        return _reporting(TCPInterface)(host, portNumber=number, timeout=int(timeout))
    except RadioError:
        raise
    except Exception as exc:
        raise RadioError(f"radio at {port or tcp} did not answer: {exc}") from exc


def describe(iface, channel: int) -> tuple[dict[str, object], dict[str, str]]:
    """What the radio says about itself, and the start-up checks' TROUBLE sentences."""
    from meshtastic.protobuf import config_pb2

    node = iface.localNode
    firmware = getattr(iface.metadata, "firmware_version", "") if getattr(iface, "metadata", None) else ""
    channels = node.channels or []
    settings = channels[channel].settings if len(channels) > channel else None
    psk = bytes(settings.psk) if settings is not None else b""
    lora = node.localConfig.lora
    lora_enum = config_pb2.Config.LoRaConfig
    info: dict[str, object] = {
        "firmware": firmware or "unknown",
        "node": f"!{iface.myInfo.my_node_num:08x}",
        "region": lora_enum.RegionCode.Name(lora.region),
        "preset": lora_enum.ModemPreset.Name(lora.modem_preset),
        "hop_limit": lora.hop_limit,
        "channel": f"{channel} ({settings.name if settings is not None and settings.name else 'unnamed'})",
        "channel_key": "none" if not psk else "public default (AQ==)" if psk == DEFAULT_PSK else
                       f"private, {len(psk) * 8}-bit",
        "mqtt": "on" if node.moduleConfig.mqtt.enabled else "off",
    }
    return info, check_radio(firmware, psk, node.moduleConfig.mqtt.enabled, lora.region)


@contextmanager
def opened(cfg: Config) -> Iterator:
    """The radio of ``cfg`` (``radio.port`` or ``radio.tcp``), connected for the ``with`` block, then closed.

    Raises RadioError when no radio is configured or it does not answer.
    """
    if not (cfg["radio.port"] or cfg["radio.tcp"]):
        raise RadioError("no radio configured: set radio.port (or radio.tcp)")
    iface = open_interface(port=cfg["radio.port"], tcp=cfg["radio.tcp"])
    try:
        yield iface
    finally:
        close_interface(iface)


def probe(cfg: Config) -> tuple[dict[str, object], dict[str, str]]:
    """Open the radio of ``cfg``, read its settings on ``radio.channel`` and close it: ``describe``'s pair."""
    with opened(cfg) as iface:
        return describe(iface, cfg["radio.channel"])
