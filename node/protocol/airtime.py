"""LoRa time on air for Meshtastic's modem presets (Semtech AN1200.13). Pure.

The daemon uses it to size its heartbeat schedule to the airtime budget; the
simulated air uses it to charge each transmission.
"""

from __future__ import annotations

import math

# Meshtastic modem presets: bandwidth (Hz), spreading factor, coding rate 4/(4+cr).
PRESETS: dict[str, tuple[float, int, int]] = {
    "SHORT_TURBO": (500e3, 7, 1),
    "SHORT_FAST": (250e3, 7, 1),
    "SHORT_SLOW": (250e3, 8, 1),
    "MEDIUM_FAST": (250e3, 9, 1),
    "MEDIUM_SLOW": (250e3, 10, 1),
    "LONG_FAST": (250e3, 11, 1),
    "LONG_MODERATE": (125e3, 11, 4),
    "LONG_SLOW": (125e3, 12, 4),
}
PREAMBLE_SYMBOLS = 16     # Meshtastic's preamble length
MESH_OVERHEAD = 21        # bytes: Meshtastic's 16-byte header plus the Data protobuf around our frame


def symbol_time(preset: str) -> float:
    bw, sf, _ = PRESETS[preset]
    return (2 ** sf) / bw


def time_on_air(payload_bytes: int, preset: str) -> float:
    """Seconds on air for a LoRa packet of ``payload_bytes`` (the whole PHY payload)."""
    bw, sf, cr = PRESETS[preset]
    t_sym = (2 ** sf) / bw
    de = 1 if t_sym > 0.016 else 0   # low data rate optimisation
    header, crc = 0, 1                # explicit header, CRC on
    n = math.ceil((8 * payload_bytes - 4 * sf + 28 + 16 * crc - 20 * header) / (4 * (sf - 2 * de)))
    payload_symbols = 8 + max(n * (cr + 4), 0)
    return (PREAMBLE_SYMBOLS + 4.25) * t_sym + payload_symbols * t_sym


def slot_time(preset: str) -> float:
    """Meshtastic's contention slot: a few symbols plus radio turnaround, in seconds."""
    return 2.5 * symbol_time(preset) + 0.0002 + 0.0004 + 0.007
