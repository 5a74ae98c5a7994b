"""Silbato node: the daemon that turns a held button into a signed alert on a LoRa mesh."""

__version__ = "0.1.0"
