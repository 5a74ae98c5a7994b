"""The node's link to the mesh. The only module that imports meshtastic or pyserial.

A ``Link`` carries opaque frames: ``send(frame)`` hands one to the radio, and
``start(on_receive)`` registers the callback that gets every frame heard. The
simulated link lives in ``node.sim_air``; the Meshtastic serial link is built on
the same interface.
"""

from __future__ import annotations

import abc
from typing import Callable

from node.errors import RadioError

Receive = Callable[[bytes], None]


class Link(abc.ABC):
    """A transport for frames. Implementations never block the daemon for long."""

    @abc.abstractmethod
    def start(self, on_receive: Receive) -> None:
        """Begin delivering received frames to ``on_receive`` (from any thread)."""

    @abc.abstractmethod
    def send(self, frame: bytes) -> None:
        """Hand ``frame`` to the radio; raise ``RadioError`` if the link is down."""

    @property
    @abc.abstractmethod
    def trouble(self) -> str:
        """A plain sentence if the link is unusable, else ``""``."""

    def stop(self) -> None:
        """Release the radio."""


class NullLink(Link):
    """No radio configured: the node still sounds and stores locally; frames wait in the outbox."""

    trouble = "no radio configured: set radio.port to the Meshtastic radio's serial device"

    def start(self, on_receive: Receive) -> None:
        pass

    def send(self, frame: bytes) -> None:
        raise RadioError(self.trouble)
