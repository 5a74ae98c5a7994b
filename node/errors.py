"""The exception tree. Each subsystem raises its own error; the daemon translates at the edge."""


class SilbatoError(Exception):
    """Base of every error Silbato raises on purpose."""


class ConfigError(SilbatoError):
    """A setting is unknown, of the wrong type, or its file is missing."""


class ListenError(ConfigError):
    """The page cannot listen on its host and port (taken by another program, privileged, not this machine's)."""


class FrameError(SilbatoError, ValueError):
    """A frame from the air was refused. ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class TransitionError(SilbatoError, ValueError):
    """An alert transition that the lifecycle does not allow; it is recorded, never applied."""


class KeyFileError(SilbatoError):
    """A node or organizer key file is missing, unreadable or too open."""


class RosterError(SilbatoError):
    """A roster is malformed, badly signed, or older than the one installed."""


class StoreError(SilbatoError):
    """The SQLite store could not be opened or written (full disk, corruption)."""


class RadioError(SilbatoError):
    """The radio link is down or refused a frame."""


class HardwareError(SilbatoError):
    """A GPIO device could not be set up."""


class EvidenceError(SilbatoError):
    """A neighbor's evidence could not be sealed or kept (too large, storage full, no recipients), or a
    bundle does not verify."""
