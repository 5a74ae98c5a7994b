"""What the siren and the speaker share: a sound played on a thread of its own, that can be waited for and stopped."""

from __future__ import annotations

import threading


class Player:
    """A sound on its own thread. Subclasses set ``_thread`` and ``_lock`` and stop the sound in ``_halt``."""

    _thread: threading.Thread | None
    _lock: threading.Lock

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the sound playing now has ended (``timeout`` seconds at most). Returns False on timeout."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def silence(self) -> None:
        """Stop the sound playing now, if any. Never changes an alert."""
        with self._lock:
            self._halt()

    def _halt(self) -> None:
        raise NotImplementedError
