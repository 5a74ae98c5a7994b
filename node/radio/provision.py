"""Provisioning a radio for the block: the channel key and the settings (``silbato radio configure|keygen``)."""

from __future__ import annotations

import re

from node.errors import RadioError


def load_channel_key(path: str) -> bytes:
    """The block's channel key: base64 of 16 or 32 random bytes, in a file only root can read."""
    import base64

    try:
        text = open(path, encoding="ascii").read().strip()
        key = base64.b64decode(text, validate=True)
    except OSError as exc:
        raise RadioError(f"{path}: cannot read the channel key: {exc.strerror} "
                         "(create one with 'silbato radio keygen')") from None
    except ValueError:
        raise RadioError(f"{path}: the channel key is not base64") from None
    if len(key) not in (16, 32):
        raise RadioError(f"{path}: the channel key must be 16 or 32 bytes (AES-128 or AES-256), got {len(key)}")
    return key


def configure(iface, settings: dict, *, key: bytes, channel: int, source: str = "settings") -> list[str]:
    """Apply ``settings`` (the ``meshtastic --configure`` YAML as a dict) and the channel key.

    Returns one line per step done. Unknown sections or fields raise RadioError naming them.
    """
    from google.protobuf import json_format
    from meshtastic.protobuf import channel_pb2

    node = iface.localNode
    done: list[str] = []
    unknown = set(settings) - {"config", "module_config", "channel_name", "owner", "owner_short"}
    if unknown:
        raise RadioError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}")
    plans = []
    for group, target in (("config", node.localConfig), ("module_config", node.moduleConfig)):
        for section, values in (settings.get(group) or {}).items():
            name = _snake(section)
            if name not in target.DESCRIPTOR.fields_by_name:
                raise RadioError(f"{source}: {group}.{section}: no such section")
            message = getattr(target, name)
            try:
                json_format.ParseDict(values or {}, message)
            except json_format.ParseError as exc:
                raise RadioError(f"{source}: {group}.{section}: {exc}") from None
            plans.append((group, name))
    node.beginSettingsTransaction()
    for group, name in plans:
        node.writeConfig(name)
        done.append(f"wrote {group}.{name}")
    chan = node.channels[channel]
    chan.settings.psk = key
    chan.settings.name = str(settings.get("channel_name", "silbato"))[:11]
    chan.role = channel_pb2.Channel.Role.PRIMARY if channel == 0 else channel_pb2.Channel.Role.SECONDARY
    node.writeChannel(channel)
    done.append(f"wrote channel {channel} ({chan.settings.name}) with the block's private key")
    node.commitSettingsTransaction()
    done.append("committed")
    return done


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
